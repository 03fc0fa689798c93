// Starts a Run on Latchkey and prints its output as JSON.
//   node dist/examples/start-run.js http://127.0.0.1:7400 "$LATCHKEY_API_KEY" SESSION list-invoices
import { createLatchkeyClient, RunState } from "../src/index.js";

const [baseUrl, apiKey, session, api] = process.argv.slice(2);
if (!baseUrl || !apiKey || !api) {
  console.error("usage: start-run BASE_URL API_KEY SESSION API");
  process.exit(2);
}
const client = createLatchkeyClient({ baseUrl, apiKey });
const run = await client.startRunAndWait({ api, authSessionId: session });
if (run.state !== RunState.SUCCEEDED) {
  console.error(`run ${run.id} ended ${RunState[run.state]}: ${run.failureMessage}`);
  process.exit(1);
}
console.log(JSON.stringify(run.output));

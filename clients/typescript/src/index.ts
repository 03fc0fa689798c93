// @latchkey/client: Latchkey's public gRPC API from TypeScript, over Connect-ES's gRPC
// transport (HTTP/2, plain gRPC: what Latchkey's listener serves). The message and
// service types are generated from proto/latchkey/v1 (src/gen, `make ts-client`).
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RunService, type Run, type StartRunRequest } from "./gen/latchkey/v1/run_pb.js";
import { RunState } from "./gen/latchkey/v1/common_pb.js";
import { AuthSessionService } from "./gen/latchkey/v1/auth_session_pb.js";
import { JobService } from "./gen/latchkey/v1/job_pb.js";
import { AutomationService } from "./gen/latchkey/v1/automation_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { StartRunRequestSchema } from "./gen/latchkey/v1/run_pb.js";

export * from "./gen/latchkey/v1/run_pb.js";
export * from "./gen/latchkey/v1/common_pb.js";
export * from "./gen/latchkey/v1/auth_session_pb.js";
export * from "./gen/latchkey/v1/job_pb.js";
export * from "./gen/latchkey/v1/automation_pb.js";

export interface Options {
  /** Latchkey's gRPC address as a URL: "http://127.0.0.1:7400" (https:// with TLS). */
  baseUrl: string;
  /** A project's API key ("lk_..."). */
  apiKey: string;
}

export interface LatchkeyClient {
  runs: Client<typeof RunService>;
  sessions: Client<typeof AuthSessionService>;
  jobs: Client<typeof JobService>;
  automations: Client<typeof AutomationService>;
  /** Starts a Run and resolves with it once it ended (SUCCEEDED, FAILED or CANCELED). */
  startRunAndWait(req: MessageInitShape<typeof StartRunRequestSchema>, signal?: AbortSignal): Promise<Run>;
}

const ended = new Set([RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELED]);

/** createLatchkeyClient dials Latchkey with an API key. */
export function createLatchkeyClient(o: Options): LatchkeyClient {
  const auth: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${o.apiKey}`);
    return next(req);
  };
  const transport = createGrpcTransport({ baseUrl: o.baseUrl, interceptors: [auth] });
  const runs = createClient(RunService, transport);
  return {
    runs,
    sessions: createClient(AuthSessionService, transport),
    jobs: createClient(JobService, transport),
    automations: createClient(AutomationService, transport),
    async startRunAndWait(req, signal) {
      const started = await runs.startRun(req, { signal });
      const id = started.run?.id;
      if (!id) throw new Error("StartRun returned no Run");
      let last: Run | undefined = started.run;
      // WatchRun streams the Run each time it changes and ends with it.
      for await (const m of runs.watchRun({ runId: id }, { signal })) {
        last = m.run;
        if (last && ended.has(last.state)) return last;
      }
      if (!last || !ended.has(last.state)) throw new Error(`run ${id}: the watch ended before the Run did`);
      return last;
    },
  };
}

export type { StartRunRequest };

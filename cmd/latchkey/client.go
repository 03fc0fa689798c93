package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/latchkey/latchkey/libs/client"
	"github.com/latchkey/latchkey/libs/config"
	"github.com/latchkey/latchkey/libs/server"
)

// DevAPIKeyFile is where `latchkey dev` leaves the default project's API key, so the
// CLI works on a laptop with no set-up.
const DevAPIKeyFile = "dev-api-key"

// clientCommand runs one client subcommand (`latchkey sessions ...`) with its args.
type clientCommand func(ctx context.Context, c *cli, args []string) error

// clientCommands lists the client subcommands by name. Each lives in its own file.
func clientCommands() map[string]clientCommand {
	return map[string]clientCommand{
		"vault":       vaultCommand,
		"projects":    projectsCommand,
		"sessions":    sessionsCommand,
		"automations": automationsCommand,
		"audit":       auditCommand,
		"runs":        runsCommand,
		"jobs":        jobsCommand,
	}
}

// cli is what every client subcommand shares: where to connect, with which key, and
// how to print.
type cli struct {
	env    config.Env
	stdout io.Writer
	stderr io.Writer
	// Addr, APIKey and Output are set from the global flags.
	addr   string
	apiKey string
	output string
	// caFile, certFile and keyFile turn TLS on (-ca, -cert, -key).
	caFile, certFile, keyFile string
	conn                      *grpc.ClientConn
}

// globalFlags are the client flags accepted anywhere on the line, as in the nats,
// temporal and kubectl CLIs: `latchkey projects create x -o json` works as well as
// `latchkey projects -o json create x`.
var globalFlags = map[string]bool{"addr": true, "api-key": true, "o": true, "ca": true, "cert": true, "key": true}

// splitGlobal takes the global flags (-name value, -name=value, with one or two
// dashes) out of args, wherever they are, and returns them apart from the rest. It
// stops at "--".
func splitGlobal(args []string) (global, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return global, append(rest, args[i:]...)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || !globalFlags[name] {
			rest = append(rest, a)
			continue
		}
		global = append(global, a)
		if !hasValue && i+1 < len(args) {
			global = append(global, args[i+1])
			i++
		}
	}
	return global, rest
}

// newCLI reads the global client flags (-addr, -api-key, -o) from anywhere in args and
// returns the rest.
func newCLI(env config.Env, stdout, stderr io.Writer, args []string) (*cli, []string, error) {
	c := &cli{env: env, stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("latchkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", envOr(env, "LATCHKEY_ADDR", "127.0.0.1:7400"), "Latchkey gRPC address ($LATCHKEY_ADDR)")
	fs.StringVar(&c.apiKey, "api-key", envOr(env, "LATCHKEY_API_KEY", ""), "project API key ($LATCHKEY_API_KEY; default: the dev key in the data dir)")
	fs.StringVar(&c.output, "o", "table", "output: table or json")
	fs.StringVar(&c.caFile, "ca", envOr(env, "LATCHKEY_CA_FILE", ""), "PEM file of the CA that signs the server's certificate: dial with TLS ($LATCHKEY_CA_FILE)")
	fs.StringVar(&c.certFile, "cert", envOr(env, "LATCHKEY_CERT_FILE", ""), "client certificate (PEM) for servers that verify clients ($LATCHKEY_CERT_FILE)")
	fs.StringVar(&c.keyFile, "key", envOr(env, "LATCHKEY_KEY_FILE", ""), "key (PEM) of -cert ($LATCHKEY_KEY_FILE)")
	global, rest := splitGlobal(args)
	if err := fs.Parse(global); err != nil {
		return nil, nil, usageError{err}
	}
	if c.output != "table" && c.output != "json" {
		return nil, nil, usageError{fmt.Errorf("-o must be table or json, got %q", c.output)}
	}
	return c, rest, nil
}

func envOr(env config.Env, key, def string) string {
	if v, ok := env(key); ok && v != "" {
		return v
	}
	return def
}

// key returns the API key to send: -api-key, $LATCHKEY_API_KEY, or the dev key that
// `latchkey dev` left in the data directory.
func (c *cli) key() (string, error) {
	if c.apiKey != "" {
		return c.apiKey, nil
	}
	dir := envOr(c.env, "LATCHKEY_DATA_DIR", "")
	if dir == "" {
		home := envOr(c.env, "HOME", ".")
		dir = filepath.Join(home, ".latchkey")
	}
	b, err := os.ReadFile(filepath.Join(dir, DevAPIKeyFile))
	if err != nil {
		return "", errors.New("no API key: set LATCHKEY_API_KEY (or -api-key), or run `latchkey dev`, which leaves one in its data directory")
	}
	return strings.TrimSpace(string(b)), nil
}

// dial connects to the API with the CLI's key; the connection is reused and closed by close.
func (c *cli) dial() (*grpc.ClientConn, error) {
	if c.conn != nil {
		return c.conn, nil
	}
	key, err := c.key()
	if err != nil {
		return nil, err
	}
	return c.connect(key, "")
}

// connect dials the API through libs/client with token (an API key, the admin key or
// the internal token) and the name the CLI calls internal services by; the connection
// is reused and closed by close.
func (c *cli) connect(token, service string) (*grpc.ClientConn, error) {
	if c.conn != nil {
		return c.conn, nil
	}
	var header map[string]string
	if service != "" {
		header = map[string]string{server.ServiceHeader: service}
	}
	var tlsCfg *tls.Config
	if c.caFile != "" || c.certFile != "" {
		var err error
		if tlsCfg, err = server.ClientTLSConfig(c.caFile, c.certFile, c.keyFile); err != nil {
			return nil, err
		}
	}
	cl, err := client.Dial(c.addr, client.Options{APIKey: token, Header: header, TLS: tlsCfg})
	if err != nil {
		return nil, err
	}
	c.conn = cl.Conn()
	return c.conn, nil
}

func (c *cli) close() {
	if c.conn != nil {
		c.conn.Close()
	}
}

// printJSON writes a message as indented protojson (for -o json).
func (c *cli) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	_, err = fmt.Fprintln(c.stdout, string(out))
	return err
}

// table returns a tab writer for aligned columns; flush it when done.
func (c *cli) table() *tabwriter.Writer {
	return tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
}

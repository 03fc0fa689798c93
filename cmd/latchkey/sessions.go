package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

const sessionsUsage = `usage: latchkey sessions COMMAND

  create -type credentials|runtime|recorder [-site S] [flags]
                                                       create an AuthSession on a site (default:
                                                       default) whose bundle logs it in
  get ID                                               show one session
  list [-state S]... [-label K=V]...                   list sessions
  update ID [flags]                                    change name, labels, vars, proxy, refresh,
                                                       -user-agent, -locale
  update-credentials ID -credentials-file FILE|-       log in with new credentials; they
                                                       replace the old ones only if it works
  delete ID                                            delete a session, its states and secrets
  import ID FILE|-                                     store a Playwright storageState JSON
  export ID [-revision N] [-out FILE]                  write the state as Playwright JSON (audited)
  record ID [-wait]                                    print a one-time recorder URL through which a
                                                       person logs in (RECORDER sessions)

Credentials never come from a flag value (it would land in shell history): pass a
JSON object of named fields, e.g. {"username": "alice", "password": "..."}, in a file
with -credentials-file FILE, or on standard input with -credentials-file -.
A proxy password comes the same way, from -proxy-password-file.
`

// sessionsCommand runs `latchkey sessions ...`.
func sessionsCommand(ctx context.Context, c *cli, args []string) error {
	type s = sub[latchkeyv1.AuthSessionServiceClient]
	return dispatch(ctx, c, args, "sessions", sessionsUsage, latchkeyv1.NewAuthSessionServiceClient,
		s{"create", sessionsCreate}, s{"get", sessionsGet}, s{"list", sessionsList}, s{"update", sessionsUpdate},
		s{"update-credentials", sessionsUpdateCredentials}, s{"delete", sessionsDelete},
		s{"import", sessionsImport}, s{"export", sessionsExport}, s{"record", sessionsRecord})
}

// sessionFlags are the settings create and update share.
type sessionFlags struct {
	name, proxy, proxyUser, proxyPasswordFile, startURL, finishPrefix string
	userAgent, locale                                                 string
	keepAlive                                                         time.Duration
	noRefresh                                                         bool
	labels, vars                                                      pairs
}

func (f *sessionFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.name, "name", "", "display name")
	fs.Var(&f.labels, "label", "a label KEY=VALUE (repeatable)")
	fs.Var(&f.vars, "var", "a recipe var KEY=VALUE, seen as .Vars.KEY (repeatable)")
	fs.StringVar(&f.proxy, "proxy", "", "proxy server, e.g. http://127.0.0.1:3128")
	fs.StringVar(&f.proxyUser, "proxy-user", "", "proxy user name")
	fs.StringVar(&f.proxyPasswordFile, "proxy-password-file", "", "file holding the proxy password (- for stdin)")
	fs.DurationVar(&f.keepAlive, "keep-alive", 0, "validate at least this often (0: off)")
	fs.BoolVar(&f.noRefresh, "no-refresh", false, "turn proactive refresh off")
	fs.StringVar(&f.startURL, "start-url", "", "recorder: the page the person logs in on")
	fs.StringVar(&f.finishPrefix, "finish-url-prefix", "", "recorder: the URL prefix that ends the recording")
	fs.StringVar(&f.userAgent, "user-agent", "", "the User-Agent the browser shows the site (default: the runner's Chromium, without Headless)")
	fs.StringVar(&f.locale, "locale", "", "the browser's language, e.g. de-DE (default en-US)")
}

// browser is the identity the flags give, nil for none.
func (f *sessionFlags) browser() *latchkeyv1.BrowserIdentity {
	if f.userAgent == "" && f.locale == "" {
		return nil
	}
	return &latchkeyv1.BrowserIdentity{UserAgent: f.userAgent, Locale: f.locale}
}

func (f *sessionFlags) proxyValue() (*latchkeyv1.Proxy, error) {
	if f.proxy == "" {
		return nil, nil
	}
	p := &latchkeyv1.Proxy{Server: f.proxy, Username: f.proxyUser}
	if f.proxyPasswordFile != "" {
		b, err := readInput(f.proxyPasswordFile)
		if err != nil {
			return nil, fmt.Errorf("reading the proxy password: %w", err)
		}
		p.Password = strings.TrimRight(string(b), "\r\n")
	}
	return p, nil
}

func (f *sessionFlags) refresh() *latchkeyv1.RefreshSettings {
	return &latchkeyv1.RefreshSettings{KeepAliveInterval: durationpb.New(f.keepAlive), Disabled: f.noRefresh}
}

func (f *sessionFlags) recorder() *latchkeyv1.RecorderSettings {
	if f.startURL == "" && f.finishPrefix == "" {
		return nil
	}
	return &latchkeyv1.RecorderSettings{StartUrl: f.startURL, FinishUrlPrefix: f.finishPrefix}
}

var sessionTypes = map[string]latchkeyv1.SessionType{
	"credentials": latchkeyv1.SessionType_SESSION_TYPE_CREDENTIALS,
	"runtime":     latchkeyv1.SessionType_SESSION_TYPE_RUNTIME,
	"recorder":    latchkeyv1.SessionType_SESSION_TYPE_RECORDER,
}

func sessionsCreate(ctx context.Context, c *cli, sc latchkeyv1.AuthSessionServiceClient, args []string) error {
	fs := c.flags("sessions create")
	var f sessionFlags
	f.register(fs)
	typ := fs.String("type", "", "credentials, runtime or recorder")
	id := fs.String("id", "", "the session id (default: generated)")
	credFile := fs.String("credentials-file", "", "JSON object of credential fields, from a file or - for stdin")
	site := fs.String("site", "", "the site whose bundle logs the session in and checks it (default: default); fixed once created")
	if err := fs.Parse(args); err != nil {
		return err
	}
	t, ok := sessionTypes[*typ]
	if !ok {
		return fmt.Errorf("-type must be credentials, runtime or recorder, got %q", *typ)
	}
	req := &latchkeyv1.CreateAuthSessionRequest{
		AuthSessionId: *id, DisplayName: f.name, Type: t, Labels: f.labels.m, Vars: f.vars.m,
		Refresh: f.refresh(), Recorder: f.recorder(), Browser: f.browser(), Site: *site,
	}
	var err error
	if req.Proxy, err = f.proxyValue(); err != nil {
		return err
	}
	if *credFile != "" {
		if req.Credentials, err = readCredentials(*credFile); err != nil {
			return err
		}
	}
	r, err := sc.CreateAuthSession(ctx, req)
	if err != nil {
		return fmt.Errorf("creating the session: %w", err)
	}
	return c.emit(r, func(w *tabwriter.Writer) {
		sessionTable(w, r.GetAuthSession())
		if r.GetCreateRunId() != "" {
			fmt.Fprintf(w, "create run\t%s\n", r.GetCreateRunId())
		}
	})
}

func sessionsGet(ctx context.Context, c *cli, sc latchkeyv1.AuthSessionServiceClient, args []string) error {
	id, err := oneArgThenFlags(c.flags("sessions get ID"), args, "a session id")
	if err != nil {
		return err
	}
	r, err := sc.GetAuthSession(ctx, &latchkeyv1.GetAuthSessionRequest{AuthSessionId: id})
	if err != nil {
		return fmt.Errorf("getting session %s: %w", id, err)
	}
	return c.emit(r, func(w *tabwriter.Writer) { sessionTable(w, r.GetAuthSession()) })
}

func sessionsList(ctx context.Context, c *cli, sc latchkeyv1.AuthSessionServiceClient, args []string) error {
	fs := c.flags("sessions list")
	var states stateList
	var labels pairs
	fs.Var(&states, "state", "only sessions in this state: pending, ready, recreating, expired (repeatable)")
	fs.Var(&labels, "label", "only sessions with this label KEY=VALUE (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	all := &latchkeyv1.ListAuthSessionsResponse{}
	for token := ""; ; {
		r, err := sc.ListAuthSessions(ctx, &latchkeyv1.ListAuthSessionsRequest{
			States: states, LabelSelector: &latchkeyv1.LabelSelector{MatchLabels: labels.m}, PageSize: 500, PageToken: token,
		})
		if err != nil {
			return fmt.Errorf("listing sessions: %w", err)
		}
		all.AuthSessions = append(all.AuthSessions, r.GetAuthSessions()...)
		if token = r.GetPageInfo().GetNextPageToken(); token == "" {
			break
		}
	}
	return c.emit(all, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tSITE\tTYPE\tSTATE\tREVISION\tUNATTENDED\tNAME\tUPDATED")
		for _, s := range all.GetAuthSessions() {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.GetId(), s.GetSite(), enumName(s.GetType().String()), enumName(s.GetState().String()),
				s.GetStateRevision(), yesNo(s.GetCanLoginUnattended()), s.GetDisplayName(), when(s.GetUpdateTime()))
		}
	})
}

func sessionsUpdate(ctx context.Context, c *cli, sc latchkeyv1.AuthSessionServiceClient, args []string) error {
	fs := c.flags("sessions update ID")
	var f sessionFlags
	f.register(fs)
	id, err := oneArgThenFlags(fs, args, "a session id")
	if err != nil {
		return err
	}
	in := &latchkeyv1.AuthSession{Id: id, DisplayName: f.name, Labels: f.labels.m, Vars: f.vars.m, Refresh: f.refresh(), Recorder: f.recorder(), Browser: f.browser()}
	if in.Proxy, err = f.proxyValue(); err != nil {
		return err
	}
	paths := map[string]string{
		"name": "display_name", "label": "labels", "var": "vars", "proxy": "proxy", "proxy-user": "proxy",
		"proxy-password-file": "proxy", "keep-alive": "refresh", "no-refresh": "refresh", "start-url": "recorder", "finish-url-prefix": "recorder",
		"user-agent": "browser", "locale": "browser",
	}
	set := map[string]bool{}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[paths[fl.Name]], given[fl.Name] = true, true })
	if set["browser"] && (!given["user-agent"] || !given["locale"]) {
		// The identity is one field: keep the part not given as it is.
		cur, err := sc.GetAuthSession(ctx, &latchkeyv1.GetAuthSessionRequest{AuthSessionId: id})
		if err != nil {
			return fmt.Errorf("reading session %s: %w", id, err)
		}
		b := &latchkeyv1.BrowserIdentity{UserAgent: cur.GetAuthSession().GetBrowser().GetUserAgent(), Locale: cur.GetAuthSession().GetBrowser().GetLocale()}
		if given["user-agent"] {
			b.UserAgent = f.userAgent
		}
		if given["locale"] {
			b.Locale = f.locale
		}
		in.Browser = b
	}
	if len(set) == 0 {
		return errors.New("sessions update needs at least one setting to change, e.g. -name or -label")
	}
	mask := &fieldmaskpb.FieldMask{}
	for p := range set {
		mask.Paths = append(mask.Paths, p)
	}
	sort.Strings(mask.Paths)
	r, err := sc.UpdateAuthSession(ctx, &latchkeyv1.UpdateAuthSessionRequest{AuthSession: in, UpdateMask: mask})
	if err != nil {
		return fmt.Errorf("updating session %s: %w", id, err)
	}
	return c.emit(r, func(w *tabwriter.Writer) { sessionTable(w, r.GetAuthSession()) })
}

func sessionsUpdateCredentials(ctx context.Context, c *cli, sc latchkeyv1.AuthSessionServiceClient, args []string) error {
	fs := c.flags("sessions update-credentials ID")
	credFile := fs.String("credentials-file", "", "JSON object of credential fields, from a file or - for stdin")
	id, err := oneArgThenFlags(fs, args, "a session id")
	if err != nil {
		return err
	}
	if *credFile == "" {
		return errors.New("sessions update-credentials needs -credentials-file FILE (or - for stdin)")
	}
	creds, err := readCredentials(*credFile)
	if err != nil {
		return err
	}
	r, err := sc.UpdateAuthSessionCredentials(ctx, &latchkeyv1.UpdateAuthSessionCredentialsRequest{AuthSessionId: id, Credentials: creds})
	if err != nil {
		return fmt.Errorf("updating the credentials of session %s: %w", id, err)
	}
	return c.emitLine(r, fmt.Sprintf("update run %s started: the new credentials replace the old ones only if it succeeds", r.GetUpdateRunId()))
}

func sessionsDelete(ctx context.Context, c *cli, sc latchkeyv1.AuthSessionServiceClient, args []string) error {
	id, err := oneArgThenFlags(c.flags("sessions delete ID"), args, "a session id")
	if err != nil {
		return err
	}
	r, err := sc.DeleteAuthSession(ctx, &latchkeyv1.DeleteAuthSessionRequest{AuthSessionId: id})
	if err != nil {
		return fmt.Errorf("deleting session %s: %w", id, err)
	}
	return c.emitLine(r, "deleted session "+id)
}

func sessionsImport(ctx context.Context, c *cli, sc latchkeyv1.AuthSessionServiceClient, args []string) error {
	fs := c.flags("sessions import ID FILE")
	rest, err := argsThenFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 2 {
		return errors.New("sessions import needs a session id and a Playwright storageState file (or - for stdin)")
	}
	b, err := readInput(rest[1])
	if err != nil {
		return fmt.Errorf("reading the storage state: %w", err)
	}
	r, err := sc.ImportStorageState(ctx, &latchkeyv1.ImportStorageStateRequest{AuthSessionId: rest[0], StorageStateJson: b})
	clear(b)
	if err != nil {
		return fmt.Errorf("importing into session %s: %w", rest[0], err)
	}
	return c.emitLine(r, fmt.Sprintf("imported as revision %d of session %s (%s)", r.GetAuthSession().GetStateRevision(), rest[0], enumName(r.GetAuthSession().GetState().String())))
}

func sessionsExport(ctx context.Context, c *cli, sc latchkeyv1.AuthSessionServiceClient, args []string) error {
	fs := c.flags("sessions export ID")
	rev := fs.Int64("revision", 0, "the revision (default: the newest)")
	out := fs.String("out", "", "write to this file (mode 0600) instead of standard output")
	id, err := oneArgThenFlags(fs, args, "a session id")
	if err != nil {
		return err
	}
	r, err := sc.ExportStorageState(ctx, &latchkeyv1.ExportStorageStateRequest{AuthSessionId: id, Revision: *rev})
	if err != nil {
		return fmt.Errorf("exporting session %s: %w", id, err)
	}
	if *out == "" {
		_, err = fmt.Fprintln(c.stdout, string(r.GetStorageStateJson()))
		return err
	}
	if err := os.WriteFile(*out, r.GetStorageStateJson(), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	fmt.Fprintf(c.stderr, "wrote revision %d to %s\n", r.GetRevision(), *out)
	return nil
}

func sessionTable(w *tabwriter.Writer, s *latchkeyv1.AuthSession) {
	fmt.Fprintf(w, "id\t%s\n", s.GetId())
	fmt.Fprintf(w, "site\t%s\n", s.GetSite())
	fmt.Fprintf(w, "type\t%s\n", enumName(s.GetType().String()))
	fmt.Fprintf(w, "state\t%s\n", enumName(s.GetState().String()))
	if s.GetStateReason() != latchkeyv1.FailureReason_FAILURE_REASON_UNSPECIFIED {
		fmt.Fprintf(w, "reason\t%s %s\n", enumName(s.GetStateReason().String()), s.GetStateMessage())
	}
	fmt.Fprintf(w, "state revision\t%d\n", s.GetStateRevision())
	fmt.Fprintf(w, "logs in unattended\t%s\n", unattended(s))
	if s.GetDisplayName() != "" {
		fmt.Fprintf(w, "name\t%s\n", s.GetDisplayName())
	}
	for _, k := range sortedKeys(s.GetLabels()) {
		fmt.Fprintf(w, "label\t%s=%s\n", k, s.GetLabels()[k])
	}
	if p := s.GetProxy(); p != nil {
		fmt.Fprintf(w, "proxy\t%s\n", p.GetServer())
	}
	if b := s.GetBrowser(); b.GetUserAgent() != "" {
		fmt.Fprintf(w, "user agent\t%s\n", b.GetUserAgent())
	}
	if b := s.GetBrowser(); b.GetLocale() != "" {
		fmt.Fprintf(w, "locale\t%s\n", b.GetLocale())
	}
	fmt.Fprintf(w, "created\t%s\n", when(s.GetCreateTime()))
	fmt.Fprintf(w, "last validated\t%s\n", when(s.GetLastValidateTime()))
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// readCredentials reads a JSON object of string fields. Its errors never quote the
// input.
func readCredentials(path string) (map[string]string, error) {
	b, err := readInput(path)
	if err != nil {
		return nil, fmt.Errorf("reading credentials: %w", err)
	}
	defer clear(b)
	var creds map[string]string
	if err := json.Unmarshal(b, &creds); err != nil || len(creds) == 0 {
		return nil, errors.New(`credentials must be a JSON object of string fields, e.g. {"username": "alice", "password": "..."}`)
	}
	return creds, nil
}

// pairs is a repeatable KEY=VALUE flag.
type pairs struct{ m map[string]string }

func (p *pairs) String() string { return fmt.Sprint(p.m) }

func (p *pairs) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", v)
	}
	if p.m == nil {
		p.m = map[string]string{}
	}
	p.m[k] = val
	return nil
}

// stateList is a repeatable -state flag.
type stateList []latchkeyv1.SessionState

func (s *stateList) String() string { return fmt.Sprint([]latchkeyv1.SessionState(*s)) }

func (s *stateList) Set(v string) error {
	st, ok := latchkeyv1.SessionState_value["SESSION_STATE_"+strings.ToUpper(v)]
	if !ok || st == 0 {
		return fmt.Errorf("unknown state %q: pending, ready, recreating or expired", v)
	}
	*s = append(*s, latchkeyv1.SessionState(st))
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// unattended says whether the session logs in again by itself, and why not.
func unattended(s *latchkeyv1.AuthSession) string {
	switch {
	case s.GetCanLoginUnattended():
		return "yes"
	case s.GetType() == latchkeyv1.SessionType_SESSION_TYPE_RECORDER:
		return "no: a person logs a RECORDER session in through the recorder"
	}
	return "no: the create recipe asks the caller at every login"
}

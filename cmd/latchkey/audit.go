package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// auditCommand runs `latchkey audit [RESOURCE_ID] [-limit N]`: the decrypts and
// credential accesses of the project, oldest first, optionally only those of one
// session or secret id.
func auditCommand(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("audit [RESOURCE_ID]")
	limit := fs.Int("limit", 1000, "at most this many entries")
	rest, err := argsThenFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 1 {
		return errors.New("audit takes at most one session or secret id")
	}
	resource := new(string)
	if len(rest) == 1 {
		*resource = rest[0]
	}
	cc, err := c.dial()
	if err != nil {
		return err
	}
	pc := latchkeyv1.NewProjectServiceClient(cc)
	all := &latchkeyv1.ListAuditEntriesResponse{}
	for token := ""; len(all.Entries) < *limit; {
		r, err := pc.ListAuditEntries(ctx, &latchkeyv1.ListAuditEntriesRequest{ResourceId: *resource, PageToken: token, PageSize: int32(min(*limit-len(all.Entries), 500))})
		if err != nil {
			return fmt.Errorf("listing audit entries: %w", err)
		}
		all.Entries = append(all.Entries, r.GetEntries()...)
		if token = r.GetPageInfo().GetNextPageToken(); token == "" {
			break
		}
	}
	return c.emit(all, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "TIME\tKIND\tRESOURCE\tCALLER\tPURPOSE")
		for _, e := range all.GetEntries() {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", when(e.GetTime()), e.GetKind(), e.GetResourceId(), e.GetCaller(), e.GetPurpose())
		}
	})
}

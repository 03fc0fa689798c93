package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

const projectsUsage = `usage: latchkey projects COMMAND

  create ID [-display-name NAME]   create a project and its first API key (admin key)
  list                             list every project (admin key)
  delete ID -yes                   delete a project and crypto-shred its secrets and
                                   states; this cannot be undone (admin key)
  keys create [-name NAME] [-project ID]
  keys list [-project ID]
  keys revoke KEY_ID [-project ID]

Project commands use the admin key: -api-key, $LATCHKEY_ADMIN_KEY, or the admin-key
file ` + "`latchkey dev`" + ` leaves in its data directory. Key commands use the project's API
key, or the admin key when -project names a project.
`

// projectsCommand runs `latchkey projects ...`.
func projectsCommand(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 || isHelp(args[0]) {
		return usageOr(c, projectsUsage, args, "projects needs a command: create, list, delete or keys")
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "create":
		return projectsCreate(ctx, c, rest)
	case "list":
		return projectsList(ctx, c, rest)
	case "delete":
		return projectsDelete(ctx, c, rest)
	case "keys":
		return keysCommand(ctx, c, rest)
	default:
		fmt.Fprint(c.stderr, projectsUsage)
		return fmt.Errorf("unknown projects command %q", cmd)
	}
}

func projectsCreate(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("projects create ID")
	name := fs.String("display-name", "", "a human-readable name")
	id, err := oneArgThenFlags(fs, args, "a project id")
	if err != nil {
		return err
	}
	pc, err := c.projectsAsAdmin()
	if err != nil {
		return err
	}
	r, err := pc.CreateProject(ctx, &latchkeyv1.CreateProjectRequest{ProjectId: id, DisplayName: *name})
	if err != nil {
		return fmt.Errorf("creating project %s: %w", id, err)
	}
	return c.emit(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "project\t%s\n", r.GetProject().GetId())
		fmt.Fprintf(w, "api key id\t%s\n", r.GetApiKey().GetId())
		fmt.Fprintf(w, "api key\t%s\t(shown only now: keep it, e.g. export LATCHKEY_API_KEY=...)\n", r.GetApiKeySecret())
	})
}

func projectsList(ctx context.Context, c *cli, args []string) error {
	if err := c.flags("projects list").Parse(args); err != nil {
		return err
	}
	pc, err := c.projectsAsAdmin()
	if err != nil {
		return err
	}
	all := &latchkeyv1.ListProjectsResponse{}
	for token := ""; ; {
		r, err := pc.ListProjects(ctx, &latchkeyv1.ListProjectsRequest{PageToken: token})
		if err != nil {
			return fmt.Errorf("listing projects: %w", err)
		}
		all.Projects = append(all.Projects, r.GetProjects()...)
		if token = r.GetPageInfo().GetNextPageToken(); token == "" {
			break
		}
	}
	return c.emit(all, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME\tCREATED")
		for _, p := range all.GetProjects() {
			fmt.Fprintf(w, "%s\t%s\t%s\n", p.GetId(), p.GetDisplayName(), when(p.GetCreateTime()))
		}
	})
}

func projectsDelete(ctx context.Context, c *cli, args []string) error {
	fs := c.flags("projects delete ID -yes")
	yes := fs.Bool("yes", false, "confirm: the project, its sessions and secrets are destroyed")
	id, err := oneArgThenFlags(fs, args, "a project id")
	if err != nil {
		return err
	}
	if !*yes {
		return fmt.Errorf("deleting project %s destroys its sessions, states and secrets for good: add -yes to confirm", id)
	}
	pc, err := c.projectsAsAdmin()
	if err != nil {
		return err
	}
	r, err := pc.DeleteProject(ctx, &latchkeyv1.DeleteProjectRequest{ProjectId: id})
	if err != nil {
		return fmt.Errorf("deleting project %s: %w", id, err)
	}
	return c.emitLine(r, "deleted project "+id)
}

func keysCommand(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 || isHelp(args[0]) {
		return usageOr(c, projectsUsage, args, "keys needs a command: create, list or revoke")
	}
	fs := c.flags("projects keys " + args[0])
	project := fs.String("project", "", "the project (needs the admin key); default: the API key's own")
	name := fs.String("name", "", "a name for the new key")
	var keyID string
	var err error
	if args[0] == "revoke" {
		keyID, err = oneArgThenFlags(fs, args[1:], "a key id")
	} else {
		err = fs.Parse(args[1:])
	}
	if err != nil {
		return err
	}
	pc, err := c.projectsFor(*project)
	if err != nil {
		return err
	}
	switch args[0] {
	case "create":
		r, err := pc.CreateApiKey(ctx, &latchkeyv1.CreateApiKeyRequest{ProjectId: *project, Name: *name})
		if err != nil {
			return fmt.Errorf("creating an API key: %w", err)
		}
		return c.emit(r, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "api key id\t%s\n", r.GetApiKey().GetId())
			fmt.Fprintf(w, "api key\t%s\t(shown only now)\n", r.GetApiKeySecret())
		})
	case "list":
		r, err := pc.ListApiKeys(ctx, &latchkeyv1.ListApiKeysRequest{ProjectId: *project})
		if err != nil {
			return fmt.Errorf("listing API keys: %w", err)
		}
		return c.emit(r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "ID\tNAME\tPREFIX\tCREATED\tREVOKED")
			for _, k := range r.GetApiKeys() {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.GetId(), k.GetName(), k.GetPrefix(), when(k.GetCreateTime()), when(k.GetRevokeTime()))
			}
		})
	case "revoke":
		r, err := pc.RevokeApiKey(ctx, &latchkeyv1.RevokeApiKeyRequest{ProjectId: *project, ApiKeyId: keyID})
		if err != nil {
			return fmt.Errorf("revoking API key %s: %w", keyID, err)
		}
		return c.emitLine(r, "revoked API key "+keyID)
	}
	fmt.Fprint(c.stderr, projectsUsage)
	return fmt.Errorf("unknown keys command %q", args[0])
}

// projectsFor returns a ProjectService client: with the admin key when project is
// named, else with the project's API key.
func (c *cli) projectsFor(project string) (latchkeyv1.ProjectServiceClient, error) {
	if project != "" {
		return c.projectsAsAdmin()
	}
	cc, err := c.dial()
	if err != nil {
		return nil, err
	}
	return latchkeyv1.NewProjectServiceClient(cc), nil
}

// projectsAsAdmin dials with the admin key: -api-key, $LATCHKEY_ADMIN_KEY, or the
// admin-key file of the data directory.
func (c *cli) projectsAsAdmin() (latchkeyv1.ProjectServiceClient, error) {
	key := c.apiKey
	if key == "" {
		key = envOr(c.env, "LATCHKEY_ADMIN_KEY", "")
	}
	if key == "" {
		b, err := os.ReadFile(filepath.Join(c.dataDir(), adminKeyFile))
		if err != nil {
			return nil, errors.New("no admin key: set LATCHKEY_ADMIN_KEY (or -api-key), or run `latchkey dev`, which leaves one in its data directory")
		}
		key = strings.TrimSpace(string(b))
	}
	cc, err := c.connect(key, "latchkey-cli")
	if err != nil {
		return nil, err
	}
	return latchkeyv1.NewProjectServiceClient(cc), nil
}

// dataDir is $LATCHKEY_DATA_DIR, or ~/.latchkey.
func (c *cli) dataDir() string {
	if dir := envOr(c.env, "LATCHKEY_DATA_DIR", ""); dir != "" {
		return dir
	}
	return filepath.Join(envOr(c.env, "HOME", "."), ".latchkey")
}

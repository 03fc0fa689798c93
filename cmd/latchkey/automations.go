package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

const automationsUsage = `usage: latchkey automations COMMAND

  deploy DIR [-site S]   validate the recipe bundle in DIR (its .yaml and .yml files)
                         and deploy it as the site's newest version; other sites'
                         bundles are not touched
  list [-site S]         the APIs of the site's newest bundle
  bundles [-site S]      the site's deployed versions, newest first
  sites                  the project's sites and their newest versions

A project holds one bundle per site (one web app: its login, its check, its APIs);
a session belongs to one site (sessions create -site S). Without -site: the site
named "default", where a project's bundle lived before sites existed.
`

// automationsCommand runs `latchkey automations ...`.
func automationsCommand(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 || isHelp(args[0]) {
		return usageOr(c, automationsUsage, args, "automations needs a command: deploy, list, bundles or sites")
	}
	cc, err := c.dial()
	if err != nil {
		return err
	}
	ac := latchkeyv1.NewAutomationServiceClient(cc)
	switch cmd, rest := args[0], args[1:]; cmd {
	case "deploy":
		fs := c.flags("automations deploy DIR")
		site := siteFlag(fs)
		dir, err := oneArgThenFlags(fs, rest, "the bundle's directory")
		if err != nil {
			return err
		}
		return automationsDeploy(ctx, c, ac, dir, *site)
	case "list":
		fs := c.flags("automations list")
		site := siteFlag(fs)
		if err := fs.Parse(rest); err != nil {
			return err
		}
		r, err := ac.ListAutomations(ctx, &latchkeyv1.ListAutomationsRequest{Site: *site})
		if err != nil {
			return fmt.Errorf("listing automations: %w", err)
		}
		return c.emit(r, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "site %s, bundle version %d\n", r.GetSite(), r.GetBundleVersion())
			automationTable(w, r.GetAutomations())
		})
	case "bundles":
		fs := c.flags("automations bundles")
		site := siteFlag(fs)
		if err := fs.Parse(rest); err != nil {
			return err
		}
		return automationsBundles(ctx, c, ac, *site)
	case "sites":
		if err := c.flags("automations sites").Parse(rest); err != nil {
			return err
		}
		r, err := ac.ListSites(ctx, &latchkeyv1.ListSitesRequest{})
		if err != nil {
			return fmt.Errorf("listing sites: %w", err)
		}
		return c.emit(r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "SITE\tBUNDLE VERSION")
			for _, s := range r.GetSites() {
				fmt.Fprintf(w, "%s\t%d\n", s.GetName(), s.GetBundleVersion())
			}
		})
	default:
		fmt.Fprint(c.stderr, automationsUsage)
		return fmt.Errorf("unknown automations command %q", cmd)
	}
}

func siteFlag(fs *flag.FlagSet) *string {
	return fs.String("site", "", "the site (default: default)")
}

func automationsDeploy(ctx context.Context, c *cli, ac latchkeyv1.AutomationServiceClient, dir, site string) error {
	files, err := bundleFiles(dir)
	if err != nil {
		return err
	}
	r, err := ac.DeployBundle(ctx, &latchkeyv1.DeployBundleRequest{Files: files, Site: site})
	if err != nil {
		return fmt.Errorf("deploying %s: %w", dir, err)
	}
	b := r.GetBundle()
	return c.emit(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "deployed version %d of site %s (%d files, sha256 %.12s)\n", b.GetVersion(), b.GetSite(), len(files), b.GetDigest())
		automationTable(w, b.GetAutomations())
	})
}

// bundleFiles reads the .yaml and .yml files under dir, with slash-separated paths
// relative to it.
func bundleFiles(dir string) ([]*latchkeyv1.BundleFile, error) {
	var files []*latchkeyv1.BundleFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, &latchkeyv1.BundleFile{Path: filepath.ToSlash(rel), Content: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the bundle in %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, errors.New("no .yaml or .yml files in " + dir)
	}
	return files, nil
}

func automationsBundles(ctx context.Context, c *cli, ac latchkeyv1.AutomationServiceClient, site string) error {
	all := &latchkeyv1.ListBundlesResponse{}
	for token := ""; ; {
		r, err := ac.ListBundles(ctx, &latchkeyv1.ListBundlesRequest{PageToken: token, Site: site})
		if err != nil {
			return fmt.Errorf("listing bundles: %w", err)
		}
		all.Bundles = append(all.Bundles, r.GetBundles()...)
		if token = r.GetPageInfo().GetNextPageToken(); token == "" {
			break
		}
	}
	return c.emit(all, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "VERSION\tAPIS\tSHA256\tDEPLOYED")
		for _, b := range all.GetBundles() {
			fmt.Fprintf(w, "%d\t%d\t%.12s\t%s\n", b.GetVersion(), len(b.GetAutomations()), b.GetDigest(), when(b.GetCreateTime()))
		}
	})
}

func automationTable(w *tabwriter.Writer, autos []*latchkeyv1.Automation) {
	fmt.Fprintln(w, "API\tFILE\tSTEPS\tDESCRIPTION")
	for _, a := range autos {
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", a.GetName(), a.GetFile(), a.GetStepCount(), firstLine(a.GetDescription()))
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

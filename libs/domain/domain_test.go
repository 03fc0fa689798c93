package domain

import "testing"

// The messages that tell a user how to deploy name the site they asked about, and
// the command they can paste.
func TestSiteWording(t *testing.T) {
	for _, c := range []struct{ project, site, of, cmd string }{
		{"", "", "this project", "latchkey automations deploy DIR"},
		{"", DefaultSite, "this project", "latchkey automations deploy DIR"},
		{"acme", "", `project "acme"`, "latchkey automations deploy DIR"},
		{"", "crm", `site "crm" of this project`, "latchkey automations deploy -site crm DIR"},
		{"acme", "crm", `site "crm" of project "acme"`, "latchkey automations deploy -site crm DIR"},
	} {
		if got := SiteOf(c.project, c.site); got != c.of {
			t.Errorf("SiteOf(%q, %q) = %q, want %q", c.project, c.site, got, c.of)
		}
		if got := DeployCommand(c.site); got != c.cmd {
			t.Errorf("DeployCommand(%q) = %q, want %q", c.site, got, c.cmd)
		}
	}
}

func TestCheckSite(t *testing.T) {
	for _, ok := range []string{"", "default", "crm", "a-1", "x"} {
		if err := CheckSite(ok); err != nil {
			t.Errorf("CheckSite(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"CRM", "-crm", "crm-", "a.b", "a b", string(make([]byte, 64))} {
		if CheckSite(bad) == nil {
			t.Errorf("CheckSite(%q) accepted a name that is not a DNS label", bad)
		}
	}
}

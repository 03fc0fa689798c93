// Command metricscheck checks Latchkey's Prometheus alert rules and Grafana dashboard
// offline: the rules parse with Prometheus' own rule parser (rulefmt, PromQL), every
// dashboard query parses as PromQL, and every metric either names is one Latchkey
// exports — the list in the metrics file, which an e2e test keeps equal to a real
// scrape (TestDomainMetrics).
//
//	metricscheck -metrics deploy/prometheus/latchkey-metrics.txt -rules deploy/prometheus/latchkey-alerts.yaml -dashboard deploy/grafana/latchkey-dashboard.json
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	metrics := flag.String("metrics", "", "file listing the exported metric names, one per line")
	rules := flag.String("rules", "", "Prometheus rule file")
	dashboard := flag.String("dashboard", "", "Grafana dashboard JSON")
	flag.Parse()
	if err := run(*metrics, *rules, *dashboard); err != nil {
		fmt.Fprintln(os.Stderr, "metricscheck:", err)
		os.Exit(1)
	}
}

func run(metricsFile, rulesFile, dashboardFile string) error {
	known, err := readNames(metricsFile)
	if err != nil {
		return err
	}
	var problems []error
	exprs := map[string]string{} // where -> PromQL
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, e := range errs {
		problems = append(problems, fmt.Errorf("%s: %w", rulesFile, e))
	}
	if groups != nil {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				exprs[fmt.Sprintf("%s: rule %s", rulesFile, r.Alert+r.Record)] = r.Expr
			}
		}
	}
	queries, err := dashboardQueries(dashboardFile)
	if err != nil {
		return err
	}
	for where, q := range queries {
		exprs[where] = q
	}
	p := parser.NewParser(parser.Options{})
	for where, q := range exprs {
		expr, err := p.ParseExpr(q)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", where, err))
			continue
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok && !known[baseName(vs.Name)] {
				problems = append(problems, fmt.Errorf("%s: metric %s is not one Latchkey exports (%s)", where, vs.Name, metricsFile))
			}
			return nil
		})
	}
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	fmt.Printf("metricscheck: %d rule and dashboard expressions use only exported metrics\n", len(exprs))
	return nil
}

// readNames reads the exported metric names, skipping blank lines and # comments.
func readNames(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			names[l] = true
		}
	}
	return names, sc.Err()
}

// baseName is a histogram series' family name.
func baseName(name string) string {
	for _, s := range []string{"_bucket", "_count", "_sum"} {
		if strings.HasSuffix(name, s) && strings.HasSuffix(strings.TrimSuffix(name, s), "_seconds") {
			return strings.TrimSuffix(name, s)
		}
	}
	return name
}

// dashboardQueries returns every panel target's expression, with Grafana's interval
// variables replaced so PromQL parses them.
func dashboardQueries(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]string{}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			out[fmt.Sprintf("%s: panel %q query %s", path, p.Title, t.RefID)] = vars.Replace(t.Expr)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no panel queries", path)
	}
	return out, nil
}

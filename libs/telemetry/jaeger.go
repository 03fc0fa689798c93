package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// ErrTraceNotFound is returned by FetchTrace when Jaeger holds no span of the trace
// (yet: spans are exported in batches, a few seconds after they end).
var ErrTraceNotFound = errors.New("jaeger has no such trace")

// Span is one span as Jaeger's query service returns it.
type Span struct {
	SpanID   string
	ParentID string // empty for a root
	Service  string
	Name     string
	Start    time.Time
	Duration time.Duration
	// Texts are every tag and log value of the span, for checks that no secret is in it.
	Texts []string
}

// FetchTrace returns the spans of one trace from a Jaeger query service at base (its
// HTTP address, e.g. http://127.0.0.1:16686), sorted by start time.
func FetchTrace(ctx context.Context, base, traceID string) ([]Span, error) {
	u := strings.TrimSuffix(base, "/") + "/api/traces/" + url.PathEscape(traceID)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("jaeger query address %q: %w", base, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking jaeger at %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading jaeger's answer: %w", err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, ErrTraceNotFound
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jaeger at %s answered %s: %.200s", base, resp.Status, body)
	}
	return parseJaegerTrace(body)
}

// jaegerTrace is the JSON of Jaeger's /api/traces/{id} (the UI's API; stable since
// Jaeger 1.x and served by Jaeger v2's jaeger_query extension).
type jaegerTrace struct {
	Data []struct {
		Spans []struct {
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			References    []struct {
				RefType string `json:"refType"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			StartTime int64                   `json:"startTime"` // µs since the epoch
			Duration  int64                   `json:"duration"`  // µs
			Tags      []kv                    `json:"tags"`
			Logs      []struct{ Fields []kv } `json:"logs"`
			ProcessID string                  `json:"processID"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
	} `json:"data"`
}

type kv struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

func parseJaegerTrace(body []byte) ([]Span, error) {
	var t jaegerTrace
	if err := json.Unmarshal(body, &t); err != nil {
		return nil, fmt.Errorf("jaeger's answer is not a trace: %w", err)
	}
	var spans []Span
	for _, d := range t.Data {
		for _, s := range d.Spans {
			sp := Span{
				SpanID: s.SpanID, Service: d.Processes[s.ProcessID].ServiceName, Name: s.OperationName,
				Start: time.UnixMicro(s.StartTime), Duration: time.Duration(s.Duration) * time.Microsecond,
			}
			for _, r := range s.References {
				if r.RefType == "CHILD_OF" {
					sp.ParentID = r.SpanID
				}
			}
			for _, tag := range s.Tags {
				sp.Texts = append(sp.Texts, fmt.Sprint(tag.Value))
			}
			for _, l := range s.Logs {
				for _, f := range l.Fields {
					sp.Texts = append(sp.Texts, fmt.Sprint(f.Value))
				}
			}
			spans = append(spans, sp)
		}
	}
	if len(spans) == 0 {
		return nil, ErrTraceNotFound
	}
	slices.SortStableFunc(spans, func(a, b Span) int { return a.Start.Compare(b.Start) })
	return spans, nil
}

// Depths returns each span's depth under its trace's root (0 for a root or a span
// whose parent is missing), by index into spans.
func Depths(spans []Span) []int {
	byID := make(map[string]int, len(spans))
	for i, s := range spans {
		byID[s.SpanID] = i
	}
	depths := make([]int, len(spans))
	for i, s := range spans {
		d, p := 0, s.ParentID
		for p != "" && d < len(spans) {
			j, ok := byID[p]
			if !ok {
				break
			}
			d, p = d+1, spans[j].ParentID
		}
		depths[i] = d
	}
	return depths
}

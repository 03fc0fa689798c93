package jobs

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

func cronSchedule(spec, zone string) *latchkeyv1.Schedule {
	return &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Cron{Cron: spec}, TimeZone: zone}
}

func TestParseScheduleRejectsBadInputNamingTheField(t *testing.T) {
	cases := []struct {
		name  string
		s     *latchkeyv1.Schedule
		field string
	}{
		{"six fields", cronSchedule("0 */5 * * * *", ""), "schedule.cron"},
		{"descriptor", cronSchedule("@daily", ""), "schedule.cron"},
		{"bad minute", cronSchedule("61 * * * *", ""), "schedule.cron"},
		{"zone in the expression", cronSchedule("CRON_TZ=Europe/Paris 0 9 * * *", ""), "schedule.time_zone"},
		{"never fires", cronSchedule("0 0 30 2 *", ""), "never fires"},
		{"unknown zone", cronSchedule("0 9 * * *", "Mars/Olympus"), "schedule.time_zone"},
		{"zone without cron", &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Interval{Interval: durationpb.New(time.Minute)}, TimeZone: "UTC"}, "schedule.time_zone"},
		{"interval too short", &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Interval{Interval: durationpb.New(10 * time.Millisecond)}}, "schedule.interval"},
		{"negative interval", &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Interval{Interval: durationpb.New(-time.Minute)}}, "schedule.interval"},
		{"invalid once", &latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Once{Once: &timestamppb.Timestamp{Seconds: 1, Nanos: -1}}}, "schedule.once"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSchedule(tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want an error naming %s", err, tc.field)
			}
		})
	}
}

func TestCronFiresInItsTimeZone(t *testing.T) {
	s, err := ParseSchedule(cronSchedule("0 9 * * 1-5", "America/New_York"))
	if err != nil {
		t.Fatal(err)
	}
	// Friday 2026-01-09 15:00 UTC is 10:00 in New York: the next 9:00 weekday is
	// Monday 2026-01-12 09:00 EST = 14:00 UTC.
	now := time.Date(2026, 1, 9, 15, 0, 0, 0, time.UTC)
	want := time.Date(2026, 1, 12, 14, 0, 0, 0, time.UTC)
	if got := s.First(now); !got.Equal(want) {
		t.Errorf("First = %s, want %s", got, want)
	}
	if got := s.After(now.Add(-time.Hour), now); !got.Equal(want) {
		t.Errorf("After = %s, want %s", got, want)
	}
}

func TestIntervalKeepsItsPhaseAndFiresOnceToCatchUp(t *testing.T) {
	s, err := ParseSchedule(&latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Interval{Interval: durationpb.New(10 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := s.First(t0); !got.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("First = %s", got)
	}
	// Due at t0+10s, seen at t0+10.3s: next at t0+20s.
	if got := s.After(t0.Add(10*time.Second), t0.Add(10300*time.Millisecond)); !got.Equal(t0.Add(20 * time.Second)) {
		t.Errorf("After a punctual firing = %s", got)
	}
	// A scheduler down from t0+10s to t0+95s fires once, then at t0+100s.
	if got := s.After(t0.Add(10*time.Second), t0.Add(95*time.Second)); !got.Equal(t0.Add(100 * time.Second)) {
		t.Errorf("After a long gap = %s, want t0+100s", got)
	}
}

func TestOnceAndBatch(t *testing.T) {
	at := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	s, err := ParseSchedule(&latchkeyv1.Schedule{Schedule: &latchkeyv1.Schedule_Once{Once: timestamppb.New(at)}})
	if err != nil || !s.Once() || s.Batch() {
		t.Fatalf("once: %v %v %v", err, s.Once(), s.Batch())
	}
	if got := s.First(time.Now()); !got.Equal(at) {
		t.Errorf("First = %s, want %s", got, at)
	}
	if !s.After(at, at.Add(time.Second)).IsZero() {
		t.Error("a once schedule fires again")
	}
	b, err := ParseSchedule(nil)
	if err != nil || !b.Batch() || !b.First(time.Now()).IsZero() {
		t.Errorf("batch: %v %v", err, b.Batch())
	}
}

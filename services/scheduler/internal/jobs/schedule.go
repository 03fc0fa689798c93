package jobs

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	latchkeyv1 "github.com/latchkey/latchkey/libs/gen/latchkey/v1"
)

// MinInterval is the shortest interval a Job may have. Every firing starts browser
// work, so intervals under a minute are for tests and demos; docs/scheduler.md says so.
const MinInterval = time.Second

// cronParser accepts exactly the five standard fields (minute hour day-of-month month
// day-of-week); no seconds, no descriptors such as @daily.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// Schedule is a parsed latchkeyv1.Schedule.
type Schedule struct {
	cron     cron.Schedule
	loc      *time.Location
	interval time.Duration
	once     time.Time
}

// ParseSchedule checks s and returns it parsed; a nil or empty Schedule is an
// on-demand batch (Batch reports true). Errors name the field at fault.
func ParseSchedule(s *latchkeyv1.Schedule) (Schedule, error) {
	var out Schedule
	zone := s.GetTimeZone()
	if zone != "" && s.GetCron() == "" {
		return out, errors.New("schedule.time_zone applies to cron schedules only")
	}
	switch v := s.GetSchedule().(type) {
	case nil:
	case *latchkeyv1.Schedule_Cron:
		spec := strings.TrimSpace(v.Cron)
		if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
			return out, errors.New("schedule.cron: give the time zone in schedule.time_zone, not in the expression")
		}
		if len(strings.Fields(spec)) != 5 {
			return out, fmt.Errorf("schedule.cron %.100q must have five fields (minute hour day-of-month month day-of-week), for example \"*/15 * * * *\"", spec)
		}
		c, err := cronParser.Parse(spec)
		if err != nil {
			return out, fmt.Errorf("schedule.cron %.100q: %v", spec, err)
		}
		out.cron, out.loc = c, time.UTC
		if zone != "" {
			loc, err := time.LoadLocation(zone)
			if err != nil || zone == "Local" {
				return out, fmt.Errorf("schedule.time_zone %.60q is not an IANA time zone such as \"Europe/Paris\"", zone)
			}
			out.loc = loc
		}
		if c.Next(time.Now().In(out.loc)).IsZero() {
			return out, fmt.Errorf("schedule.cron %.100q never fires", spec)
		}
	case *latchkeyv1.Schedule_Interval:
		if err := v.Interval.CheckValid(); err != nil {
			return out, fmt.Errorf("schedule.interval: %v", err)
		}
		if out.interval = v.Interval.AsDuration(); out.interval < MinInterval {
			return out, fmt.Errorf("schedule.interval must be at least %s", MinInterval)
		}
	case *latchkeyv1.Schedule_Once:
		if err := v.Once.CheckValid(); err != nil {
			return out, fmt.Errorf("schedule.once: %v", err)
		}
		out.once = v.Once.AsTime()
	}
	return out, nil
}

// Batch reports whether the schedule is empty: the Job fires only on TriggerJob.
func (s Schedule) Batch() bool { return s.cron == nil && s.interval == 0 && s.once.IsZero() }

// Once reports whether the Job fires once only.
func (s Schedule) Once() bool { return !s.once.IsZero() }

// First is the first fire time of a Job created or rescheduled at now: the next cron
// time, now plus the interval, or the once time. Zero for a batch.
func (s Schedule) First(now time.Time) time.Time {
	switch {
	case s.cron != nil:
		return s.cron.Next(now.In(s.loc)).UTC()
	case s.interval > 0:
		return now.Add(s.interval)
	case !s.once.IsZero():
		return s.once
	}
	return time.Time{}
}

// After is the fire time that follows a firing due at prev, skipping every time that
// has passed by now: a scheduler that was down fires once to catch up, not once per
// missed time. Intervals keep their phase (prev plus a whole number of intervals).
// Zero for once-Jobs and batches.
func (s Schedule) After(prev, now time.Time) time.Time {
	switch {
	case s.cron != nil:
		return s.cron.Next(now.In(s.loc)).UTC()
	case s.interval > 0:
		if prev.IsZero() || prev.After(now) {
			return now.Add(s.interval)
		}
		n := now.Sub(prev)/s.interval + 1
		return prev.Add(n * s.interval)
	}
	return time.Time{}
}

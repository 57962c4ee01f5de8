package secretsource

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHoldoff(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	q := 30 * time.Millisecond
	for _, tc := range []struct {
		name  string
		since time.Duration // of the event after the burst's start
		want  time.Duration
	}{
		{"the first event waits a quiet period", 0, q},
		{"an event inside the burst waits a quiet period", 100 * time.Millisecond, q},
		{"close to the cap: only what is left", 280 * time.Millisecond, 20 * time.Millisecond},
		{"at the cap: at once", 300 * time.Millisecond, 0},
		{"past the cap: at once", time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, holdoff(start.Add(tc.since), start, q, MaxDebounceFactor*q))
		})
	}
}

// step is one moment of a Debouncer's life, on a fake clock: at ms after
// the start, after the timers due by then have fired, the loop sees
// whether C delivered (fires), then does op.
type step struct {
	at    time.Duration
	fires bool
	op    string // "event", "cancel" or ""
}

func TestDebouncer(t *testing.T) {
	const q = 10 * time.Millisecond // the cap is 100ms
	ms := time.Millisecond
	// every returns an event every d from from (included) to to (excluded).
	every := func(d, from, to time.Duration) []step {
		var s []step
		for at := from; at < to; at += d {
			s = append(s, step{at: at, op: "event"})
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"nothing happens without events", []step{{at: time.Hour}}},
		{"one event fires a quiet period later", []step{
			{at: 0, op: "event"}, {at: 9 * ms}, {at: 10 * ms, fires: true}, {at: time.Hour},
		}},
		{"a burst fires once, a quiet period after its last event", []step{
			{at: 0, op: "event"},
			{at: 5 * ms, op: "event"},
			{at: 12 * ms, op: "event"},
			{at: 21 * ms},
			{at: 22 * ms, fires: true},
			{at: time.Hour},
		}},
		{"a burst that never ends fires at its cap, then again a cap later", cat(
			every(5*ms, 0, 100*ms),
			[]step{{at: 100 * ms, fires: true, op: "event"}},
			every(5*ms, 105*ms, 200*ms),
			[]step{{at: 200 * ms, fires: true}},
		)},
		{"the last event before the cap waits only for the cap", cat(
			every(9*ms, 0, 100*ms), // the last at 99ms, which alone would fire at 109ms
			[]step{{at: 99 * ms}, {at: 100 * ms, fires: true}, {at: time.Hour}},
		)},
		{"a burst after a fired one waits a quiet period again", []step{
			{at: 0, op: "event"},
			{at: 10 * ms, fires: true},
			{at: 50 * ms, op: "event"},
			{at: 59 * ms},
			{at: 60 * ms, fires: true},
		}},
		{"cancel drops a pending burst", []step{
			{at: 0, op: "event"}, {at: 5 * ms, op: "cancel"}, {at: time.Hour},
		}},
		{"an event after cancel starts a new burst", []step{
			{at: 0, op: "event"},
			{at: 5 * ms, op: "event"},
			{at: 9 * ms, op: "cancel"},
			{at: 200 * ms, op: "event"},
			{at: 209 * ms},
			{at: 210 * ms, fires: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			start := clock.Now()
			d := NewDebouncer(q, clock)
			defer d.Stop()
			for _, s := range tc.steps {
				clock.set(start.Add(s.at))
				fired := false
				select {
				case <-d.C():
					d.Fired()
					fired = true
				default:
				}
				require.Equal(t, s.fires, fired, "fired at %v", s.at)
				switch s.op {
				case "event":
					d.Event()
				case "cancel":
					d.Cancel()
				}
			}
		})
	}
}

// TestDebouncerRealClock: on the wall clock a burst is delivered.
func TestDebouncerRealClock(t *testing.T) {
	d := NewDebouncer(10*time.Millisecond, nil)
	defer d.Stop()
	d.Event()
	d.Event()
	select {
	case <-d.C():
		d.Fired()
	case <-time.After(10 * time.Second):
		t.Fatal("a burst was never delivered")
	}
}

// fakeClock fires its timers when set past their deadline, not when the
// wall clock says so. Like the Debouncer, it is used from one goroutine.
type fakeClock struct {
	now    time.Time
	timers []*fakeTimer
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{clock: c, c: make(chan time.Time, 1)}
	c.timers = append(c.timers, t)
	t.Reset(d)
	return t
}

// set moves the clock to now and fires the timers due by then.
func (c *fakeClock) set(now time.Time) {
	c.now = now
	for _, t := range c.timers {
		if t.armed && !t.deadline.After(now) {
			t.armed = false
			t.c <- t.deadline
		}
	}
}

type fakeTimer struct {
	clock    *fakeClock
	c        chan time.Time
	deadline time.Time
	armed    bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Reset(d time.Duration) bool {
	was := t.Stop()
	t.deadline, t.armed = t.clock.now.Add(d), true
	if d <= 0 {
		t.clock.set(t.clock.now)
	}
	return was
}

func (t *fakeTimer) Stop() bool {
	was := t.armed
	t.armed = false
	select { // no stale expiry after Stop, as since Go 1.23
	case <-t.c:
	default:
	}
	return was
}

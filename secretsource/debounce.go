package secretsource

import "time"

// Debouncer holds a burst of change events back until it has been quiet
// for a while, so that a certificate and its key renamed into place one
// after the other are published as one change (Contour's holdoff). A burst
// that never ends is still published, at most MaxDebounceFactor quiet
// periods after its first event.
//
// It is used from the one goroutine of a source's event loop, never
// concurrently: call Event for every event, select on C, and call Fired
// when C delivers.
type Debouncer struct {
	quiet, max time.Duration
	clock      Clock
	timer      Timer
	pending    bool
	burstStart time.Time
}

// MaxDebounceFactor caps the delay of a burst at this many quiet periods
// after its first event.
const MaxDebounceFactor = 10

// Clock is the time a Debouncer reads and the timer it arms: the real
// clock by default, a fake one in tests, which fires timers when it is
// advanced instead of when the wall clock says so. Its methods are called
// from the Debouncer's one goroutine.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is a time.Timer behind an interface, with the semantics of Go
// 1.23 and later: after Reset or Stop returns, C delivers no value of an
// earlier expiry.
type Timer interface {
	C() <-chan time.Time
	Reset(d time.Duration) bool
	Stop() bool
}

// NewDebouncer returns a Debouncer of quiet periods on clock (the real
// clock when nil). Stop it when done.
func NewDebouncer(quiet time.Duration, clock Clock) *Debouncer {
	if clock == nil {
		clock = realClock{}
	}
	t := clock.NewTimer(time.Hour)
	t.Stop()
	return &Debouncer{quiet: quiet, max: MaxDebounceFactor * quiet, clock: clock, timer: t}
}

// Event records a change event and (re)arms the timer.
func (d *Debouncer) Event() {
	now := d.clock.Now()
	if !d.pending {
		d.pending = true
		d.burstStart = now
	}
	d.timer.Reset(holdoff(now, d.burstStart, d.quiet, d.max))
}

// C delivers when a burst is over.
func (d *Debouncer) C() <-chan time.Time { return d.timer.C() }

// Fired ends the burst C delivered: the next Event starts a new one, with
// a cap of its own.
func (d *Debouncer) Fired() { d.pending = false }

// Cancel drops a pending burst, when a full reload made it moot.
func (d *Debouncer) Cancel() {
	d.pending = false
	d.timer.Stop()
}

// Stop releases the timer.
func (d *Debouncer) Stop() { d.timer.Stop() }

// holdoff is how long to wait after an event at now in a burst that
// started at start: the quiet period, but never past start+maxDelay.
func holdoff(now, start time.Time, quiet, maxDelay time.Duration) time.Duration {
	if rest := start.Add(maxDelay).Sub(now); rest < quiet {
		return max(rest, 0)
	}
	return quiet
}

// realClock is the wall clock and time.Timer.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }
func (r realTimer) Stop() bool                 { return r.t.Stop() }

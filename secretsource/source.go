package secretsource

import (
	"context"
	"time"

	"github.com/meshsds/meshsds/meshconfig"
)

// Source produces complete views of the resources it owns: a directory, the
// Kubernetes API, the admin API's store.
//
// Run calls publish from one goroutine, first once the source has loaded
// everything (that call marks it synced), then after every change; the
// published Resources belong to the reconciler from then on and are never
// modified. Run returns nil when ctx ends, or an error when the source
// cannot work at all (which stops the daemon); a failure it can recover
// from (an unparsable file, an unreachable API server) is logged and
// counted, and the last good view stays published. Name may be called
// concurrently with Run.
type Source interface {
	Name() string
	Run(ctx context.Context, publish func(meshconfig.Resources)) error
}

// Shared log keys of the sources.
const (
	LogSource = "source"
	LogMesh   = "mesh"
	LogPath   = "path"
	LogErr    = "err"
)

// Debouncer holds a burst of change events back until it has been quiet
// for a while, so that a certificate and its key renamed into place one
// after the other are published as one change (Contour's holdoff). A burst
// that never ends is still published, at most MaxFactor quiet periods after
// its first event. It is used from the one goroutine of a source's event
// loop: call Event for every event, select on C, and call Fired when C
// delivers.
type Debouncer struct {
	quiet, max time.Duration
	now        func() time.Time
	timer      *time.Timer
	pending    bool
	burstStart time.Time
}

// MaxDebounceFactor caps the delay of a burst at this many quiet periods
// after its first event.
const MaxDebounceFactor = 10

// NewDebouncer returns a Debouncer of quiet periods; now is the clock
// (time.Now when nil). Stop it when done.
func NewDebouncer(quiet time.Duration, now func() time.Time) *Debouncer {
	if now == nil {
		now = time.Now
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &Debouncer{quiet: quiet, max: MaxDebounceFactor * quiet, now: now, timer: t}
}

// Event records a change event and (re)arms the timer.
func (d *Debouncer) Event() {
	now := d.now()
	if !d.pending {
		d.pending = true
		d.burstStart = now
	}
	d.timer.Reset(holdoff(now, d.burstStart, d.quiet, d.max))
}

// C delivers when a burst is over.
func (d *Debouncer) C() <-chan time.Time { return d.timer.C }

// Fired ends the burst C delivered.
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

// Origins of resources: which kind of source holds them. The admin API shows
// a resource's origin and refuses to write one that files or Kubernetes
// hold.
const (
	OriginFile       = "file"
	OriginKubernetes = "kubernetes"
	OriginAPI        = "api"
)

// Originer is implemented by sources that say which kind of source they
// are (one of the Origin constants).
type Originer interface {
	Origin() string
}

// OriginOf returns src's origin, or its name when it does not say.
func OriginOf(src Source) string {
	if o, ok := src.(Originer); ok {
		return o.Origin()
	}
	return src.Name()
}

// View is the latest complete view one source published, for readers that
// show where each resource comes from. Its Resources must not be modified.
type View struct {
	Source    string // the source's name, e.g. "file:/etc/meshsds/secrets"
	Origin    string // one of the Origin constants
	Resources meshconfig.Resources
}

// Problem is a current failure of a source that does not stop it: a file
// or object it cannot use (its last good content, if any, is still
// served), a directory it cannot watch, the same resource defined twice.
type Problem struct {
	Source string `json:"source"`
	// Subject is what is wrong: a path, "Secret kuma-system/x", "Mesh m".
	Subject string `json:"subject"`
	Message string `json:"message"`
	// Since is when the problem was first seen.
	Since time.Time `json:"since,omitzero"`
}

// ProblemReporter is implemented by sources that keep their current
// problems. Problems may be called from any goroutine, concurrently with
// Run; the result is a fresh slice, sorted by subject.
type ProblemReporter interface {
	Problems() []Problem
}

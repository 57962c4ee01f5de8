package loadgen

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/meshsds/meshsds/sds/token"
)

// RunConfig configures one load run: connect a fleet, wait until it is
// served, then change the mesh's CA Rotations times and measure each
// fan-out.
type RunConfig struct {
	Fleet Config
	// SigningKey is the PEM file of the server's dataplane token signing
	// key; tokens are minted with it. Empty sends no token (server with
	// --auth none).
	SigningKey string
	// MeshDir is <secrets-dir>/<mesh> of the server, holding the raw
	// secrets ca-cert (an intermediate, then its root) and ca-key, as
	// WriteSecretsDir lays them out. Empty means no changes.
	MeshDir string
	// AdminURL, when set, is the admin API the changes are written
	// through (the Secrets ca-cert and ca-key of mesh Fleet.Mesh) instead
	// of the files of MeshDir, which then only keeps the CA's keys: how
	// replicas sharing a database are changed.
	AdminURL string
	// Rotations is how many times to make both changes: a CA rotation (a
	// new root and intermediate: every secret changes), then a re-issued
	// root (the same key: only the trust bundle changes).
	Rotations int
	// Timeout bounds each phase (storm, each change); default 60s.
	Timeout time.Duration
	// Pause is called after the storm and before each change, with the
	// report so far; the bench driver uses it to measure the server in
	// between. Nil does not pause. With Fleet.Reconnect it is called last
	// at stage "failover", for the caller to stop a server: Run then waits
	// until every data plane that lost its connection is served again.
	Pause func(stage string, r *Report) error
}

// StageFailover is the last pause with Config.Reconnect.
const StageFailover = "failover"

// Change kinds.
const (
	// ChangeCA is a new root and intermediate: every data plane gets a new
	// certificate and a new trust bundle.
	ChangeCA = "ca"
	// ChangeBundle is the root re-issued with its key: the trust bundle
	// changes, the workload certificates do not.
	ChangeBundle = "bundle"
)

// ChangeResult is the fan-out of one change.
type ChangeResult struct {
	Kind string `json:"kind"`
	PhaseResult
}

// Report is what a run measured. Times are seconds.
type Report struct {
	DataPlanes int    `json:"dataplanes"`
	Streams    int    `json:"streams"`
	API        string `json:"api"`
	// StormSeconds is from the first dial until every stream was served;
	// Storm has each secret's delay from the first dial.
	StormSeconds float64 `json:"stormSeconds"`
	// OpenSeconds is from the first dial until every stream was opened
	// (its first request sent).
	OpenSeconds float64        `json:"openSeconds"`
	Storm       PhaseResult    `json:"storm"`
	Changes     []ChangeResult `json:"changes,omitempty"`
	// CheckFailures counts secrets that, after a change, did not come
	// from the new CA.
	CheckFailures     int    `json:"checkFailures"`
	FirstCheckFailure string `json:"firstCheckFailure,omitempty"`
	Errors            int    `json:"errors"`
	FirstError        string `json:"firstError,omitempty"`
	NACKs             int    `json:"nacks"`
	// Failover is what the fleet's reconnections measured, with
	// Config.Reconnect.
	Failover *FailoverResult `json:"failover,omitempty"`
}

// Change returns the first result of kind, if any.
func (r *Report) Change(kind string) (ChangeResult, bool) {
	for _, c := range r.Changes {
		if c.Kind == kind {
			return c, true
		}
	}
	return ChangeResult{}, false
}

// Run runs the load described by cfg until done or ctx ends. The fleet is
// closed when Run returns.
func Run(ctx context.Context, cfg RunConfig) (*Report, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	var current *MeshCA
	if cfg.MeshDir != "" {
		var err error
		if current, err = LoadMeshCA(cfg.MeshDir); err != nil {
			return nil, err
		}
	}
	if cfg.SigningKey != "" {
		tokens, err := MintTokens(cfg.SigningKey, cfg.Fleet)
		if err != nil {
			return nil, err
		}
		cfg.Fleet.Token = func(i int) string { return tokens[i] }
	}
	fleet, start, err := Start(ctx, cfg.Fleet)
	if err != nil {
		return nil, err
	}
	defer fleet.Close()
	r := &Report{DataPlanes: cfg.Fleet.DataPlanes, Streams: fleet.Streams(), API: string(fleet.cfg.API), OpenSeconds: time.Since(start).Seconds()}

	wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	r.Storm = fleet.Wait(wctx, start)
	cancel()
	r.StormSeconds = r.Storm.All.Max
	r.fill(fleet)
	if r.Storm.Missing > 0 {
		return r, fmt.Errorf("%d of %d secrets not served within %s", r.Storm.Missing, len(fleet.slots), cfg.Timeout)
	}
	if cfg.MeshDir == "" {
		return r, awaitFailover(ctx, cfg, fleet, r, nil)
	}

	for n := range cfg.Rotations {
		for _, kind := range []string{ChangeCA, ChangeBundle} {
			if cfg.Pause != nil {
				if err := cfg.Pause(fmt.Sprintf("%s-%d", kind, n+1), r); err != nil {
					return r, err
				}
			}
			next, watch := current, []Kind{KindIdentity, KindBundle}
			if kind == ChangeCA {
				next, err = NewMeshCA(fmt.Sprintf("meshsds-load %d", n+1), time.Now())
			} else {
				next, err = current.ReissueRoot(time.Now())
				watch = []Kind{KindBundle}
			}
			if err != nil {
				return r, err
			}
			fleet.Mark(next.Root.CertPEM, watch...)
			at, err := ReplaceFiles(cfg.MeshDir, current, next)
			if err == nil && cfg.AdminURL != "" {
				at, err = PutSecrets(ctx, cfg.AdminURL, cfg.Fleet.Mesh, current, next)
			}
			if err != nil {
				return r, fmt.Errorf("changing the CA: %w", err)
			}
			current = next
			wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			res := fleet.Wait(wctx, at)
			cancel()
			r.Changes = append(r.Changes, ChangeResult{Kind: kind, PhaseResult: res})
			// Checked off the clock: the fleet holds the new CA's secrets.
			bad, first := fleet.Check(HeldBy(current))
			r.CheckFailures += bad
			if first != nil && r.FirstCheckFailure == "" {
				r.FirstCheckFailure = first.Error()
			}
			r.fill(fleet)
			if r.Errors > 0 {
				return r, fmt.Errorf("%s change %d: %d streams ended during the run, the first: %s", kind, n+1, r.Errors, r.FirstError)
			}
			if res.Missing > 0 {
				return r, fmt.Errorf("%s change %d: %d secrets not updated within %s", kind, n+1, res.Missing, cfg.Timeout)
			}
		}
	}
	return r, awaitFailover(ctx, cfg, fleet, r, current)
}

// awaitFailover, with Reconnect and Pause, pauses at StageFailover and
// then waits until a connection was lost and every data plane that lost
// one is served again, and checks, when current is known, that the fleet
// holds its secrets: the others serve the same trust.
func awaitFailover(ctx context.Context, cfg RunConfig, fleet *Fleet, r *Report, current *MeshCA) error {
	if !cfg.Fleet.Reconnect || cfg.Pause == nil {
		return nil
	}
	if err := cfg.Pause(StageFailover, r); err != nil {
		return err
	}
	deadline := time.After(cfg.Timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		r.fill(fleet)
		fo := r.Failover
		if fo.Reconnects > 0 && fo.Down == 0 {
			if current == nil {
				return nil
			}
			bad, first := fleet.Check(HeldBy(current))
			r.CheckFailures += bad
			if first != nil && r.FirstCheckFailure == "" {
				r.FirstCheckFailure = first.Error()
			}
			if bad > 0 {
				return fmt.Errorf("failover: %d secrets not from the current CA, the first: %w", bad, first)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			if fo.Reconnects == 0 {
				return fmt.Errorf("failover: no connection was lost within %s", cfg.Timeout)
			}
			return fmt.Errorf("failover: %d data planes not served again within %s", fo.Down, cfg.Timeout)
		case <-tick.C:
		}
	}
}

func (r *Report) fill(f *Fleet) {
	n, err := f.Errors()
	r.Errors = n
	if err != nil {
		r.FirstError = err.Error()
	}
	r.NACKs = f.NACKs()
	if f.cfg.Reconnect {
		fo := f.Failover()
		r.Failover = &fo
	}
}

// MintTokens signs one dataplane token per data plane of cfg, in parallel,
// with the signing key in the PEM file keyFile.
func MintTokens(keyFile string, cfg Config) ([]string, error) {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the token signing key: %w", err)
	}
	key, err := token.ParseSigningKey(data)
	if err != nil {
		return nil, err
	}
	issuer := token.NewIssuer(key)
	mesh, prefix := cfg.Mesh, cfg.Prefix
	if mesh == "" {
		mesh = "default"
	}
	if prefix == "" {
		prefix = "dp-"
	}
	tokens := make([]string, cfg.DataPlanes)
	now := time.Now()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(tokens); i += workers {
				name := prefix + strconv.Itoa(i)
				t, err := issuer.Issue(token.Claims{Mesh: mesh, Name: name, Tags: map[string][]string{"kuma.io/service": {name}}}, 24*time.Hour, now)
				if err != nil {
					once.Do(func() { first = err })
					return
				}
				tokens[i] = t
			}
		})
	}
	wg.Wait()
	if first != nil {
		return nil, fmt.Errorf("minting tokens: %w", first)
	}
	if len(tokens) > 0 && tokens[0] == "" {
		return nil, errors.New("minting tokens: no token")
	}
	return tokens, nil
}

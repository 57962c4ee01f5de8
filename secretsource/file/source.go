// Package file is the file secret source (--secrets-dir): it reads Mesh and
// Secret resources from a directory tree, watches the tree with fsnotify and
// publishes a complete view of the resources after every change.
//
// Layout of the directory:
//
//   - *.yaml, *.yml and *.json files anywhere in the tree are manifests, each
//     holding one or more Universal or Kubernetes documents;
//   - any other regular file at <dir>/<mesh>/<file> is a raw secret named
//     <file> in mesh <mesh> whose data is the file's bytes (an operator's PEM,
//     a mounted Kubernetes Secret, a Vault agent output);
//   - hidden names (which covers Kubernetes' ..data plumbing), editor temp
//     files, non-manifest files directly in <dir> and non-manifest files
//     deeper than <dir>/<mesh>/ are ignored.
//
// Symbolic links to files are followed (the Kubernetes mounted-Secret layout
// is ca.crt -> ..data/ca.crt, ..data -> ..2026_11_26_10_00_00.123/);
// symbolic links to directories are not descended into.
//
// Change detection: every rescan lists the tree and reads every candidate
// file, and the decoded result is cached per path under the SHA-256 of its
// content, so only files whose bytes changed are decoded again. Reading every
// file is deliberate: a same-size rewrite within the file system's mtime
// granularity leaves size, mtime and inode unchanged, and a file edited
// behind a symlink in an unwatched hidden directory produces no event at all.
// A few thousand small files are read in milliseconds.
//
// A file that fails to decode keeps its last good content in the view; the
// failure is logged and counted once per distinct error. The same resource
// defined by two files is taken from the lexicographically first path and the
// other definition is reported.
package file

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshsds/meshsds/meshconfig"
	"github.com/meshsds/meshsds/secretsource"
)

// Defaults of Config.
const (
	// DefaultDebounce is how long a burst of events must stay quiet before
	// the directory is rescanned: long enough to take a certificate and
	// its key renamed into place one after the other as one change, short
	// against the 0.3 s in which a new trust bundle should reach every data
	// plane.
	DefaultDebounce = 30 * time.Millisecond
	// DefaultRescanInterval is the period of the full rescan that catches
	// anything the watcher missed.
	DefaultRescanInterval = 30 * time.Second
)

// Config configures a Source.
type Config struct {
	// Dir is the directory to read and watch. It is required and must exist.
	Dir string
	// Name identifies the source in logs and metrics. It defaults to
	// "file:" followed by Dir.
	Name string
	// Debounce is how long a burst of file system events must stay quiet
	// before the directory is rescanned; a burst is never delayed by more
	// than ten times Debounce. It defaults to DefaultDebounce.
	Debounce time.Duration
	// RescanInterval is the period of full rescans, which catch changes the
	// watcher cannot see. It defaults to DefaultRescanInterval.
	RescanInterval time.Duration
	// MaxSecretSize is the largest Secret payload accepted, for manifests
	// and raw files alike. Zero means meshconfig.DefaultMaxSecretSize.
	MaxSecretSize int
	// Logger receives the source's logs. Nil discards them.
	Logger *slog.Logger
	// Registerer receives the source's metrics. Nil disables them. Several
	// Sources may share one Registerer.
	Registerer prometheus.Registerer
}

// Source is the file secret source. Create it with New and start it with
// Run.
type Source struct {
	dir            string
	name           string
	debounce       time.Duration
	rescanInterval time.Duration
	maxSecretSize  int
	log            *slog.Logger
	metrics        *metrics
	now            func() time.Time

	running atomic.Bool
}

// New validates cfg, applies its defaults and returns a Source that is not
// yet running.
func New(cfg Config) (*Source, error) {
	if cfg.Dir == "" {
		return nil, errors.New("file source: dir is required")
	}
	dir := filepath.Clean(cfg.Dir)
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("file source: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("file source: %s is not a directory", dir)
	}
	if cfg.Debounce < 0 {
		return nil, fmt.Errorf("file source: debounce must not be negative, got %s", cfg.Debounce)
	}
	if cfg.RescanInterval < 0 {
		return nil, fmt.Errorf("file source: rescan interval must not be negative, got %s", cfg.RescanInterval)
	}
	if cfg.MaxSecretSize < 0 {
		return nil, fmt.Errorf("file source: max secret size must not be negative, got %d", cfg.MaxSecretSize)
	}

	s := &Source{
		dir:            dir,
		name:           cfg.Name,
		debounce:       cfg.Debounce,
		rescanInterval: cfg.RescanInterval,
		maxSecretSize:  cfg.MaxSecretSize,
		log:            cfg.Logger,
		now:            time.Now,
	}
	if s.name == "" {
		s.name = "file:" + dir
	}
	if s.debounce == 0 {
		s.debounce = DefaultDebounce
	}
	if s.rescanInterval == 0 {
		s.rescanInterval = DefaultRescanInterval
	}
	if s.maxSecretSize == 0 {
		s.maxSecretSize = meshconfig.DefaultMaxSecretSize
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With(secretsource.LogSource, s.name)
	if s.metrics, err = newMetrics(cfg.Registerer, s.name); err != nil {
		return nil, fmt.Errorf("file source %s: %w", s.name, err)
	}
	return s, nil
}

// Name returns the source's name as used in logs and metrics.
func (s *Source) Name() string { return s.name }

// Run scans the directory, calls publish with the complete view, then
// watches the directory and calls publish again after every change that
// alters the view, until ctx ends. The first call to publish marks the
// source as synced; it happens even when the directory holds nothing.
//
// publish is called from Run's goroutine only, never concurrently, and Run
// waits for it to return. The Resources passed are fresh maps each time and
// are never modified by the source afterwards; the *Mesh and *Secret values
// may be shared between successive views and must not be modified by anyone.
//
// Run returns nil when ctx ends, and an error only when watching cannot start
// at all: the watcher cannot be created, the directory cannot be watched or
// read, or Run is already running.
func (s *Source) Run(ctx context.Context, publish func(meshconfig.Resources)) error {
	if !s.running.CompareAndSwap(false, true) {
		return fmt.Errorf("file source %s: already running", s.name)
	}
	defer s.running.Store(false)

	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("file source %s: starting watcher: %w", s.name, err)
	}
	defer w.Close()
	if err := w.Add(s.dir); err != nil {
		return fmt.Errorf("file source %s: watching %s: %w", s.name, s.dir, err)
	}

	st := newState(s, w)
	view, err := st.scan()
	if err != nil {
		return fmt.Errorf("file source %s: %w", s.name, err)
	}
	last := view
	s.log.Info("initial scan complete", secretsource.LogPath, s.dir, "meshes", len(view.Meshes), "secrets", len(view.Secrets))
	publish(view)

	ticker := time.NewTicker(s.rescanInterval)
	defer ticker.Stop()
	debounce := secretsource.NewDebouncer(s.debounce, nil)
	defer debounce.Stop()

	var (
		rootErr string // why the last rescan failed, "" if it did not
		events  = w.Events
		errs    = w.Errors
	)
	rescan := func(reason string) {
		s.metrics.rescans[reason].Inc()
		view, err := st.scan()
		if err != nil {
			// The directory itself is unreadable (removed, permissions):
			// keep serving the last view until it comes back.
			if msg := err.Error(); msg != rootErr {
				rootErr = msg
				s.log.Error("rescan failed; keeping the last view", secretsource.LogPath, s.dir, secretsource.LogErr, err)
				s.metrics.syncErrors.Inc()
			}
			return
		}
		if rootErr != "" {
			rootErr = ""
			s.log.Info("directory readable again", secretsource.LogPath, s.dir)
		}
		if last.Equal(view) {
			return
		}
		last = view
		s.log.Debug("publishing", "meshes", len(view.Meshes), "secrets", len(view.Secrets))
		publish(view)
	}

	for {
		select {
		case <-ctx.Done():
			return nil

		case ev, ok := <-events:
			if !ok {
				s.log.Error("watcher stopped; relying on periodic rescans")
				events = nil
				continue
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			debounce.Event()

		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// Overflow means events were lost; any other watcher error may
			// mean the same. Either way only a full rescan is trustworthy.
			s.log.Warn("watcher error; rescanning", secretsource.LogPath, s.dir, secretsource.LogErr, err)
			s.metrics.syncErrors.Inc()
			debounce.Cancel()
			rescan(reasonOverflow)

		case <-debounce.C():
			debounce.Fired()
			rescan(reasonEvent)

		case <-ticker.C:
			rescan(reasonPeriodic)
		}
	}
}

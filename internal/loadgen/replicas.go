package loadgen

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshsds/meshsds/sds/token"
)

// benchReplicas is benchOne for cfg.Replicas servers sharing PostgreSQL:
// the mesh and its CA are written through the first server's admin API,
// the fleet is spread over all of them, and the changes go through the
// first one, so that a change's fan-out includes its propagation to the
// other replicas and the CA change phases they go through together. RSS
// is the sum over the replicas; idle CPU is not measured. Last, the last
// replica is killed (SIGKILL) and the failover of its data planes to the
// others is measured.
func benchReplicas(ctx context.Context, cfg BenchConfig, n int) (*BenchRow, error) {
	logf := func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "bench %d on %d replicas: "+format+"\n", append([]any{n, cfg.Replicas}, args...)...)
	}
	if cfg.NewDatabase == nil {
		return nil, errors.New("replicas need a PostgreSQL database to share")
	}
	dbURL, err := cfg.NewDatabase()
	if err != nil {
		return nil, err
	}
	var servers []*benchServer
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	extra := []string{"--store", "postgres", "--postgres-url", dbURL}
	for i := range cfg.Replicas {
		// The first replica's signing key file becomes the shared one;
		// the others find it in the database.
		s, err := startServer(ctx, cfg, extra, false)
		if err != nil {
			return nil, fmt.Errorf("replica %d: %w", i, err)
		}
		servers = append(servers, s)
	}
	first := servers[0]
	admin := "http://" + first.admin
	stateDir := filepath.Join(first.dir, "state")
	ca, err := NewMeshCA("meshsds-load 0", time.Now())
	if err != nil {
		return nil, err
	}
	if err := WriteSecretsDir(stateDir, "default", ca); err != nil {
		return nil, err
	}
	if _, err := PutSecrets(ctx, admin, "default", nil, ca); err != nil {
		return nil, err
	}
	if err := PutMesh(ctx, admin, "default"); err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	var idle int64
	for _, s := range servers {
		s.gc()
	}
	time.Sleep(2 * time.Second)
	for _, s := range servers {
		rss, err := readRSS(s.cmd.Process.Pid)
		if err != nil {
			return nil, err
		}
		idle += rss
	}
	logf("servers ready, idle RSS %.1f MiB in all", float64(idle)/(1<<20))

	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.sds)
	}
	args := []string{
		"run", "--sds-address", strings.Join(addrs, ","), "--dataplanes", strconv.Itoa(n), "--api", string(cfg.API),
		"--mesh-dir", filepath.Join(stateDir, "default"), "--admin-url", admin, "--rotations", "1",
		"--signing-key", filepath.Join(first.dataDir, token.SigningKeyFile),
		"--reconnect", "--pause", "--json",
	}
	if cfg.Concurrency > 0 {
		args = append(args, "--concurrency", strconv.Itoa(cfg.Concurrency))
	}
	if cfg.Client != "" {
		args = append(args, "--client", cfg.Client)
	}
	logf("running the load generator")
	load, err := startLoad(ctx, cfg, args)
	if err != nil {
		return nil, err
	}
	defer load.close()
	var loaded int64
	for {
		ev, err := load.next()
		if err != nil {
			return nil, err
		}
		switch {
		case ev.Event == "done":
			return &BenchRow{
				DataPlanes: n, API: string(cfg.API), Replicas: cfg.Replicas, IdleRSS: idle, LoadedRSS: loaded,
				PerDPKiB: float64(loaded-idle) / 1024 / float64(n), Report: ev.Report,
			}, nil
		case ev.Event != "pause":
			return nil, fmt.Errorf("load generator: %s %s", ev.Event, ev.Error)
		case ev.Stage == StageFailover:
			// Memory with the fleet connected, before a replica is lost.
			for _, s := range servers {
				s.gc()
				rss, err := readRSS(s.cmd.Process.Pid)
				if err != nil {
					return nil, err
				}
				loaded += rss
			}
			last := servers[len(servers)-1]
			logf("killing replica %d (SIGKILL)", len(servers)-1)
			if err := last.cmd.Process.Kill(); err != nil {
				return nil, err
			}
		default:
			logf("%s", ev.Stage)
			time.Sleep(time.Second) // the previous change is over
		}
		if err := load.resume(); err != nil {
			return nil, err
		}
	}
}

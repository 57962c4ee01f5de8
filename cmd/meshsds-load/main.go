// Command meshsds-load simulates a fleet of Envoy data planes against a
// meshsds SDS server and measures the connection storm and the fan-out of a
// CA change ("run", in a secrets directory laid out by "setup"), or runs
// the whole benchmark behind "make bench", server and load generator each
// its own process ("bench").
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshsds/meshsds/internal/loadgen"
	"github.com/meshsds/meshsds/sds/token"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := &cobra.Command{
		Use:           "meshsds-load",
		Short:         "Load generator and benchmark driver for meshsds",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(setupCommand(), runCommand(), benchCommand())
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshsds-load:", err)
		os.Exit(1)
	}
}

func runCommand() *cobra.Command {
	var (
		cfg      loadgen.RunConfig
		api      string
		auth     string
		pause    bool
		jsonOut  bool
		duration time.Duration
		cpuProf  string
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Connect N simulated Envoys, wait until all are served, then rotate the mesh CA and measure the fan-out",
		Long: `Connect N simulated Envoys to a running meshsds, each its own gRPC connection
with one SotW stream per secret (identity_cert and mesh_ca), as Envoy does
without ADS (--api delta, ads or ads-delta for the others). Every response is
checked and ACKed (or NACKed) like Envoy does.

Reports the time from the first dial until every stream is served. Then,
with --mesh-dir (a mesh directory laid out by "meshsds-load setup"), for each
of --rotations it makes two changes through the files, each by writing a
temporary file and renaming it over ca-cert (and ca-key), and reports the
delay from the last rename until every affected secret holds its new
version:

  ca       a new root and intermediate: every identity_cert (re-issued
           certificates) and every mesh_ca changes;
  bundle   the root re-issued with the same key: only mesh_ca changes (a
           trust-bundle-only change; identity_cert streams must get nothing).

After each change it checks, off the clock, that every secret comes from the
new CA.

Tokens are minted in bulk with the server's signing key (--signing-key), or
none are sent with --auth none.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := loadgen.ParseAPI(api)
			if err != nil {
				return err
			}
			cfg.Fleet.API = a
			switch auth {
			case "none":
				cfg.SigningKey = ""
			case "dataplane-token":
				if cfg.SigningKey == "" {
					return errors.New("--signing-key is required with --auth dataplane-token")
				}
			default:
				return fmt.Errorf("--auth must be dataplane-token or none, not %q", auth)
			}
			out := cmd.OutOrStdout()
			emit := func(ev loadgen.Event) {
				if jsonOut {
					b, _ := json.Marshal(ev)
					fmt.Fprintln(out, string(b))
				}
			}
			if pause {
				in := bufio.NewReader(cmd.InOrStdin())
				cfg.Pause = func(stage string, r *loadgen.Report) error {
					emit(loadgen.Event{Event: "pause", Stage: stage, Report: r})
					switch {
					case jsonOut:
					case stage == loadgen.StageFailover:
						fmt.Fprintln(out, "stop a server (one of --sds-address), then press enter: the report waits until its data planes are served again")
					default:
						fmt.Fprintf(out, "served %d data planes in %.2fs; press enter to %s\n", r.DataPlanes, r.StormSeconds, stage)
					}
					_, err := in.ReadString('\n')
					return err
				}
			}
			if cpuProf != "" {
				f, err := os.Create(cpuProf)
				if err != nil {
					return err
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
			// The simulated fleet is one process holding what would be
			// thousands: trade its memory (there is plenty) for less GC
			// CPU, which it shares with the server under test.
			debug.SetGCPercent(400)
			ctx := cmd.Context()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			r, err := loadgen.Run(ctx, cfg)
			if err != nil {
				emit(loadgen.Event{Event: "error", Report: r, Error: err.Error()})
				if r != nil && !jsonOut {
					printReport(out, r)
				}
				return err
			}
			emit(loadgen.Event{Event: "done", Report: r})
			if !jsonOut {
				printReport(out, r)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Fleet.Addr, "sds-address", "127.0.0.1:5677", "SDS address of meshsds, or of several replicas separated by commas: the data planes are spread over them in turn")
	f.StringVar(&cfg.Fleet.Addr, "addr", "127.0.0.1:5677", "")
	_ = f.MarkDeprecated("addr", "use --sds-address")
	f.StringVar(&cfg.AdminURL, "admin-url", "", "make the changes through this admin API (the Secrets ca-cert and ca-key of --mesh) rather than the files of --mesh-dir, which then only keeps the CA's keys")
	f.IntVar(&cfg.Fleet.DataPlanes, "dataplanes", 1000, "how many Envoys to simulate, each its own connection")
	f.StringVar(&cfg.Fleet.Mesh, "mesh", "default", "mesh of the data planes (node ids <mesh>.<prefix><i>)")
	f.StringVar(&cfg.Fleet.Prefix, "prefix", "dp-", "name prefix of the data planes")
	f.StringVar(&api, "api", "sotw", "sotw (a stream per secret), delta (a delta stream per secret), ads or ads-delta (one stream)")
	f.StringVar(&auth, "auth", "dataplane-token", "dataplane-token (minted from --data-dir) or none")
	f.StringVar(&cfg.SigningKey, "signing-key", "", "PEM file of the server's dataplane token signing key (e.g. <data-dir>/dataplane-token-signing-key.pem)")
	f.StringVar(&cfg.MeshDir, "mesh-dir", "", "<secrets-dir>/<mesh> of the server, laid out by \"meshsds-load setup\"; changes are written there")
	f.IntVar(&cfg.Rotations, "rotations", 1, "how many times to make both changes, ca and bundle (needs --mesh-dir)")
	f.IntVar(&cfg.Fleet.Concurrency, "concurrency", 2000, "data planes connecting at once (dialed and not yet holding both secrets)")
	f.StringVar(&cfg.Fleet.Client, "client", loadgen.ClientH2, "gRPC client: h2 (gRPC over x/net/http2, light) or grpc-go (a ClientConn per data plane)")
	f.BoolVar(&cfg.Fleet.Reconnect, "reconnect", false, "a data plane whose stream ends reconnects to the next --sds-address after a backoff, as Envoy does, and the report measures the failover (with --pause, the last pause is for stopping a server); without it an ended stream is an error")
	f.DurationVar(&cfg.Timeout, "timeout", 60*time.Second, "limit of each phase (storm, each change)")
	f.DurationVar(&duration, "max-duration", 10*time.Minute, "limit of the whole run")
	f.BoolVar(&pause, "pause", false, "wait for a line on stdin after the storm and before each change")
	f.BoolVar(&jsonOut, "json", false, "print events and the report as JSON lines")
	f.StringVar(&cpuProf, "cpu-profile", "", "write the load generator's own CPU profile here")
	return cmd
}

func printReport(w io.Writer, r *loadgen.Report) {
	fmt.Fprintf(w, "%d data planes, %d %s streams\n", r.DataPlanes, r.Streams, r.API)
	fmt.Fprintf(w, "all served (storm):  %.3fs  (per secret p50 %.3fs p99 %.3fs)\n", r.StormSeconds, r.Storm.All.P50, r.Storm.All.P99)
	for _, c := range r.Changes {
		if c.Identity.Count > 0 {
			fmt.Fprintf(w, "%-6s change, identity_cert: p50 %.3fs p99 %.3fs max %.3fs (%d secrets, %d missing)\n", c.Kind, c.Identity.P50, c.Identity.P99, c.Identity.Max, c.Identity.Count, c.Missing)
		}
		fmt.Fprintf(w, "%-6s change, mesh_ca:       p50 %.3fs p99 %.3fs max %.3fs (%d secrets, %d unexpected other pushes)\n", c.Kind, c.Bundle.P50, c.Bundle.P99, c.Bundle.Max, c.Bundle.Count, c.Unexpected)
		if e := c.Elsewhere; e != nil {
			fmt.Fprintf(w, "%-6s change, mesh_ca on the addresses after the first: p50 %.3fs p99 %.3fs max %.3fs (%d secrets)\n", c.Kind, e.P50, e.P99, e.Max, e.Count)
		}
	}
	if fo := r.Failover; fo != nil {
		fmt.Fprintf(w, "failover: %d connections lost, %d data planes served again: p50 %.3fs p99 %.3fs max %.3fs; %d still down\n",
			fo.Reconnects, fo.Served.Count, fo.Served.P50, fo.Served.P99, fo.Served.Max, fo.Down)
	}
	fmt.Fprintf(w, "errors %d, NACKs %d, secrets not from the new CA %d\n", r.Errors, r.NACKs, r.CheckFailures)
	if r.FirstError != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstError)
	}
	if r.FirstCheckFailure != "" {
		fmt.Fprintf(w, "first check failure: %s\n", r.FirstCheckFailure)
	}
}

func setupCommand() *cobra.Command {
	var mesh, dataDir string
	cmd := &cobra.Command{
		Use:   "setup DIR",
		Short: "Lay out a --secrets-dir with a mesh whose provided CA (root and intermediate) run can change",
		Long: `Lay out DIR for "meshsds serve --secrets-dir DIR": a Mesh with a provided
CA backend whose secrets ca-cert (an intermediate, then its root) and ca-key
are raw files in DIR/<mesh>; the keys run needs to change them are kept in
the hidden DIR/<mesh>/.meshsds-load. With --data-dir, also create the
dataplane token signing key file there before meshsds first starts with that
data directory (meshsds adopts it), for run --signing-key.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ca, err := loadgen.NewMeshCA("meshsds-load 0", time.Now())
			if err != nil {
				return err
			}
			if err := loadgen.WriteSecretsDir(args[0], mesh, ca); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "serve with --secrets-dir %s; run with --mesh-dir %s\n", args[0], filepath.Join(args[0], mesh))
			if dataDir != "" {
				if _, err := token.LoadOrCreateSigningKey(dataDir); err != nil {
					return err
				}
				fmt.Fprintf(out, "serve with --data-dir %s; run with --signing-key %s\n", dataDir, filepath.Join(dataDir, token.SigningKeyFile))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&mesh, "mesh", "default", "mesh name")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "also create the token signing key file in this (new) data directory")
	return cmd
}

func benchCommand() *cobra.Command {
	var (
		cfg         loadgen.BenchConfig
		api         string
		jsonOut     string
		postgresURL string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Start a fresh meshsds per fleet size, load it with a separate meshsds-load process, and print the table",
		Long: `For each --dataplanes size: start "meshsds serve" (--pprof, a fresh temporary
directory with a mesh "default" and a provided CA, and a token signing key
file in its data directory, which meshsds adopts), read its idle
RSS, run "meshsds-load run" as a separate process, read the server's RSS
once every stream is served and settled, watch its CPU for --idle-cpu with
nothing changing, rotate the CA, and print one Markdown table.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := loadgen.ParseAPI(api)
			if err != nil {
				return err
			}
			cfg.API = a
			if cfg.Load == "" {
				if cfg.Load, err = os.Executable(); err != nil {
					return err
				}
			}
			if cfg.Meshsds, err = filepath.Abs(cfg.Meshsds); err != nil {
				return err
			}
			cfg.Log = cmd.ErrOrStderr()
			if cfg.Replicas > 1 {
				if postgresURL == "" || len(cfg.DataPlanes) != 1 {
					return errors.New("--replicas needs --postgres-url, an empty database, and one --dataplanes size")
				}
				cfg.NewDatabase = func() (string, error) { return postgresURL, nil }
			}
			rows, err := loadgen.Bench(cmd.Context(), cfg)
			if len(rows) > 0 {
				loadgen.PrintTable(cmd.OutOrStdout(), rows)
			}
			if jsonOut != "" && len(rows) > 0 {
				b, _ := json.MarshalIndent(rows, "", "  ")
				if werr := os.WriteFile(jsonOut, b, 0o644); werr != nil {
					err = errors.Join(err, werr)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Meshsds, "meshsds", "bin/meshsds", "the meshsds binary")
	f.StringVar(&cfg.Load, "load", "", "the meshsds-load binary (default: this one)")
	f.IntSliceVar(&cfg.DataPlanes, "dataplanes", []int{1000, 10000}, "fleet sizes, each against a fresh server")
	f.StringVar(&api, "api", "sotw", "API of the simulated Envoys: sotw, delta, ads or ads-delta")
	f.StringVar(&cfg.Auth, "auth", "dataplane-token", "server authentication: dataplane-token or none")
	f.DurationVar(&cfg.Settle, "settle", 3*time.Second, "wait after the storm before reading RSS")
	f.DurationVar(&cfg.IdleCPU, "idle-cpu", 30*time.Second, "how long to watch the idle server's CPU")
	f.StringVar(&cfg.ProfileDir, "profile-dir", "", "write the server's CPU (storm, each change) and heap profiles here, and the load generator's CPU profile")
	f.StringVar(&jsonOut, "json-out", "", "also write the rows as JSON to this file")
	f.IntVar(&cfg.Concurrency, "concurrency", 2000, "data planes connecting at once (dialed and not yet holding both secrets)")
	f.StringVar(&cfg.Client, "client", loadgen.ClientH2, "gRPC client of the load generator: h2 or grpc-go")
	f.IntVar(&cfg.Replicas, "replicas", 1, "run this many servers sharing --postgres-url, the fleet spread over them, the changes made through the first one's admin API")
	f.StringVar(&postgresURL, "postgres-url", "", "an empty PostgreSQL database for --replicas (then one fleet size only)")
	f.BoolVar(&cfg.TraceRotation, "trace-rotation", false, "with --profile-dir: an execution trace of the rotation instead of its CPU profile")
	return cmd
}

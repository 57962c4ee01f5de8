package sqlite_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/secretsource/store"
	"github.com/meshsds/meshsds/secretsource/store/sqlite"
)

// Environment of the helper process: the database file and the round,
// which prefixes the names it writes.
const (
	helperEnvPath  = "MESHSDS_SQLITE_HELPER_DB"
	helperEnvRound = "MESHSDS_SQLITE_HELPER_ROUND"
)

// helperMaxWrites stops a helper that nobody killed.
const helperMaxWrites = 100_000

var counterKey = store.Key{Kind: store.KindSecret, Mesh: "default", Name: "counter"}

func helperRecordKey(round, i int) store.Key {
	return store.Key{Kind: store.KindSecret, Mesh: "default", Name: fmt.Sprintf("rec-%d-%06d", round, i)}
}

func helperRecordData(round, i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("%d/%d;", round, i)), 200)
}

// TestHelperProcess is not a test: TestKillLosesNoAcknowledgedWrite runs the
// test binary again with only this function and the helper environment. It
// writes in a loop and prints a line for each write once Put has returned:
//
//	rec <i>              helperRecordKey(round, i) was created
//	counter <version>    counterKey was updated to <version>, data "<version>"
func TestHelperProcess(t *testing.T) {
	path := os.Getenv(helperEnvPath)
	if path == "" {
		t.Skip("helper process of TestKillLosesNoAcknowledgedWrite")
	}
	round, err := strconv.Atoi(os.Getenv(helperEnvRound))
	require.NoError(t, err)
	s, err := sqlite.Open(sqlite.Config{Path: path})
	require.NoError(t, err)
	ctx := t.Context()
	for i := range helperMaxWrites {
		_, _, err := s.Put(ctx, store.Record{Key: helperRecordKey(round, i), Data: helperRecordData(round, i)}, 0)
		require.NoError(t, err)
		fmt.Printf("rec %d\n", i) // unbuffered: one write(2) per line

		cur, err := s.Get(ctx, counterKey)
		require.NoError(t, err)
		next := strconv.FormatInt(cur.Version+1, 10)
		rec, _, err := s.Put(ctx, store.Record{Key: counterKey, Data: []byte(next)}, cur.Version)
		require.NoError(t, err)
		fmt.Printf("counter %d\n", rec.Version)
	}
}

// TestKillLosesNoAcknowledgedWrite kills a process that is writing, with
// SIGKILL at an arbitrary point, and requires every write it acknowledged
// to be in the database when it is opened again; three times over the same
// file, so that recovering a recovered database is covered too.
//
// SIGKILL loses what the process had not handed to the kernel; what
// synchronous=FULL adds, surviving a power loss, cannot be shown by a test
// and is checked as a setting by TestConnectionSettings.
func TestKillLosesNoAcknowledgedWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "meshsds.db")
	s := open(t, path)
	_, err := s.Create(t.Context(), store.Record{Key: counterKey, Data: []byte("1")})
	require.NoError(t, err)
	require.NoError(t, s.Close())

	// The acknowledgements to read before the kill, per round: enough for
	// the kill to land among writes in full swing.
	const acksBeforeKill = 200
	var (
		recsAcked    []int // per round
		counterAcked int64
	)
	for round := range 3 {
		recs, counter := runAndKill(t, path, round, acksBeforeKill)
		require.GreaterOrEqual(t, recs, acksBeforeKill/2)
		recsAcked = append(recsAcked, recs)
		counterAcked = max(counterAcked, counter)
		t.Logf("round %d: %d records and counter version %d acknowledged", round, recs, counter)

		s, err := sqlite.Open(sqlite.Config{Path: path})
		require.NoError(t, err, "reopening after the kill")
		ctx := t.Context()
		for r, n := range recsAcked {
			for i := range n {
				rec, err := s.Get(ctx, helperRecordKey(r, i))
				require.NoError(t, err, "acknowledged write %s lost", helperRecordKey(r, i))
				require.Equal(t, int64(1), rec.Version)
				require.Equal(t, helperRecordData(r, i), rec.Data)
			}
		}
		counterRec, err := s.Get(ctx, counterKey)
		require.NoError(t, err)
		require.GreaterOrEqual(t, counterRec.Version, counterAcked, "acknowledged counter update lost")
		require.Equal(t, strconv.FormatInt(counterRec.Version, 10), string(counterRec.Data), "counter data matches its version")
		require.NoError(t, s.Close())
	}
}

// runAndKill runs the helper process on path, reads acks acknowledgements,
// kills it with SIGKILL, reads whatever acknowledgements it wrote before
// dying, and returns how many records it acknowledged and the highest
// counter version.
func runAndKill(t *testing.T, path string, round, acks int) (recs int, counter int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnvPath+"="+path, helperEnvRound+"="+strconv.Itoa(round))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	killed := false
	lines := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		what, n, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue // not ours (the testing package's own output)
		}
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			continue
		}
		switch what {
		case "rec":
			require.Equal(t, int64(recs), v, "records are acknowledged in order")
			recs++
		case "counter":
			counter = v
		default:
			continue
		}
		lines++
		if lines == acks && !killed {
			require.NoError(t, cmd.Process.Kill())
			killed = true
		}
	}
	// Wait closes stdout; read everything first, as acknowledgements the
	// helper wrote before the signal landed count too.
	err = cmd.Wait()
	require.True(t, killed, "the helper stopped after %d acknowledgements (%v): %s", lines, err, stderr.String())
	require.Error(t, err)
	require.Equal(t, -1, cmd.ProcessState.ExitCode(), "the helper died of the signal, not on its own: %v: %s", err, stderr.String())
	return recs, counter
}

package sqlite_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/meshsds/meshsds/secretsource/store"
)

// benchRecords is the size of the store the benchmarks run on, spread over
// benchMeshes meshes, each record benchDataSize bytes (a PEM certificate).
const (
	benchRecords  = 1000
	benchMeshes   = 4
	benchDataSize = 1024
)

func benchKey(i int) store.Key {
	i %= benchRecords
	return store.Key{Kind: store.KindSecret, Mesh: fmt.Sprintf("mesh-%d", i%benchMeshes), Name: fmt.Sprintf("secret-%04d", i)}
}

// benchStore opens a store in b's temporary directory holding benchRecords
// records.
func benchStore(b *testing.B) store.Store {
	b.Helper()
	s := open(b, filepath.Join(b.TempDir(), "meshsds.db"))
	data := bytes.Repeat([]byte{'x'}, benchDataSize)
	for i := range benchRecords {
		_, _, err := s.Put(b.Context(), store.Record{Key: benchKey(i), Data: data}, 0)
		require.NoError(b, err)
	}
	return s
}

// BenchmarkPut updates the records in turn: one fsynced transaction each.
func BenchmarkPut(b *testing.B) {
	s := benchStore(b)
	data := bytes.Repeat([]byte{'y'}, benchDataSize)
	i := 0
	for b.Loop() {
		if _, _, err := s.Put(b.Context(), store.Record{Key: benchKey(i), Data: data}, 0); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkPutParallel is BenchmarkPut from GOMAXPROCS goroutines: writes
// are serialized, so this shows the cost of waiting for the writer.
func BenchmarkPutParallel(b *testing.B) {
	s := benchStore(b)
	data := bytes.Repeat([]byte{'y'}, benchDataSize)
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := s.Put(b.Context(), store.Record{Key: benchKey(int(next.Add(1))), Data: data}, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGet reads the records in turn.
func BenchmarkGet(b *testing.B) {
	s := benchStore(b)
	i := 0
	for b.Loop() {
		if _, err := s.Get(b.Context(), benchKey(i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkList lists every Secret of every mesh (benchRecords records),
// and those of one mesh.
func BenchmarkList(b *testing.B) {
	s := benchStore(b)
	for _, tt := range []struct {
		name string
		mesh string
		want int
	}{
		{"all-meshes", "", benchRecords},
		{"one-mesh", "mesh-1", benchRecords / benchMeshes},
	} {
		b.Run(tt.name, func(b *testing.B) {
			for b.Loop() {
				recs, err := s.List(b.Context(), store.KindSecret, tt.mesh)
				if err != nil {
					b.Fatal(err)
				}
				if len(recs) != tt.want {
					b.Fatalf("listed %d records, want %d", len(recs), tt.want)
				}
			}
		})
	}
}

// BenchmarkRevision is the change check other replicas poll.
func BenchmarkRevision(b *testing.B) {
	s := benchStore(b)
	for b.Loop() {
		if _, err := s.Revision(b.Context()); err != nil {
			b.Fatal(err)
		}
	}
}

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

func TestDebouncerPublishesQuietBurstsAndCapsEndlessOnes(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	d := NewDebouncer(50*time.Millisecond, clock)
	defer d.Stop()

	// A burst of three events, then quiet: one delivery.
	d.Event()
	d.Event()
	d.Event()
	select {
	case <-d.C():
		d.Fired()
	case <-time.After(5 * time.Second):
		t.Fatal("a quiet burst was never delivered")
	}
	select {
	case <-d.C():
		t.Fatal("one burst delivered twice")
	case <-time.After(100 * time.Millisecond):
	}

	// An endless burst: once its first event is ten quiet periods old,
	// the next event fires at once.
	d.Event()
	now = now.Add(MaxDebounceFactor * 50 * time.Millisecond)
	d.Event()
	select {
	case <-d.C():
		d.Fired()
	case <-time.After(40 * time.Millisecond):
		t.Fatal("an endless burst was held past its cap")
	}

	// Cancel drops a pending burst.
	d.Event()
	d.Cancel()
	select {
	case <-d.C():
		t.Fatal("a cancelled burst was delivered")
	case <-time.After(100 * time.Millisecond):
	}
}

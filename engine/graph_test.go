package engine

import (
	"context"
	"sync"
	"testing"
	"time"
)

// ownerGraph answers thread_owner at once; its other calls are not used.
type ownerGraph struct{ Graph }

func (ownerGraph) ThreadOwner(context.Context, string, string) (string, time.Time, error) {
	return "", time.Time{}, nil
}

// TestBoundedGraphReportsAtMostItsBound: what the bound reports as in
// flight (threadctl_graph_calls_in_flight) never exceeds the bound, even
// while calls end and others start at the same moment.
func TestBoundedGraphReportsAtMostItsBound(t *testing.T) {
	const bound = 2
	var (
		mu        sync.Mutex
		now, most int
	)
	g := newBoundedGraph(ownerGraph{}, bound, func(_ string, delta int) {
		mu.Lock()
		now += delta
		most = max(most, now)
		mu.Unlock()
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 2000 {
				if _, _, err := g.ThreadOwner(context.Background(), "100000000000001", "7000000000000001"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if most > bound || now != 0 {
		t.Errorf("in flight: at most %d reported, %d at the end; want at most %d, and 0", most, now, bound)
	}
}

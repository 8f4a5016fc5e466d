package engine

import (
	"context"
	"sync"
	"time"
)

// boundedGraph is the engine's Graph with at most max calls in flight per
// page: when Meta is slow or unreachable, callers wait for a slot (until
// their context ends) instead of piling up goroutines and connections.
// report observes each call starting (+1) and ending (-1).
type boundedGraph struct {
	Graph
	max    int
	report func(pageID string, delta int)

	mu    sync.Mutex
	pages map[string]*pageSlots
}

type pageSlots struct {
	slots chan struct{}
}

func newBoundedGraph(g Graph, max int, report func(pageID string, delta int)) *boundedGraph {
	return &boundedGraph{Graph: g, max: max, report: report, pages: map[string]*pageSlots{}}
}

// acquire takes a slot for a call on page, or returns ctx's error.
func (g *boundedGraph) acquire(ctx context.Context, pageID string) (release func(), err error) {
	g.mu.Lock()
	p := g.pages[pageID]
	if p == nil {
		p = &pageSlots{slots: make(chan struct{}, g.max)}
		g.pages[pageID] = p
	}
	g.mu.Unlock()
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, errorf(CodeMeta, ctx.Err(), "waiting for one of the %d Graph API calls in flight on page %s to finish", g.max, pageID)
	}
	g.report(pageID, 1)
	return func() {
		// Reported before the slot is free, so that the next call's +1
		// never comes first: the gauge never shows more than max.
		g.report(pageID, -1)
		<-p.slots
	}, nil
}

// do makes one call on page with a slot held.
func (g *boundedGraph) do(ctx context.Context, pageID string, call func() error) error {
	release, err := g.acquire(ctx, pageID)
	if err != nil {
		return err
	}
	defer release()
	return call()
}

func (g *boundedGraph) PassThreadControl(ctx context.Context, pageID, psid, targetAppID, metadata string) error {
	return g.do(ctx, pageID, func() error { return g.Graph.PassThreadControl(ctx, pageID, psid, targetAppID, metadata) })
}

func (g *boundedGraph) TakeThreadControl(ctx context.Context, pageID, psid, metadata string) error {
	return g.do(ctx, pageID, func() error { return g.Graph.TakeThreadControl(ctx, pageID, psid, metadata) })
}

func (g *boundedGraph) RequestThreadControl(ctx context.Context, pageID, psid, metadata string) error {
	return g.do(ctx, pageID, func() error { return g.Graph.RequestThreadControl(ctx, pageID, psid, metadata) })
}

func (g *boundedGraph) ReleaseThreadControl(ctx context.Context, pageID, psid string) error {
	return g.do(ctx, pageID, func() error { return g.Graph.ReleaseThreadControl(ctx, pageID, psid) })
}

func (g *boundedGraph) ExtendThreadControl(ctx context.Context, pageID, psid string, d time.Duration) error {
	return g.do(ctx, pageID, func() error { return g.Graph.ExtendThreadControl(ctx, pageID, psid, d) })
}

func (g *boundedGraph) ThreadOwner(ctx context.Context, pageID, psid string) (owner string, expires time.Time, err error) {
	err = g.do(ctx, pageID, func() (err error) { owner, expires, err = g.Graph.ThreadOwner(ctx, pageID, psid); return err })
	return owner, expires, err
}

func (g *boundedGraph) SendText(ctx context.Context, pageID, psid, text string) (mid string, err error) {
	err = g.do(ctx, pageID, func() (err error) { mid, err = g.Graph.SendText(ctx, pageID, psid, text); return err })
	return mid, err
}

func (g *boundedGraph) FeatureStatus(ctx context.Context, pageID string) (hopV2, multiApp bool, err error) {
	err = g.do(ctx, pageID, func() (err error) { hopV2, multiApp, err = g.Graph.FeatureStatus(ctx, pageID); return err })
	return hopV2, multiApp, err
}

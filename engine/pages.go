package engine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/threadctl/threadctl/states"
)

// A page's routing and RingCX's takeover setting come from the
// configuration, are checked against Meta at start where Meta can say
// (messaging_feature_status), and are learned from Meta's refusals: a
// request for control refused on a page with a default app, a take refused
// because the takeover setting is off. What is learned is kept with the
// page (Learned), shown by the debug views, counted (Observer.PageLearned)
// and logged once; the refused event is then decided again with the right
// table.

// reprobeAfter is how recent Meta's answer about a page's routing must be
// for a refusal not to ask again.
const reprobeAfter = 10 * time.Second

// checkRouting asks Meta how each page routes conversations and learns the
// answers. Meta gets a few seconds in all: a page it does not answer for
// keeps what threadctl knew, and refusals will teach the rest.
func (e *Engine) checkRouting(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range e.Pages() {
		wg.Go(func() {
			if _, _, err := e.probeRouting(ctx, p.ID, "start-up check"); err != nil {
				e.log.Warn("could not ask Meta how the page routes conversations; keeping what is known", "page_id", p.ID, "routing", p.RoutingNow(), "err", err)
			}
		})
	}
	wg.Wait()
}

// probeRouting asks Meta for a page's messaging_feature_status and learns
// the routing it shows. known is the routing Meta showed ("" when its
// answer says neither); changed reports whether threadctl's view changed.
//
// Meta documents the flags, not what they mean; threadctl infers that
// msgr_multi_app means Conversation Routing is on for Messenger (the
// Conversation Routing docs check it to tell), and hop_v2 without it the
// Handover Protocol.
func (e *Engine) probeRouting(ctx context.Context, pageID, why string) (known states.Routing, changed bool, err error) {
	hopV2, multiApp, err := e.graph.FeatureStatus(ctx, pageID)
	if err != nil {
		return "", false, err
	}
	switch {
	case multiApp:
		known = states.ConversationRouting
	case hopV2:
		known = states.HandoverProtocol
	default:
		return "", false, nil
	}
	e.pagesMu.Lock()
	e.confirmed[pageID] = e.clock.Now()
	e.pagesMu.Unlock()
	changed, err = e.learnRouting(ctx, pageID, known, "messaging_feature_status ("+why+")")
	return known, changed, err
}

// recentlyConfirmed reports whether Meta showed the page's routing less
// than reprobeAfter ago.
func (e *Engine) recentlyConfirmed(pageID string) bool {
	e.pagesMu.RLock()
	at, ok := e.confirmed[pageID]
	e.pagesMu.RUnlock()
	return ok && e.clock.Now().Sub(at) < reprobeAfter
}

// learnFrom reads a refusal of call on page: it asks Meta for the page's
// routing (unless Meta just said), then infers from a permission refusal
// what the page does not allow. It reports whether threadctl's view of the
// page changed, so that the event is worth deciding again.
func (e *Engine) learnFrom(ctx context.Context, page Page, call states.Call, callErr error) bool {
	changed := false
	var known states.Routing
	if !e.recentlyConfirmed(page.ID) {
		var err error
		known, changed, err = e.probeRouting(ctx, page.ID, "after Meta refused "+string(call))
		if err != nil {
			e.log.Warn("could not ask Meta how the page routes conversations", "page_id", page.ID, "err", err)
		}
	}
	if !permissionDenied(callErr) {
		return changed
	}
	p, _ := e.Page(page.ID)
	from := fmt.Sprintf("Meta refused %s: %v", call, callErr)
	var learned bool
	var err error
	switch {
	case call == states.CallRequest && p.RoutingNow() == states.HandoverProtocol && known != states.HandoverProtocol:
		// Meta refuses a request for control on pages with a default app:
		// Conversation Routing.
		learned, err = e.learnRouting(ctx, page.ID, states.ConversationRouting, from)
	case call == states.CallTake && p.RoutingNow() == states.ConversationRouting && p.Primary != states.PrimaryNone:
		learned, err = e.learnTakeover(ctx, page.ID, false, from)
	}
	if err != nil {
		e.log.Warn("could not save what Meta's refusal taught about the page", "page_id", page.ID, "err", err)
	}
	return changed || learned
}

// learnRouting records that Meta shows the page's routing r.
func (e *Engine) learnRouting(ctx context.Context, pageID string, r states.Routing, from string) (bool, error) {
	return e.learn(ctx, pageID, "routing", func(p *Page) bool {
		if p.Learned.Routing == r {
			return false
		}
		p.Learned.Routing, p.Learned.RoutingAt, p.Learned.RoutingFrom = r, e.clock.Now(), from
		return true
	})
}

// learnTakeover records what Meta showed of the page's takeover setting
// for the RingCX app: off when it refused a take, on when it allowed one.
func (e *Engine) learnTakeover(ctx context.Context, pageID string, on bool, from string) (bool, error) {
	return e.learn(ctx, pageID, "takeover", func(p *Page) bool {
		if on && !p.Learned.TakeoverOff {
			return false
		}
		p.Learned.TakeoverOff, p.Learned.TakeoverAt, p.Learned.TakeoverFrom = !on, e.clock.Now(), from
		return true
	})
}

// learn changes what is known of a page (update reports whether it changed
// anything to save), saves it, and — when the table its threads follow
// changes — reports and logs it once. It returns whether the table changed.
func (e *Engine) learn(ctx context.Context, pageID, fact string, update func(p *Page) bool) (bool, error) {
	e.learnMu.Lock()
	defer e.learnMu.Unlock()
	p, ok := e.Page(pageID)
	if !ok {
		return false, nil
	}
	now := e.clock.Now()
	before := p.Table(now)
	if !update(&p) {
		return false, nil
	}
	if err := e.store.PutPage(ctx, p); err != nil {
		return false, storeError(err, "saving what was learned of page "+pageID)
	}
	e.pagesMu.Lock()
	e.pages[pageID] = p
	e.pagesMu.Unlock()
	after := p.Table(now)
	if after == before {
		return false, nil
	}
	e.obs.PageLearned(pageID, fact)
	e.log.Info("learned from Meta how the page works", "page_id", pageID, "fact", fact,
		"table_before", before.Name(), "table", after.Name(), "routing", p.RoutingNow(), "takeover", p.TakeoverNow(now),
		"how", map[string]string{"routing": p.Learned.RoutingFrom, "takeover": p.Learned.TakeoverFrom}[fact])
	return true, nil
}

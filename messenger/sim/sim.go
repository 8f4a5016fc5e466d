package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Options configure a simulator.
type Options struct {
	// Now is the clock; nil means time.Now. Control expiry and webhook timestamps follow it.
	Now func() time.Time
	// HTTPClient delivers webhooks; nil means a client with a 10 s timeout that does not follow
	// redirects.
	HTTPClient *http.Client
	// RetryDelays are the waits before each retry of a failed webhook POST; nil means
	// {200ms, 1s, 5s, 20s, 60s}, an empty slice means no retry. After the last retry fails the
	// delivery is dropped (logged).
	RetryDelays []time.Duration
	// Logger receives the simulator's operational log; nil discards it.
	Logger *slog.Logger
}

var defaultRetryDelays = []time.Duration{200 * time.Millisecond, time.Second, 5 * time.Second, 20 * time.Second, 60 * time.Second}

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("simulator closed")

// ErrUnknownPage is returned for a page the simulator was not given.
var ErrUnknownPage = errors.New("unknown page")

// Sim is a running simulator. Its methods are safe for concurrent use.
type Sim struct {
	now         func() time.Time
	client      *http.Client
	retryDelays []time.Duration
	logger      *slog.Logger
	handler     http.Handler

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	mu        sync.Mutex
	closed    bool
	pages     map[string]*page
	tokens    map[string]appRef
	threads   map[string]map[string]*thread // page id → PSID → thread
	outboxes  map[outboxKey]*outbox
	faults    []*activeFault
	log       []LogEntry
	seq       int64
	lastStamp int64 // last webhook timestamp handed out, in ms
	delivery  int64 // last delivery id
	pending   int   // queued or in-flight webhook events and bot work
	settled   chan struct{}
}

// appRef is what an access token stands for.
type appRef struct {
	pageID, appID string
}

// thread is Meta's view of one conversation.
type thread struct {
	owner     string
	expiresAt time.Time // zero when idle, and always in hop_v1
	messages  []ThreadMessage
}

// ThreadView is Meta's truth about a thread.
type ThreadView struct {
	// OwnerAppID is the app in control; empty when the thread is idle.
	OwnerAppID string
	// ExpiresAt is when control returns to idle; zero when idle or in hop_v1.
	ExpiresAt time.Time
	Messages  []ThreadMessage
}

// ThreadMessage is a message of a thread, from the customer or sent by an app.
type ThreadMessage struct {
	MID string `json:"mid"`
	// From is "customer" or the id of the app that sent it.
	From string    `json:"from"`
	Text string    `json:"text"`
	Time time.Time `json:"time"`
}

// New returns a running simulator with no pages. Close stops it.
func New(opts Options) *Sim {
	s := &Sim{
		now:         opts.Now,
		client:      opts.HTTPClient,
		retryDelays: opts.RetryDelays,
		logger:      opts.Logger,
		pages:       map[string]*page{},
		tokens:      map[string]appRef{},
		threads:     map[string]map[string]*thread{},
		outboxes:    map[outboxKey]*outbox{},
		settled:     make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.client == nil {
		s.client = &http.Client{
			Timeout: 10 * time.Second,
			// A redirect is a failed delivery, not something to follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if s.retryDelays == nil {
		s.retryDelays = defaultRetryDelays
	}
	s.retryDelays = slices.Clone(s.retryDelays)
	if s.logger == nil {
		s.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.handler = s.routes()
	return s
}

// Handler serves the Graph API endpoints and the /_sim/ control API.
func (s *Sim) Handler() http.Handler { return s.handler }

// Close stops webhook delivery and the reference bots and waits for their goroutines. Queued
// deliveries are abandoned. It is idempotent.
func (s *Sim) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.cancel()
		s.mu.Unlock()
		s.wg.Wait()
	})
}

// PutPage adds a page, or replaces one; the threads of a replaced page are kept. Apps whose
// role changes on a replaced page are sent an app_roles webhook.
func (s *Sim) PutPage(p PageConfig) error {
	cfg, err := p.normalized()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	for _, a := range cfg.Apps {
		if ref, ok := s.tokens[a.AccessToken]; ok && ref.pageID != cfg.PageID {
			return fmt.Errorf("invalid page config: app %s: access_token is already used by app %s on page %s", a.AppID, ref.appID, ref.pageID)
		}
	}
	now := s.now()
	old := s.pages[cfg.PageID]
	if old != nil {
		for _, a := range old.cfg.Apps {
			delete(s.tokens, a.AccessToken)
		}
	}
	pg := newPage(cfg)
	s.pages[cfg.PageID] = pg
	for _, a := range cfg.Apps {
		s.tokens[a.AccessToken] = appRef{pageID: cfg.PageID, appID: a.AppID}
	}
	s.adoptThreads(pg, now)
	s.appendLog(LogEntry{
		Kind:   KindPageConfig,
		PageID: cfg.PageID,
		Detail: fmt.Sprintf("mode=%s primary=%s apps=%d", cfg.Mode, cfg.PrimaryAppID, len(cfg.Apps)),
	})
	if old != nil {
		s.sendAppRoles(old, pg, now)
	}
	return nil
}

// pageConfig returns a copy of a page's config.
func (s *Sim) pageConfig(pageID string) (PageConfig, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pg, ok := s.pages[pageID]
	if !ok {
		return PageConfig{}, false
	}
	return pg.cfg, true
}

// adoptThreads brings a page's existing threads in line with a new config. Every thread is
// kept, with its owner and its control window, across any change of mode (hop_v2 to cr and
// back included), except that: control that had already expired is first returned to idle,
// an owner that is no longer connected loses control (a choice: Meta does not say what
// happens when an app is unsubscribed), hop_v1 threads are never idle and never expire (an
// idle thread goes to the Primary Receiver), and owned threads of the other modes get a
// control window if they had none (leaving hop_v1).
func (s *Sim) adoptThreads(pg *page, now time.Time) {
	for _, t := range s.threads[pg.id()] {
		if !t.expiresAt.IsZero() && !now.Before(t.expiresAt) {
			t.owner, t.expiresAt = "", time.Time{}
		}
		if t.owner != "" && !pg.connected(t.owner) {
			t.owner, t.expiresAt = "", time.Time{}
		}
		switch {
		case pg.mode() == ModeHOPv1:
			t.expiresAt = time.Time{}
			if t.owner == "" {
				t.owner = pg.primary()
			}
		case t.owner != "" && t.expiresAt.IsZero():
			t.expiresAt = now.Add(controlWindow)
		}
	}
}

// sendAppRoles sends app_roles to each app of the new config whose role differs from the old
// one (new apps included). Each app is told its own role only: Meta's sample carries one app.
func (s *Sim) sendAppRoles(old, pg *page, now time.Time) {
	for i := range pg.cfg.Apps {
		a := &pg.cfg.Apps[i]
		role := pg.role(a.AppID)
		if old.apps[a.AppID] != nil && old.role(a.AppID) == role {
			continue
		}
		ev := event{
			kind:   evAppRoles,
			pageID: pg.id(),
			ts:     s.stamp(now),
			roles:  map[string][]string{a.AppID: {role}},
		}
		s.deliverTo(pg, a.AppID, FieldHandovers, ev)
	}
}

// thread returns a page's thread, creating it, and applies control expiry. A new hop_v1 thread
// belongs to the Primary Receiver. The caller holds s.mu.
func (s *Sim) thread(pg *page, psid string, now time.Time) *thread {
	byPSID := s.threads[pg.id()]
	if byPSID == nil {
		byPSID = map[string]*thread{}
		s.threads[pg.id()] = byPSID
	}
	t := byPSID[psid]
	if t == nil {
		t = &thread{}
		if pg.mode() == ModeHOPv1 {
			t.owner = pg.primary()
		}
		byPSID[psid] = t
	}
	if !t.expiresAt.IsZero() && !now.Before(t.expiresAt) {
		t.owner, t.expiresAt = "", time.Time{}
	}
	return t
}

// setOwner gives a thread to an app (or makes it idle) and starts a fresh control window.
func setOwner(pg *page, t *thread, owner string, now time.Time) {
	t.owner = owner
	t.expiresAt = time.Time{}
	if owner != "" && pg.mode() != ModeHOPv1 {
		t.expiresAt = now.Add(controlWindow)
	}
}

// CustomerMessage makes a customer (psid) write to a page, and routes the message: an idle
// thread goes to the primary or default app (hop_v1, hop_v2, cr), the owner receives it in
// messaging, apps subscribed to standby receive it there, and on an idle thread with no app to
// route to (hop_v2 without primary, cr_zero) every app receives it in messaging.
func (s *Sim) CustomerMessage(pageID, psid, text string) (string, error) {
	if psid == "" || text == "" {
		return "", errors.New("customer message: psid and text are required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", ErrClosed
	}
	pg := s.pages[pageID]
	if pg == nil {
		return "", fmt.Errorf("customer message: page %s: %w", pageID, ErrUnknownPage)
	}
	now := s.now()
	t := s.thread(pg, psid, now)
	if t.owner == "" {
		t.owner = pg.primary() // none in cr_zero, nor in hop_v2 without a Primary Receiver
	}
	if t.owner != "" && pg.mode() != ModeHOPv1 {
		// A user message restarts the 24 h window but never shortens an extension.
		t.expiresAt = later(t.expiresAt, now.Add(controlWindow))
	}
	ts := s.stamp(now)
	mid := newMID()
	t.messages = append(t.messages, ThreadMessage{MID: mid, From: "customer", Text: text, Time: time.UnixMilli(ts).UTC()})
	s.appendLog(LogEntry{
		Kind:       KindCustomerMessage,
		PageID:     pageID,
		PSID:       psid,
		Text:       text,
		MID:        mid,
		OwnerAppID: t.owner,
	})
	s.route(pg, t.owner, "", event{kind: evMessage, pageID: pageID, psid: psid, ts: ts, mid: mid, text: text})
	return mid, nil
}

// Thread returns Meta's truth about a thread; an unknown page gives a zero view.
func (s *Sim) Thread(pageID, psid string) ThreadView {
	s.mu.Lock()
	defer s.mu.Unlock()
	pg := s.pages[pageID]
	if pg == nil {
		return ThreadView{}
	}
	t := s.thread(pg, psid, s.now())
	return ThreadView{OwnerAppID: t.owner, ExpiresAt: t.expiresAt, Messages: slices.Clone(t.messages)}
}

// Settle waits until no webhook delivery is queued, in flight or waiting to be retried, the
// reference bots have nothing left to do, and no Graph call is held by a fault's delay_ms
// (so that a call applied late, apply_late, has been applied).
func (s *Sim) Settle(ctx context.Context) error {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		n, ch := s.pending, s.settled
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-s.ctx.Done():
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("settle: %d webhook events, bot actions or delayed Graph calls still pending: %w", n, ctx.Err())
		}
	}
}

// addPending and donePending count outstanding webhook and bot work. The caller holds s.mu.
func (s *Sim) addPending(n int) { s.pending += n }

func (s *Sim) donePending(n int) {
	s.pending -= n
	if s.pending == 0 {
		close(s.settled)
		s.settled = make(chan struct{})
	}
}

// stamp returns a webhook timestamp in ms: the clock's, but strictly increasing across the
// simulator. The caller holds s.mu.
func (s *Sim) stamp(now time.Time) int64 {
	ms := now.UnixMilli()
	if ms <= s.lastStamp {
		ms = s.lastStamp + 1
	}
	s.lastStamp = ms
	return ms
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

func randomString(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = idAlphabet[rand.IntN(len(idAlphabet))]
	}
	return string(b)
}

// newMID returns a message id shaped like Messenger's ("m_" and base64url).
func newMID() string { return "m_" + randomString(43) }

// newTraceID returns an fbtrace_id shaped like Graph's.
func newTraceID() string { return randomString(11) }

// sleep waits d, or until ctx or the simulator is done.
func (s *Sim) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ctx.Done():
		return ErrClosed
	}
}

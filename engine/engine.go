package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/threadctl/threadctl/states"
)

// Graph is Meta's Graph API as the engine uses it, acting as the RingCX app
// of each page. *messenger.Client implements it. Errors that mean "another
// app owns the thread" implement NotThreadOwner() bool.
type Graph interface {
	PassThreadControl(ctx context.Context, pageID, psid, targetAppID, metadata string) error
	TakeThreadControl(ctx context.Context, pageID, psid, metadata string) error
	RequestThreadControl(ctx context.Context, pageID, psid, metadata string) error
	ReleaseThreadControl(ctx context.Context, pageID, psid string) error
	ExtendThreadControl(ctx context.Context, pageID, psid string, d time.Duration) error
	ThreadOwner(ctx context.Context, pageID, psid string) (appID string, expires time.Time, err error)
	SendText(ctx context.Context, pageID, psid, text string) (messageID string, err error)
	// FeatureStatus is the page's messaging_feature_status: the hop_v2 and
	// msgr_multi_app flags.
	FeatureStatus(ctx context.Context, pageID string) (hopV2, multiApp bool, err error)
}

// Observer receives what the engine does, for metrics. Its methods must be
// fast and must not call back into the engine.
type Observer interface {
	// Transition is called once per recorded event (after its commit).
	Transition(TransitionInfo)
	// ControlGranted is called when a pending request ends with RingCX in
	// control, with the time since the request.
	ControlGranted(wait time.Duration)
	// WebhookEvent is called once per event of a Meta webhook, with Meta's
	// kind and what became of it (an outcome of HistoryEntry or Result,
	// OutcomeSkipped or OutcomeError).
	WebhookEvent(kind, outcome string)
	// PageLearned is called when Meta's answers change what threadctl knows
	// of a page: fact is "routing" or "takeover".
	PageLearned(pageID, fact string)
	// GraphInFlight is called when a Graph API call on a page starts
	// (delta 1) and ends (delta -1).
	GraphInFlight(pageID string, delta int)
	// Pruned is called after each pass of the background pruner, with how
	// many history entries, contents and interventions it deleted.
	Pruned(history, contents, interventions int)
}

// TransitionInfo describes one recorded event.
type TransitionInfo struct {
	Table    states.Table
	Event    states.Event
	From, To states.State
	Outcome  string
	Created  bool // the event created the thread
}

type nopObserver struct{}

func (nopObserver) Transition(TransitionInfo)    {}
func (nopObserver) ControlGranted(time.Duration) {}
func (nopObserver) WebhookEvent(string, string)  {}
func (nopObserver) PageLearned(string, string)   {}
func (nopObserver) GraphInFlight(string, int)    {}
func (nopObserver) Pruned(int, int, int)         {}

// Config wires an engine. Store and Graph are required.
type Config struct {
	Store Store
	Graph Graph
	// Coordinator, when several instances share Store, says which one
	// leads (coordinator.go); nil: this engine is alone and leads.
	Coordinator Coordinator
	Clock       Clock        // nil: the real clock
	Logger      *slog.Logger // nil: discard
	Observer    Observer     // nil: none

	// ControlWindow is Meta's control expiry without activity (default 24 h).
	ControlWindow time.Duration
	// PendingTimeout is the pending-request deadline of pages that set none
	// (default 60 s).
	PendingTimeout time.Duration
	// RetryDelay is how long after a failed timer-driven Graph call it is
	// tried again (default 30 s).
	RetryDelay time.Duration
	// Workers bounds the background work (timers firing, contents being
	// sent) running at once (default 16).
	Workers int
	// CacheSize bounds how many thread records are kept in memory (default
	// 65536; negative: none). With a Coordinator the default is none: when
	// several instances share the store a cached record is often stale — a
	// stale hit costs a refused transaction, a read and a second try, where
	// reading first costs the read alone.
	CacheSize int
	// MaxGraphInFlight bounds the Graph API calls in flight per page
	// (default 32): more wait for a slot until their context ends.
	MaxGraphInFlight int
	// HistoryKeep is how many of a thread's newest history entries are
	// kept (default 100; negative: all). HistoryMaxAge, when positive, also
	// drops entries older than that (each thread keeps its newest).
	// Retention is how long synced or failed contents and closed
	// interventions are kept (default 30 days; negative: for ever).
	// PruneInterval is how often the background pruner runs (default 1
	// min).
	HistoryKeep   int
	HistoryMaxAge time.Duration
	Retention     time.Duration
	PruneInterval time.Duration
	// TimerWindow is how far ahead the timers are kept in memory (default
	// 10 min), at most MaxTimers of them (default 100 000); the others wait
	// in the store's index.
	TimerWindow time.Duration
	MaxTimers   int
	// ExtendLead is how long before control expires an agent's open
	// intervention extends it (default 1 h); ExtendBy is for how long
	// (default 7 days, Meta's maximum).
	ExtendLead, ExtendBy time.Duration
}

// MaxExtension is the longest Meta extends a thread's control for.
const MaxExtension = 7 * 24 * time.Hour

// Engine applies events to threads. Create it with New, then Start it.
type Engine struct {
	cfg   Config
	store Store
	graph Graph
	clock Clock
	log   *slog.Logger
	obs   Observer

	locks  locks
	sched  *scheduler
	coord  Coordinator
	leader atomic.Bool // while coord says this instance leads
	cache  *threadCache

	learnMu   sync.Mutex // serialises changes to a page's settings
	pagesMu   sync.RWMutex
	pages     map[string]Page
	confirmed map[string]time.Time // when Meta last showed a page's routing

	pendMu  sync.Mutex
	pending map[ThreadKey]time.Time // requested at, for the oldest-request gauge

	flushMu  sync.Mutex
	flushing map[ThreadKey]bool

	rechecks sync.Map // ThreadKey → how often Meta did not answer a recheck
	inbox    inbox    // accepted webhook events waiting, per thread

	recent recentCalls // when each thread's last Graph call answered

	bg     chan struct{} // semaphore for background work
	wg     sync.WaitGroup
	ctx    context.Context // background work's: ends when Close begins
	cancel context.CancelFunc
	once   sync.Once
}

// New returns an engine; Start loads its state.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil || cfg.Graph == nil {
		return nil, errors.New("engine: Store and Graph are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.ControlWindow <= 0 {
		cfg.ControlWindow = 24 * time.Hour
	}
	if cfg.PendingTimeout <= 0 {
		cfg.PendingTimeout = 60 * time.Second
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 30 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.CacheSize == 0 && cfg.Coordinator == nil {
		cfg.CacheSize = 65536
	}
	if cfg.MaxGraphInFlight <= 0 {
		cfg.MaxGraphInFlight = 32
	}
	if cfg.ExtendLead <= 0 {
		cfg.ExtendLead = time.Hour
	}
	switch {
	case cfg.HistoryKeep == 0:
		cfg.HistoryKeep = 100
	case cfg.HistoryKeep < 0:
		cfg.HistoryKeep = 0
	}
	if cfg.Retention == 0 {
		cfg.Retention = 30 * 24 * time.Hour
	}
	if cfg.PruneInterval <= 0 {
		cfg.PruneInterval = time.Minute
	}
	if cfg.TimerWindow <= 0 {
		cfg.TimerWindow = 10 * time.Minute
	}
	if cfg.MaxTimers <= 0 {
		cfg.MaxTimers = 100_000
	}
	if cfg.ExtendBy <= 0 || cfg.ExtendBy > MaxExtension {
		cfg.ExtendBy = MaxExtension
	}
	e := &Engine{
		cfg: cfg, store: cfg.Store, clock: cfg.Clock, log: cfg.Logger, obs: cfg.Observer, coord: cfg.Coordinator,
		graph:     newBoundedGraph(cfg.Graph, cfg.MaxGraphInFlight, cfg.Observer.GraphInFlight),
		pages:     map[string]Page{},
		confirmed: map[string]time.Time{},
		cache:     newThreadCache(cfg.CacheSize),
		pending:   map[ThreadKey]time.Time{},
		flushing:  map[ThreadKey]bool{},
		bg:        make(chan struct{}, cfg.Workers),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.sched = newScheduler(cfg.Clock, e.timerDue, func(after, before time.Time, limit int) ([]Timer, error) {
		return e.store.TimersBetween(context.Background(), after, before, limit)
	}, cfg.TimerWindow, cfg.MaxTimers, func(err error) {
		e.log.Error("reading the next timers from the store failed; trying again", "err", err)
	})
	return e, nil
}

// Start loads the pages, resolves Graph calls left outstanding by a crash,
// re-arms the durable timers at their original deadlines and resumes
// sending queued contents. Pages set with SetPage before Start are kept.
func (e *Engine) Start(ctx context.Context) error {
	pages, err := e.store.Pages(ctx)
	if err != nil {
		return storeError(err, "loading pages")
	}
	e.pagesMu.Lock()
	for _, p := range pages {
		if _, set := e.pages[p.ID]; !set {
			e.pages[p.ID] = p
		}
	}
	e.pagesMu.Unlock()

	e.checkRouting(ctx)
	if err := e.recover(ctx); err != nil {
		return err
	}
	if err := e.loadAccepted(ctx); err != nil {
		return err
	}
	// Outstanding requests count in the pending gauge from the start: the
	// threads in pending-request, read from the state index.
	for f := (ListFilter{State: states.Pending, Limit: 500}); ; {
		threads, next, err := e.store.ListThreads(ctx, f)
		if err != nil {
			return storeError(err, "loading pending requests")
		}
		e.pendMu.Lock()
		for _, th := range threads {
			if th.Pending != nil {
				e.pending[th.Key()] = th.Pending.RequestedAt
			}
		}
		e.pendMu.Unlock()
		if next == "" {
			break
		}
		f.After = next
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.sched.run()
	}()
	e.spawn(e.pruner)
	if e.coord != nil {
		e.spawn(e.coordinate)
	}
	restored, err := e.store.Restored(ctx)
	if err != nil {
		return storeError(err, "reading the store's marks")
	}
	if restored {
		e.spawn(e.reconcile)
	}
	return nil
}

// Close stops the timers and waits for background work to finish.
func (e *Engine) Close() {
	e.once.Do(func() {
		e.cancel()
		e.sched.close()
		e.wg.Wait()
	})
}

// SetPage creates or replaces a page's settings (from configuration). A
// changed primary applies to later events. What Meta taught about the page
// (Learned) is kept.
func (e *Engine) SetPage(ctx context.Context, p Page) error {
	if err := validatePage(&p); err != nil {
		return err
	}
	e.learnMu.Lock()
	defer e.learnMu.Unlock()
	e.pagesMu.RLock()
	old, had := e.pages[p.ID]
	e.pagesMu.RUnlock()
	if !had {
		stored, err := e.store.Pages(ctx)
		if err != nil {
			return storeError(err, "loading pages")
		}
		for _, sp := range stored {
			if sp.ID == p.ID {
				old, had = sp, true
			}
		}
	}
	p.Learned = old.Learned
	p.UpdatedAt = e.clock.Now()
	if err := e.store.PutPage(ctx, p); err != nil {
		return storeError(err, "saving page "+p.ID)
	}
	e.pagesMu.Lock()
	e.pages[p.ID] = p
	e.pagesMu.Unlock()
	if had && old.Primary != p.Primary {
		e.log.Info("page primary changed", "page_id", p.ID, "from", old.Primary, "to", p.Primary, "cause", "config")
	}
	return nil
}

// ValidatePage checks a page's settings.
func ValidatePage(p Page) error { return validatePage(&p) }

func validatePage(p *Page) error {
	switch {
	case p.ID == "" || !isDigits(p.ID):
		return errorf(CodeInvalid, nil, "page_id %q must be a numeric Facebook page id", p.ID)
	case p.RingCXAppID == "" || !isDigits(p.RingCXAppID):
		return errorf(CodeInvalid, nil, "page %s: ringcx_app_id %q must be a numeric Facebook app id", p.ID, p.RingCXAppID)
	case slices.Contains(p.BotAppIDs, p.RingCXAppID):
		return errorf(CodeInvalid, nil, "page %s: the RingCX app %s cannot also be a bot app", p.ID, p.RingCXAppID)
	case p.Primary == states.PrimaryBot && len(p.BotAppIDs) == 0:
		return errorf(CodeInvalid, nil, "page %s: primary is bot but bot_app_ids is empty", p.ID)
	}
	if _, err := states.ParsePrimary(string(p.Primary)); err != nil {
		return errorf(CodeInvalid, nil, "page %s: %v", p.ID, err)
	}
	for _, id := range p.BotAppIDs {
		if !isDigits(id) {
			return errorf(CodeInvalid, nil, "page %s: bot app id %q must be numeric", p.ID, id)
		}
	}
	if p.PendingTimeout < 0 {
		return errorf(CodeInvalid, nil, "page %s: pending_timeout must not be negative", p.ID)
	}
	if p.Routing != "" {
		if _, err := states.ParseRouting(string(p.Routing)); err != nil {
			return errorf(CodeInvalid, nil, "page %s: %v", p.ID, err)
		}
	}
	return nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// Page returns a page's settings.
func (e *Engine) Page(id string) (Page, bool) {
	e.pagesMu.RLock()
	defer e.pagesMu.RUnlock()
	p, ok := e.pages[id]
	return p, ok
}

// Pages returns every page's settings, ordered by id.
func (e *Engine) Pages() []Page {
	e.pagesMu.RLock()
	out := make([]Page, 0, len(e.pages))
	for _, p := range e.pages {
		out = append(out, p)
	}
	e.pagesMu.RUnlock()
	slices.SortFunc(out, func(a, b Page) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

func (e *Engine) page(id string) (Page, error) {
	p, ok := e.Page(id)
	if !ok {
		return Page{}, errorf(CodeNotFound, nil, "page %s is not configured in threadctl", id)
	}
	return p, nil
}

// ChangePrimary applies Meta's app_roles webhook to a page: the app named
// primary_receiver becomes the page's primary; RingCX or the primary bot app
// becoming a secondary leaves the page without primary.
func (e *Engine) ChangePrimary(ctx context.Context, pageID string, roles map[string][]string) (states.Primary, error) {
	p, err := e.page(pageID)
	if err != nil {
		return "", err
	}
	// An app named primary wins; otherwise the primary app losing its role
	// leaves the page without one (Meta tells each app only its own role).
	old := p
	promoted := ""
	for app, rs := range roles {
		if slices.Contains(rs, "primary_receiver") && (app == p.RingCXAppID || p.IsBotApp(app)) {
			promoted = app
		}
	}
	switch {
	case promoted == p.RingCXAppID:
		p.Primary = states.PrimaryRingCX
	case promoted != "":
		p.Primary = states.PrimaryBot
		// The primary bot app is the first of the list.
		ids := slices.DeleteFunc(slices.Clone(p.BotAppIDs), func(s string) bool { return s == promoted })
		p.BotAppIDs = append([]string{promoted}, ids...)
	default:
		current := map[states.Primary]string{states.PrimaryRingCX: p.RingCXAppID, states.PrimaryBot: p.PrimaryBotApp()}[p.Primary]
		if _, named := roles[current]; named && current != "" {
			p.Primary = states.PrimaryNone
		}
	}
	if p.Primary == old.Primary && p.PrimaryBotApp() == old.PrimaryBotApp() {
		return p.Primary, nil
	}
	e.log.Info("page primary changed", "page_id", pageID, "from", old.Primary, "to", p.Primary, "primary_bot_app", p.PrimaryBotApp(), "cause", "app_roles")
	return p.Primary, e.SetPage(ctx, p)
}

// Thread returns a thread's record.
func (e *Engine) Thread(ctx context.Context, key ThreadKey) (Thread, error) {
	t, err := e.store.Thread(ctx, key)
	return t, readError(err, key)
}

// ThreadView reads a thread, its queued contents and up to limit history
// entries before revision before (0: the newest), as of one moment.
func (e *Engine) ThreadView(ctx context.Context, key ThreadKey, before uint64, limit int) (ThreadView, error) {
	v, err := e.store.ThreadView(ctx, key, before, limit)
	return v, readError(err, key)
}

// readError is the error of a read of thread key: not found, or the store's.
func readError(err error, key ThreadKey) error {
	if errors.Is(err, ErrNotFound) {
		return errorf(CodeNotFound, err, "no thread for identity %s on page %s", key.PSID, key.PageID)
	}
	return storeError(err, "reading thread")
}

// FindIdentity returns the thread key of a customer's identity_foreign_id.
func (e *Engine) FindIdentity(ctx context.Context, psid string) (ThreadKey, error) {
	if psid == "" {
		return ThreadKey{}, errorf(CodeInvalid, nil, "identity_foreign_id is required")
	}
	k, err := e.store.FindIdentity(ctx, psid)
	switch {
	case errors.Is(err, ErrNotFound):
		return k, errorf(CodeNotFound, err, "unknown identity %s: no Messenger thread with that identity_foreign_id has been seen", psid)
	case errors.Is(err, ErrAmbiguous):
		return k, errorf(CodeInvalid, err, "identity %s exists on several pages; give page_id", psid)
	}
	return k, storeError(err, "looking up identity")
}

// PendingRequests returns how many requests for control are outstanding and
// when the oldest was made.
func (e *Engine) PendingRequests() (n int, oldest time.Time) {
	e.pendMu.Lock()
	defer e.pendMu.Unlock()
	for _, at := range e.pending {
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	return len(e.pending), oldest
}

// isClosing reports whether Close has begun.
func (e *Engine) isClosing() bool { return e.ctx.Err() != nil }

// Now is the engine's clock.
func (e *Engine) Now() time.Time { return e.clock.Now() }

// background runs fn with a slot of the background semaphore, unless the
// engine is closing.
func (e *Engine) background(fn func(ctx context.Context)) {
	e.spawn(func(ctx context.Context) {
		select {
		case e.bg <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-e.bg }()
		fn(ctx)
	})
}

// spawn runs fn in its own goroutine, with a context that ends when the
// engine closes (Close waits for it), unless the engine is closing.
func (e *Engine) spawn(fn func(ctx context.Context)) {
	if e.isClosing() {
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		fn(e.ctx)
	}()
}

// newID returns a 24-hex-digit id that sorts by creation time.
func newID(now time.Time) string {
	var b [12]byte
	binary.BigEndian.PutUint32(b[:4], uint32(now.Unix()))
	if _, err := rand.Read(b[4:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// Ping reports whether the store answers, for readiness checks.
func (e *Engine) Ping(ctx context.Context) error {
	if _, err := e.store.StateCounts(ctx); err != nil {
		return storeError(err, "reading the store")
	}
	return nil
}

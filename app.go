package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/threadctl/threadctl/diagrams"
	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
	"github.com/threadctl/threadctl/store/etcd"
)

// App is a running threadctl: the store, the engine, the HTTP server and,
// without real pages, the simulator wired to it.
type App struct {
	cfg *Config
	log *slog.Logger

	store   engine.Store // db or etcd
	db      *store.DB    // with the bbolt backend
	etcd    *etcd.Store  // with the etcd backend
	engine  *engine.Engine
	metrics *server.Metrics
	server  *server.Server
	sim     *sim.Sim

	httpLn, simLn net.Listener
	simHTTP       *http.Server
	done          chan error
}

// Start opens everything and serves; Addr and SimURL tell where.
func Start(ctx context.Context, cfg *Config, log *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: log, done: make(chan error, 2)}
	if err := a.start(ctx); err != nil {
		a.Close(context.Background())
		return nil, err
	}
	return a, nil
}

func (a *App) start(ctx context.Context) error {
	cfg := a.cfg
	pages := cfg.Pages
	if cfg.demo() {
		pages = demoPages(cfg)
	}
	var err error
	if a.httpLn, err = net.Listen("tcp", cfg.Addr); err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Addr, err)
	}
	graphURL := cfg.Graph.BaseURL
	if cfg.simEnabled() {
		if a.simLn, err = net.Listen("tcp", cfg.SimAddr); err != nil {
			return fmt.Errorf("listening on %s for the simulator: %w", cfg.SimAddr, err)
		}
		a.sim = sim.New(sim.Options{Logger: a.log.With("component", "sim")})
		a.simHTTP = &http.Server{Handler: a.sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { a.done <- serveErr(a.simHTTP.Serve(a.simLn)) }()
		if graphURL == "" {
			graphURL = a.SimURL()
		}
	}

	a.metrics = server.NewMetrics(func() (int, time.Time) {
		if a.engine == nil {
			return 0, time.Time{}
		}
		return a.engine.PendingRequests()
	}, time.Now)
	if err := a.openStore(ctx); err != nil {
		return err
	}
	counts, err := a.store.StateCounts(ctx)
	if err != nil {
		return err
	}
	a.metrics.SetThreadCounts(counts)
	creds := map[string]messenger.Credentials{}
	var secrets []string
	for _, p := range pages {
		creds[p.PageID] = messenger.Credentials{AccessToken: p.PageToken, AppSecret: p.RingCXAppSecret}
		secrets = append(secrets, p.RingCXAppSecret)
	}
	graph := &messenger.Client{
		BaseURL: graphURL, Version: cfg.Graph.Version, Timeout: cfg.Graph.Timeout,
		HTTP:    &http.Client{Timeout: 2 * cfg.Graph.Timeout},
		Observe: a.metrics.GraphCall,
		Credentials: func(page string) (messenger.Credentials, bool) {
			c, ok := creds[page]
			return c, ok
		},
	}
	var coord engine.Coordinator
	if a.etcd != nil {
		coord = a.etcd
	}
	a.engine, err = engine.New(engine.Config{
		Store: a.store, Coordinator: coord, Graph: graph, Logger: a.log.With("component", "engine"),
		Observer: a.metrics, PendingTimeout: cfg.PendingTimeout,
		HistoryKeep: cfg.Retention.HistoryKeep, HistoryMaxAge: cfg.Retention.HistoryMaxAge,
		Retention: cfg.Retention.Records, PruneInterval: cfg.Retention.PruneInterval,
	})
	if err != nil {
		return err
	}
	for _, p := range pages {
		ep, err := p.enginePage(cfg.PendingTimeout)
		if err != nil {
			return err
		}
		if err := a.engine.SetPage(ctx, ep); err != nil {
			return err
		}
	}
	// The simulator gets its pages first: the engine's start-up recovery
	// may ask it who owns threads.
	if a.sim != nil {
		if err := a.configureSim(pages); err != nil {
			return err
		}
	}
	if err := a.engine.Start(ctx); err != nil {
		return err
	}
	scfg := server.Config{
		Engine: a.engine, APITokens: cfg.APITokens, Tokens: pageTokens(pages), VerifyToken: cfg.Webhook.VerifyToken,
		WebhookSecrets: secrets, Logger: a.log.With("component", "http"),
		Ready: a.engine.Ping, Metrics: a.metrics, Docs: recordedDocs(),
	}
	if a.db != nil {
		scfg.Backup = a.db.Backup // (an etcd cluster is backed up with etcdctl snapshot)
	}
	a.server, err = server.New(scfg)
	if err != nil {
		return err
	}
	go func() { a.done <- a.server.Serve(a.httpLn) }()
	where := []any{"data_dir", cfg.DataDir}
	if a.etcd != nil {
		where = []any{"etcd_endpoints", cfg.Store.EtcdEndpoints, "etcd_prefix", cfg.Store.EtcdPrefix, "instance", a.etcd.ID()}
	}
	a.log.Info("threadctl serving", append([]any{"addr", a.httpLn.Addr().String(), "store", cfg.Store.Backend, "pages", len(pages), "graph", graphURL}, where...)...)
	if a.sim != nil {
		a.log.Info("messenger simulator serving", "addr", a.simLn.Addr().String(), "demo", cfg.demo(), "primary", cfg.DemoPrimary, "routing", cfg.DemoRouting)
	}
	return nil
}

// openStore opens the configured store: the bbolt file in the data
// directory, or the etcd cluster.
func (a *App) openStore(ctx context.Context) error {
	cfg := a.cfg
	if cfg.Store.Backend == backendEtcd {
		tlsCfg, err := cfg.etcdTLS()
		if err != nil {
			return err
		}
		a.etcd, err = etcd.Open(ctx, etcd.Options{
			Endpoints: cfg.Store.EtcdEndpoints, Prefix: cfg.Store.EtcdPrefix, TLS: tlsCfg,
			Logger: a.log.With("component", "store"),
		})
		if err != nil {
			return err
		}
		a.store = a.etcd
		return nil
	}
	db, err := store.Open(cfg.DataDir, store.Options{OnCommit: a.metrics.StoreCommit, Logger: a.log.With("component", "store")})
	if err != nil {
		return err
	}
	a.db, a.store = db, db
	a.metrics.ObserveStore(func() server.StoreStats {
		st := db.Stats()
		return server.StoreStats{LogAppends: st.Log.Appends, LogRecords: st.Log.Records, LogSyncs: st.Log.Syncs, LogBytes: st.Log.Bytes,
			Checkpoints: st.Checkpoints, PageWrites: st.PageWrites, LayerKeys: st.LayerKeys}
	})
	return nil
}

// pageTokens are the pages' own API tokens, each acting on its page only.
func pageTokens(pages []PageConfig) []server.Token {
	var out []server.Token
	for _, p := range pages {
		for _, t := range p.APITokens {
			out = append(out, server.Token{Secret: t, Pages: []string{p.PageID}})
		}
	}
	return out
}

func serveErr(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// configureSim gives the simulator each page, with the RingCX app's webhooks
// pointed at this service.
func (a *App) configureSim(pages []PageConfig) error {
	callback := "http://" + loopback(a.httpLn.Addr()) + "/webhooks/messenger"
	for _, p := range pages {
		takeover := a.cfg.DemoTakeover
		if !a.cfg.demo() {
			takeover = p.RingCXTakeover == nil || *p.RingCXTakeover
		}
		if err := a.sim.PutPage(simPage(p, takeover, callback, a.cfg.Webhook.VerifyToken)); err != nil {
			return fmt.Errorf("simulator page %s: %w", p.PageID, err)
		}
	}
	return nil
}

// simPage is a configured page as the simulator sees it: mode hop_v2, or on
// Conversation Routing cr (cr_zero without a default app) with the RingCX
// app's takeover setting; the RingCX app whose webhooks go to callback; and
// a reference bot per bot app, which echoes, passes control when asked, and
// on Conversation Routing passes it to RingCX by itself when the customer
// asks for an agent (diagrams.HandoverText). The demo's bot has the demo
// token and secret; other bots get bot-<app id>-page-token and
// bot-<app id>-secret.
func simPage(p PageConfig, takeover bool, callback, verifyToken string) sim.PageConfig {
	fields := []string{"messages", "messaging_handovers", "standby"}
	cr := p.Routing == string(states.ConversationRouting)
	pc := sim.PageConfig{PageID: p.PageID, Mode: "hop_v2"}
	switch states.Primary(p.Primary) {
	case states.PrimaryBot:
		pc.PrimaryAppID = p.BotAppIDs[0]
	case states.PrimaryRingCX:
		pc.PrimaryAppID = p.RingCXAppID
	}
	switch {
	case cr && pc.PrimaryAppID == "":
		pc.Mode = "cr_zero"
	case cr:
		pc.Mode = "cr"
	}
	ringcx := sim.AppConfig{
		AppID: p.RingCXAppID, Name: "RingCX", AccessToken: p.PageToken, AppSecret: p.RingCXAppSecret,
		CallbackURL: callback, VerifyToken: verifyToken, Fields: fields,
	}
	if cr {
		ringcx.TakeoverAllowed = &takeover
	}
	pc.Apps = append(pc.Apps, ringcx)
	for i, id := range p.BotAppIDs {
		token, secret := "bot-"+id+"-page-token", "bot-"+id+"-secret"
		if p.PageID == demoPageID && id == demoBotAppID {
			token, secret = demoBotToken, demoBotSecret
		}
		bot := &sim.BotConfig{HonorRequests: true, Reply: "echo"}
		if cr {
			bot.HandoverText, bot.HandoverAppID, bot.HandoverVia = diagrams.HandoverText, p.RingCXAppID, "send_api"
		}
		pc.Apps = append(pc.Apps, sim.AppConfig{
			AppID: id, Name: fmt.Sprintf("Bot %d", i+1), AccessToken: token, AppSecret: secret, Fields: fields, Bot: bot,
		})
	}
	return pc
}

// loopback is addr with an unspecified host replaced by 127.0.0.1.
func loopback(addr net.Addr) string {
	host, port, _ := net.SplitHostPort(addr.String())
	if ip := net.ParseIP(host); host == "" || ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Addr is the HTTP address threadctl listens on.
func (a *App) Addr() string { return a.httpLn.Addr().String() }

// SimURL is the simulator's base URL, or "".
func (a *App) SimURL() string {
	if a.simLn == nil {
		return ""
	}
	return "http://" + loopback(a.simLn.Addr())
}

// Wait returns when a server stops on its own (an error) or ctx ends.
func (a *App) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-a.done:
		return err
	}
}

// Close shuts down in order: HTTP (waiting for requests in flight), the
// engine (timers, background sends), the simulator, then the store.
func (a *App) Close(ctx context.Context) error {
	var errs []error
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if a.server != nil {
		errs = append(errs, a.server.Shutdown(ctx))
	} else if a.httpLn != nil {
		a.httpLn.Close()
	}
	if a.engine != nil {
		a.engine.Close()
	}
	if a.simHTTP != nil {
		errs = append(errs, a.simHTTP.Shutdown(ctx))
	} else if a.simLn != nil {
		a.simLn.Close()
	}
	if a.sim != nil {
		a.sim.Close()
	}
	if a.db != nil {
		errs = append(errs, a.db.Close())
	}
	if a.etcd != nil {
		errs = append(errs, a.etcd.Close())
	}
	return errors.Join(errs...)
}

func newLogger(cfg *Config, w interface{ Write([]byte) (int, error) }) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel)))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

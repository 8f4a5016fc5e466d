package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store/etcd"
)

// Defaults, each written once: the flags show them, the demo relies on
// them (SPEC.md §7), and the commands that talk to a running threadctl or
// simulator find them there.
const (
	defaultHTTPPort       = "8080"
	defaultAddr           = ":" + defaultHTTPPort
	defaultServerURL      = "http://127.0.0.1:" + defaultHTTPPort
	defaultCallbackURL    = defaultServerURL + "/webhooks/messenger"
	defaultSimAddr        = "127.0.0.1:8081"
	defaultSimURL         = "http://" + defaultSimAddr
	defaultDataDir        = "./data"
	defaultDemoPrimary    = states.PrimaryBot
	defaultDemoRouting    = "hop"
	defaultDemoTakeover   = "on"
	defaultPendingTimeout = 60 * time.Second
	defaultLogLevel       = "info"
	defaultLogFormat      = "text"
	defaultGraphVersion   = messenger.DefaultVersion
	defaultGraphTimeout   = messenger.DefaultTimeout
	// defaultGraphURL is Meta's, used when the simulator is off.
	defaultGraphURL = messenger.DefaultBaseURL
)

// Demo defaults (SPEC.md §7): fixed so that examples and tests rely on them.
const (
	demoPageID      = "100000000000001"
	demoRingCXAppID = "200000000000001"
	demoBotAppID    = "300000000000001"
	demoAPIToken    = "dev-token"
	demoVerifyToken = "dev-verify"
	demoRingCXToken = "ringcx-page-token"
	demoBotToken    = "bot-page-token"
	demoRingCXSec   = "ringcx-secret"
	demoBotSecret   = "bot-secret"
)

// Config is threadctl's configuration: the YAML file's fields (their names
// are part of the contract), overridden by THREADCTL_* variables and flags.
// Every secret may instead come from a file (<name>_file) or an
// environment variable (<name>_env); resolveSecrets reads them into the
// value fields.
type Config struct {
	Addr          string       `yaml:"addr"`
	DataDir       string       `yaml:"data_dir"`
	APITokens     tokenList    `yaml:"api_tokens"` // global: every page, every endpoint
	APITokensFile string       `yaml:"api_tokens_file"`
	APITokensEnv  string       `yaml:"api_tokens_env"`
	Graph         GraphConfig  `yaml:"graph"`
	Retention     Retention    `yaml:"retention"`
	Webhook       WebhookCfg   `yaml:"webhook"`
	Pages         []PageConfig `yaml:"pages"`
	Store         StoreConfig  `yaml:"store"`

	// Flags and variables only.
	SimAddr     string         `yaml:"-"`
	DemoPrimary states.Primary `yaml:"-"`
	DemoRouting states.Routing `yaml:"-"`
	// DemoTakeover is the demo page's takeover setting for the RingCX app
	// at Meta (the simulator) on Conversation Routing; threadctl is not
	// told it and learns it.
	DemoTakeover   bool          `yaml:"-"`
	PendingTimeout time.Duration `yaml:"-"`
	LogLevel       string        `yaml:"-"`
	LogFormat      string        `yaml:"-"`

	dir string // the config file's directory: relative secret files are in it
	// etcdEndpoints is --etcd-endpoints (THREADCTL_ETCD_ENDPOINTS) as
	// given: a comma-separated list that replaces store.etcd_endpoints.
	etcdEndpoints string
}

// GraphConfig is where Meta's Graph API is.
type GraphConfig struct {
	BaseURL string        `yaml:"base_url"`
	Version string        `yaml:"version"`
	Timeout time.Duration `yaml:"timeout"`
}

// Retention is what threadctl keeps, and for how long.
type Retention struct {
	// HistoryKeep is how many of each thread's newest history entries are
	// kept (default 100; -1: all); HistoryMaxAge, if set, also drops older
	// entries (each thread keeps its newest).
	HistoryKeep   int           `yaml:"history_keep"`
	HistoryMaxAge time.Duration `yaml:"history_max_age"`
	// Records is how long synced or failed contents and closed
	// interventions are kept (default 720h, 30 days; -1ns: for ever).
	Records time.Duration `yaml:"records"`
	// PruneInterval is how often the background pruner runs (default 1m).
	PruneInterval time.Duration `yaml:"prune_interval"`
}

// WebhookCfg is Meta's webhook subscription.
type WebhookCfg struct {
	VerifyToken     string `yaml:"verify_token"`
	VerifyTokenFile string `yaml:"verify_token_file"`
	VerifyTokenEnv  string `yaml:"verify_token_env"`
}

// PageConfig is one Facebook page connected to RingCX.
type PageConfig struct {
	PageID              string        `yaml:"page_id"`
	Primary             string        `yaml:"primary"`
	RingCXAppID         string        `yaml:"ringcx_app_id"`
	RingCXAppSecret     string        `yaml:"ringcx_app_secret"`
	RingCXAppSecretFile string        `yaml:"ringcx_app_secret_file"`
	RingCXAppSecretEnv  string        `yaml:"ringcx_app_secret_env"`
	PageToken           string        `yaml:"page_token"`
	PageTokenFile       string        `yaml:"page_token_file"`
	PageTokenEnv        string        `yaml:"page_token_env"`
	BotAppIDs           []string      `yaml:"bot_app_ids"`
	PendingTimeout      time.Duration `yaml:"pending_timeout"`
	// Routing is handover_protocol or conversation_routing; empty leaves it
	// to Meta (asked at start, learned from refusals).
	Routing string `yaml:"routing"`
	// RingCXTakeover is the page's takeover setting for the RingCX app on
	// Conversation Routing pages (Page Settings → Advanced Messaging);
	// unset, threadctl assumes it is on until Meta refuses a take.
	RingCXTakeover *bool `yaml:"ringcx_takeover"`
	// APITokens act only on this page's threads.
	APITokens     tokenList `yaml:"api_tokens"`
	APITokensFile string    `yaml:"api_tokens_file"`
	APITokensEnv  string    `yaml:"api_tokens_env"`
}

// demo reports whether threadctl runs its demo: no page configured.
func (c *Config) demo() bool { return len(c.Pages) == 0 }

// simEnabled reports whether threadctl starts the simulator.
func (c *Config) simEnabled() bool { return c.SimAddr != "off" && c.SimAddr != "" }

// defaultConfig is the configuration with every default and no page.
func defaultConfig() *Config {
	return &Config{
		Addr: defaultAddr, DataDir: defaultDataDir, SimAddr: defaultSimAddr,
		DemoPrimary: defaultDemoPrimary, DemoRouting: states.HandoverProtocol, DemoTakeover: true,
		PendingTimeout: defaultPendingTimeout,
		LogLevel:       defaultLogLevel, LogFormat: defaultLogFormat,
		Graph: GraphConfig{Version: defaultGraphVersion, Timeout: defaultGraphTimeout},
		Store: StoreConfig{Backend: backendBbolt, EtcdPrefix: etcd.DefaultPrefix},
	}
}

// serveSettings declares serve's flags and variables on cfg.
func serveSettings(cfg *Config, configPath, demoPrimary, demoRouting, demoTakeover *string) *settings {
	s := newSettings("serve")
	s.String(configPath, "config", "YAML file with pages, tokens and the Graph API for production")
	s.String(&cfg.Addr, "addr", "HTTP listen address")
	s.String(&cfg.DataDir, "data-dir", "directory of the bbolt file")
	s.String(&cfg.Store.Backend, "store", "where records are kept: bbolt (a file in --data-dir, one instance) or etcd (a cluster several instances share; store.backend)")
	s.String(&cfg.etcdEndpoints, "etcd-endpoints", "with --store etcd: the cluster's client URLs, comma-separated (store.etcd_endpoints)")
	s.String(&cfg.Store.EtcdPrefix, "etcd-prefix", "with --store etcd: the prefix of threadctl's keys (store.etcd_prefix)")
	s.String(&cfg.SimAddr, "sim-addr", `listen address of the Messenger simulator, or "off" (implied when a Graph base URL is given)`)
	s.String(demoPrimary, "demo-primary", "primary app of the demo page (its default app with --demo-routing cr): bot, ringcx or none")
	s.String(demoRouting, "demo-routing", "routing of the demo page: hop (the Handover Protocol, as in the seed) or cr (Conversation Routing)")
	s.String(demoTakeover, "demo-takeover", "with --demo-routing cr: the demo page's takeover setting for the RingCX app at Meta, on or off (threadctl learns it)")
	s.Duration(&cfg.PendingTimeout, "pending-timeout", "how long a request for control waits for the owner to pass (pages that set none)")
	s.String(&cfg.Graph.BaseURL, "graph-base-url", "Meta's Graph API (graph.base_url; default: the simulator, or "+defaultGraphURL+" when it is off)")
	s.String(&cfg.Graph.Version, "graph-version", "Graph API version (graph.version)")
	s.Duration(&cfg.Graph.Timeout, "graph-timeout", "timeout of one Graph API call (graph.timeout)")
	s.String(&cfg.LogLevel, "log-level", "debug, info, warn or error")
	s.String(&cfg.LogFormat, "log-format", "text or json")
	return s
}

// loadConfig builds the configuration of `threadctl serve`: defaults, then
// the YAML file (--config or THREADCTL_CONFIG), then THREADCTL_* variables,
// then flags.
func loadConfig(args []string) (*Config, error) {
	cfg := defaultConfig()
	var path string
	primary, routing, takeover := string(cfg.DemoPrimary), defaultDemoRouting, defaultDemoTakeover
	s := serveSettings(cfg, &path, &primary, &routing, &takeover)
	var apiTokens, verifyToken string
	s.Env(&apiTokens, "THREADCTL_API_TOKENS", "global API tokens, comma-separated (instead of api_tokens)")
	s.Env(&verifyToken, "THREADCTL_VERIFY_TOKEN", "the webhook verify token (instead of webhook.verify_token)")
	rest, err := s.parse(args)
	if err != nil {
		return nil, err
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("serve takes no arguments, got %q", rest)
	}
	if path != "" {
		if err := cfg.readFile(path); err != nil {
			return nil, err
		}
		// Flags and variables win over the file.
		s.apply()
	}
	// A variable replaces the secret with all of its sources in the file.
	if apiTokens != "" {
		cfg.APITokens, cfg.APITokensFile, cfg.APITokensEnv = splitList(apiTokens), "", ""
	}
	if verifyToken != "" {
		cfg.Webhook = WebhookCfg{VerifyToken: verifyToken}
	}
	if s.given("etcd-endpoints") {
		cfg.Store.EtcdEndpoints = splitList(cfg.etcdEndpoints)
	}
	if cfg.Graph.BaseURL != "" && !s.given("sim-addr") {
		cfg.SimAddr = "off"
	}
	p, err := states.ParsePrimary(primary)
	if err != nil {
		return nil, fmt.Errorf("--demo-primary: %w", err)
	}
	cfg.DemoPrimary = p
	if cfg.DemoRouting, err = parseDemoRouting(routing); err != nil {
		return nil, err
	}
	switch takeover {
	case "on", "off":
		cfg.DemoTakeover = takeover == "on"
	default:
		return nil, fmt.Errorf("--demo-takeover %q: use on or off", takeover)
	}
	errs := cfg.resolveSecrets(os.LookupEnv)
	cfg.applyDefaults()
	return cfg, cfg.validate(errs...)
}

// parseDemoRouting reads --demo-routing: hop or cr, or a routing's name.
func parseDemoRouting(s string) (states.Routing, error) {
	switch s {
	case "hop":
		return states.HandoverProtocol, nil
	case "cr":
		return states.ConversationRouting, nil
	}
	r, err := states.ParseRouting(s)
	if err != nil {
		return "", fmt.Errorf("--demo-routing %q: use hop or cr", s)
	}
	return r, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (c *Config) readFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("config %s: %w", path, scrubYAMLError(err))
	}
	c.dir = filepath.Dir(path)
	return nil
}

// applyDefaults fills what is left empty. The demo API token is a default
// only while no token is configured at all: page tokens alone leave no
// global token.
func (c *Config) applyDefaults() {
	if len(c.APITokens) == 0 && !c.pageTokens() {
		c.APITokens = tokenList{demoAPIToken}
	}
	if c.Webhook.VerifyToken == "" {
		c.Webhook.VerifyToken = demoVerifyToken
	}
	if c.Graph.Version == "" {
		c.Graph.Version = defaultGraphVersion
	}
	if c.Graph.Timeout == 0 {
		c.Graph.Timeout = defaultGraphTimeout
	}
	if !c.simEnabled() && c.Graph.BaseURL == "" {
		c.Graph.BaseURL = defaultGraphURL
	}
}

// pageTokens reports whether a page has its own API tokens.
func (c *Config) pageTokens() bool {
	return slices.ContainsFunc(c.Pages, func(p PageConfig) bool { return len(p.APITokens) > 0 })
}

// validate reports every problem of the configuration at once, after
// those given.
func (c *Config) validate(errs ...error) error {
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Addr == "" {
		bad("addr is empty: give a listen address such as %s", defaultAddr)
	}
	errs = append(errs, c.validateStore()...)
	if c.PendingTimeout <= 0 {
		bad("pending-timeout must be positive, got %s", c.PendingTimeout)
	}
	if r := c.Retention; r.HistoryKeep < -1 || r.HistoryMaxAge < 0 || r.PruneInterval < 0 {
		bad("retention: history_keep must be -1 (all), 0 (the default, 100) or more, and history_max_age and prune_interval not negative")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("log-level %q: use debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log-format %q: use text or json", c.LogFormat)
	}
	for i, t := range c.APITokens {
		if err := server.CheckToken(t); err != nil {
			bad("api_tokens[%d]: %v", i, err)
		}
	}
	if !c.simEnabled() && c.demo() {
		bad("no page is configured and the simulator is off: give pages in --config or drop --sim-addr=off for the demo")
	}
	seen := map[string]bool{}
	for i, p := range c.Pages {
		where := pageWhere(i, p.PageID)
		if seen[p.PageID] {
			bad("%s: page_id appears twice", where)
		}
		seen[p.PageID] = true
		ep, err := p.enginePage(c.PendingTimeout)
		if err == nil {
			err = engine.ValidatePage(ep)
		}
		if err != nil {
			bad("%s: %v", where, err)
		}
		if p.PageToken == "" && p.PageTokenFile == "" && p.PageTokenEnv == "" {
			bad("%s: page_token is required (the RingCX app's page access token; or page_token_file, page_token_env)", where)
		}
		if p.RingCXAppSecret == "" && p.RingCXAppSecretFile == "" && p.RingCXAppSecretEnv == "" {
			bad("%s: ringcx_app_secret is required (webhook signatures are checked with it; or ringcx_app_secret_file, ringcx_app_secret_env)", where)
		}
		for j, t := range p.APITokens {
			if err := server.CheckToken(t); err != nil {
				bad("%s: api_tokens[%d]: %v", where, j, err)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid configuration:\n  %w", joinLines(errs))
	}
	return nil
}

func joinLines(errs []error) error {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return errors.New(strings.Join(msgs, "\n  "))
}

func (p PageConfig) enginePage(defaultPending time.Duration) (engine.Page, error) {
	primary, err := states.ParsePrimary(p.Primary)
	if err != nil {
		return engine.Page{}, fmt.Errorf("primary: %w", err)
	}
	pending := p.PendingTimeout
	if pending == 0 {
		pending = defaultPending
	}
	var routing states.Routing
	if p.Routing != "" {
		if routing, err = states.ParseRouting(p.Routing); err != nil {
			return engine.Page{}, fmt.Errorf("routing: %w", err)
		}
	}
	return engine.Page{ID: p.PageID, Primary: primary, RingCXAppID: p.RingCXAppID, BotAppIDs: p.BotAppIDs, PendingTimeout: pending,
		Routing: routing, Takeover: p.RingCXTakeover}, nil
}

// demoPages is the demo page of SPEC.md §7 as configuration, with cfg's
// primary and routing. Its takeover setting is left for threadctl to learn.
func demoPages(cfg *Config) []PageConfig {
	return []PageConfig{{
		PageID: demoPageID, Primary: string(cfg.DemoPrimary), Routing: string(cfg.DemoRouting), RingCXAppID: demoRingCXAppID,
		RingCXAppSecret: demoRingCXSec, PageToken: demoRingCXToken,
		BotAppIDs: []string{demoBotAppID}, PendingTimeout: cfg.PendingTimeout,
	}}
}

package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
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
type Config struct {
	Addr      string       `yaml:"addr"`
	DataDir   string       `yaml:"data_dir"`
	APITokens []string     `yaml:"api_tokens"`
	Graph     GraphConfig  `yaml:"graph"`
	Webhook   WebhookCfg   `yaml:"webhook"`
	Pages     []PageConfig `yaml:"pages"`

	// Flags and variables only.
	SimAddr        string         `yaml:"-"`
	DemoPrimary    states.Primary `yaml:"-"`
	PendingTimeout time.Duration  `yaml:"-"`
	LogLevel       string         `yaml:"-"`
	LogFormat      string         `yaml:"-"`
}

// GraphConfig is where Meta's Graph API is.
type GraphConfig struct {
	BaseURL string        `yaml:"base_url"`
	Version string        `yaml:"version"`
	Timeout time.Duration `yaml:"timeout"`
}

// WebhookCfg is Meta's webhook subscription.
type WebhookCfg struct {
	VerifyToken string `yaml:"verify_token"`
}

// PageConfig is one Facebook page connected to RingCX.
type PageConfig struct {
	PageID          string        `yaml:"page_id"`
	Primary         string        `yaml:"primary"`
	RingCXAppID     string        `yaml:"ringcx_app_id"`
	RingCXAppSecret string        `yaml:"ringcx_app_secret"`
	PageToken       string        `yaml:"page_token"`
	BotAppIDs       []string      `yaml:"bot_app_ids"`
	PendingTimeout  time.Duration `yaml:"pending_timeout"`
}

// demo reports whether threadctl runs its demo: no page configured.
func (c *Config) demo() bool { return len(c.Pages) == 0 }

// simEnabled reports whether threadctl starts the simulator.
func (c *Config) simEnabled() bool { return c.SimAddr != "off" && c.SimAddr != "" }

// loadConfig builds the configuration of `threadctl serve`: defaults, then
// the YAML file (--config or THREADCTL_CONFIG), then THREADCTL_* variables,
// then flags.
func loadConfig(args []string) (*Config, error) {
	cfg := &Config{
		Addr: ":8080", DataDir: "./data", SimAddr: "127.0.0.1:8081",
		DemoPrimary: states.PrimaryBot, PendingTimeout: 60 * time.Second,
		LogLevel: "info", LogFormat: "text",
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	configPath := fs.String("config", "", "YAML file with pages, tokens and the Graph API for production")
	addr := fs.String("addr", cfg.Addr, "HTTP listen address")
	dataDir := fs.String("data-dir", cfg.DataDir, "directory of the bbolt file")
	simAddr := fs.String("sim-addr", cfg.SimAddr, `listen address of the Messenger simulator, or "off"`)
	demoPrimary := fs.String("demo-primary", string(cfg.DemoPrimary), "primary app of the demo page: bot, ringcx or none")
	pending := fs.Duration("pending-timeout", cfg.PendingTimeout, "how long a request for control waits for the owner to pass (pages that set none)")
	logLevel := fs.String("log-level", cfg.LogLevel, "debug, info, warn or error")
	logFormat := fs.String("log-format", cfg.LogFormat, "text or json")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	path := *configPath
	if !set["config"] {
		path = os.Getenv("THREADCTL_CONFIG")
	}
	if path != "" {
		if err := cfg.readFile(path); err != nil {
			return nil, err
		}
		if cfg.Graph.BaseURL != "" {
			cfg.SimAddr = "off"
		}
	}
	// Environment, then flags: each setting's later source wins.
	str := func(name string, flagVal *string, dst *string) {
		if v, ok := os.LookupEnv("THREADCTL_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))); ok {
			*dst = v
		}
		if set[name] {
			*dst = *flagVal
		}
	}
	str("addr", addr, &cfg.Addr)
	str("data-dir", dataDir, &cfg.DataDir)
	str("sim-addr", simAddr, &cfg.SimAddr)
	str("log-level", logLevel, &cfg.LogLevel)
	str("log-format", logFormat, &cfg.LogFormat)
	primary := string(cfg.DemoPrimary)
	str("demo-primary", demoPrimary, &primary)
	p, err := states.ParsePrimary(primary)
	if err != nil {
		return nil, fmt.Errorf("--demo-primary: %w", err)
	}
	cfg.DemoPrimary = p
	pendingStr := ""
	if v, ok := os.LookupEnv("THREADCTL_PENDING_TIMEOUT"); ok {
		pendingStr = v
	}
	if pendingStr != "" {
		d, err := time.ParseDuration(pendingStr)
		if err != nil {
			return nil, fmt.Errorf("THREADCTL_PENDING_TIMEOUT=%q: %w", pendingStr, err)
		}
		cfg.PendingTimeout = d
	}
	if set["pending-timeout"] {
		cfg.PendingTimeout = *pending
	}
	if v, ok := os.LookupEnv("THREADCTL_API_TOKENS"); ok {
		cfg.APITokens = splitList(v)
	}
	if v, ok := os.LookupEnv("THREADCTL_VERIFY_TOKEN"); ok {
		cfg.Webhook.VerifyToken = v
	}
	if v, ok := os.LookupEnv("THREADCTL_GRAPH_BASE_URL"); ok {
		cfg.Graph.BaseURL = v
	}
	cfg.applyDefaults()
	return cfg, cfg.validate()
}

// parseFlags parses args, turning the flag package's errors into one line
// that names the flag and lists the valid ones.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return errHelp{fs}
	}
	if err != nil {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
		return fmt.Errorf("%s: %v (flags: %s)", fs.Name(), err, strings.Join(names, " "))
	}
	return nil
}

// errHelp asks for a command's usage.
type errHelp struct{ fs *flag.FlagSet }

func (e errHelp) Error() string { return "help requested" }

func (e errHelp) usage() string {
	var b strings.Builder
	e.fs.SetOutput(&b)
	fmt.Fprintf(&b, "Usage of threadctl %s:\n", e.fs.Name())
	e.fs.PrintDefaults()
	return b.String()
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
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

func (c *Config) applyDefaults() {
	if len(c.APITokens) == 0 {
		c.APITokens = []string{demoAPIToken}
	}
	if c.Webhook.VerifyToken == "" {
		c.Webhook.VerifyToken = demoVerifyToken
	}
	if c.Graph.Version == "" {
		c.Graph.Version = "v19.0"
	}
	if c.Graph.Timeout == 0 {
		c.Graph.Timeout = 5 * time.Second
	}
	if !c.simEnabled() && c.Graph.BaseURL == "" {
		c.Graph.BaseURL = "https://graph.facebook.com"
	}
}

// validate reports every problem of the configuration at once.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Addr == "" {
		bad("addr is empty: give a listen address such as :8080")
	}
	if c.DataDir == "" {
		bad("data_dir is empty: give the directory of the bbolt file")
	}
	if c.PendingTimeout <= 0 {
		bad("pending-timeout must be positive, got %s", c.PendingTimeout)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("log-level %q: use debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log-format %q: use text or json", c.LogFormat)
	}
	for _, t := range c.APITokens {
		if strings.TrimSpace(t) == "" {
			bad("api_tokens has an empty token")
		}
	}
	if !c.simEnabled() && c.demo() {
		bad("no page is configured and the simulator is off: give pages in --config or drop --sim-addr=off for the demo")
	}
	seen := map[string]bool{}
	for i, p := range c.Pages {
		where := fmt.Sprintf("pages[%d]", i)
		if p.PageID != "" {
			where += " (" + p.PageID + ")"
		}
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
		if p.PageToken == "" {
			bad("%s: page_token is required (the RingCX app's page access token)", where)
		}
		if p.RingCXAppSecret == "" {
			bad("%s: ringcx_app_secret is required (webhook signatures are checked with it)", where)
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
	return engine.Page{ID: p.PageID, Primary: primary, RingCXAppID: p.RingCXAppID, BotAppIDs: p.BotAppIDs, PendingTimeout: pending}, nil
}

// demoPages is the demo page of SPEC.md §7 as configuration.
func demoPages(primary states.Primary, pending time.Duration) []PageConfig {
	return []PageConfig{{
		PageID: demoPageID, Primary: string(primary), RingCXAppID: demoRingCXAppID,
		RingCXAppSecret: demoRingCXSec, PageToken: demoRingCXToken,
		BotAppIDs: []string{demoBotAppID}, PendingTimeout: pending,
	}}
}

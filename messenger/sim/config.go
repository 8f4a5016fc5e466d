package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Page modes: the rule set a page follows (reference §0).
const (
	// ModeHOPv1 is the original Handover Protocol: a Primary Receiver is required and owns new
	// threads, only it may take control, and control never expires.
	ModeHOPv1 = "hop_v1"
	// ModeHOPv2 is the Handover Protocol since March 2022 (the default): the Primary Receiver is
	// optional, threads without an owner are idle, control expires after 24 h without activity.
	ModeHOPv2 = "hop_v2"
	// ModeCR is Conversation Routing with a default app (primary_app_id).
	ModeCR = "cr"
	// ModeCRZero is Conversation Routing without a default app ("zero-config").
	ModeCRZero = "cr_zero"
)

// PageInboxAppID is the app id of the Facebook Page Inbox. The simulator treats it as connected
// to every page: control may be passed to it (and it may be a page's primary or default app), but
// it receives no webhooks.
const PageInboxAppID = "263902037430900"

// Webhook subscription fields the simulator acts on. Other known Messenger fields are accepted
// in a config and have no effect.
const (
	// FieldMessages delivers customer messages in messaging (to the owner, or to every app
	// on an idle thread that no app is routed to).
	FieldMessages = "messages"
	// FieldHandovers delivers pass/take/request_thread_control, pass_thread_metadata and
	// app_roles, always in messaging.
	FieldHandovers = "messaging_handovers"
	// FieldStandby delivers customer messages (and echoes, with FieldEchoes) to the apps that
	// do not own the thread.
	FieldStandby = "standby"
	// FieldEchoes delivers the echoes of messages sent with the Send API.
	FieldEchoes = "message_echoes"
	// aliasHandovers is how the Conversation Routing docs spell FieldHandovers.
	aliasHandovers = "messaging_handover"
)

const (
	controlWindow   = 24 * time.Hour // control expires this long after the last activity
	maxExtendS      = 7 * 24 * 60 * 60
	maxTextRunes    = 2000
	maxBatchEntries = 50
	maxPassDelayMS  = 10 * 60 * 1000
)

// defaultFields is what an app subscribes to when its config omits "fields": what Meta asks
// every app on a page to subscribe to.
var defaultFields = []string{FieldMessages, FieldHandovers, FieldStandby}

var knownFields = []string{
	FieldMessages, FieldHandovers, FieldStandby, FieldEchoes,
	"messaging_postbacks", "messaging_optins", "messaging_referrals", "message_deliveries",
	"message_reads", "message_reactions", "messaging_account_linking",
	"messaging_policy_enforcement", "messaging_feedback", "messaging_game_plays",
}

// PageConfig is one Facebook page in the simulator: its rule set and the apps connected to it.
// Its JSON form is the body of PUT /_sim/pages/{page_id}.
type PageConfig struct {
	// PageID is the page's numeric id. PUT /_sim/pages/{page_id} takes it from the path.
	PageID string `json:"page_id"`
	// Mode is one of ModeHOPv1, ModeHOPv2 (the default when empty), ModeCR, ModeCRZero.
	Mode string `json:"mode"`
	// PrimaryAppID is the Primary Receiver (hop_v1, hop_v2) or the default app (cr); empty for
	// none. hop_v1 and cr need one, cr_zero must have none.
	PrimaryAppID string `json:"primary_app_id"`
	// AppIDsAsStrings makes webhooks carry app ids as JSON strings; by default they are JSON
	// numbers, as production Messenger sends them.
	AppIDsAsStrings bool `json:"app_ids_as_strings,omitempty"`
	// Apps are the apps connected (subscribed) to the page.
	Apps []AppConfig `json:"apps"`
}

// AppConfig is one Facebook app connected to a page: its page access token, its secret, where
// its webhooks go and what they carry.
type AppConfig struct {
	AppID string `json:"app_id"`
	Name  string `json:"name"`
	// AccessToken is the app's page access token; it identifies (app, page) on Graph calls and
	// must be unique across the simulator.
	AccessToken string `json:"access_token"`
	// AppSecret signs the app's webhooks and checks its appsecret_proof.
	AppSecret   string `json:"app_secret"`
	CallbackURL string `json:"callback_url"`
	// VerifyToken is sent in the webhook verification handshake (VerifyWebhook).
	VerifyToken string `json:"verify_token"`
	// Fields are the webhook subscription fields; nil means messages, messaging_handovers and
	// standby, an empty list means none.
	Fields []string `json:"fields"`
	// TakeoverAllowed is the per-app takeover setting of Conversation Routing (cr mode only);
	// nil means true for the default app and false for the others.
	TakeoverAllowed *bool `json:"takeover_allowed,omitempty"`
	// Bot, when set, makes this app the reference bot, run inside the simulator; such an app
	// has no callback_url.
	Bot *BotConfig `json:"bot"`
}

// BotConfig configures the reference bot: an app the simulator runs itself, which behaves as
// the RingCX Bots API asks of bots.
type BotConfig struct {
	// HonorRequests makes the bot pass control to an app that sends it request_thread_control.
	HonorRequests bool `json:"honor_requests"`
	// PassDelayMS is how long the bot waits before honouring a request.
	PassDelayMS int `json:"pass_delay_ms"`
	// Reply is "echo" to answer each customer message with "echo: <text>", or "" for silence.
	Reply string `json:"reply"`
	// ClaimIdle (nil means true) makes the bot call request_thread_control when a customer
	// message arrives on an idle thread, which grants it control, before replying.
	ClaimIdle *bool `json:"claim_idle,omitempty"`
	// HandoverText makes the bot hand the thread over by itself, as a Conversation Routing bot
	// does (it does not wait for a request): when a customer message containing this text
	// (case-sensitive substring) reaches the bot in messaging while the bot owns the thread,
	// the bot passes control to HandoverAppID instead of replying. Empty: never.
	HandoverText string `json:"handover_text,omitempty"`
	// HandoverAppID is the app the bot passes control to (required with HandoverText): an app
	// of the page other than the bot, or the Page Inbox. A string or a number in JSON.
	HandoverAppID string `json:"handover_app_id,omitempty"`
	// HandoverVia is how the bot hands over: HandoverViaPass (the default) calls
	// pass_thread_control with target_app_id; HandoverViaSendAPI sends the customer
	// "Transferring you to an agent" with the Send API carrying thread_control {control_type:
	// pass, app_id}. The Send API's thread_control exists only with Conversation Routing: on
	// a page in hop_v1 or hop_v2 mode the bot falls back to pass_thread_control.
	HandoverVia string `json:"handover_via,omitempty"`
}

// How the reference bot hands a thread over (BotConfig.HandoverVia).
const (
	HandoverViaPass    = "pass_thread_control"
	HandoverViaSendAPI = "send_api"
)

// handoverMessage is what the reference bot says when it hands over with the Send API.
const handoverMessage = "Transferring you to an agent"

// UnmarshalJSON accepts primary_app_id as a string, a number or null, and refuses unknown
// fields so that a misspelt setting is not silently ignored.
func (p *PageConfig) UnmarshalJSON(b []byte) error {
	type plain PageConfig
	var w struct {
		plain
		PrimaryAppID json.RawMessage `json:"primary_app_id"`
	}
	if err := strictUnmarshal(b, &w); err != nil {
		return err
	}
	id, err := decodeID(w.PrimaryAppID)
	if err != nil {
		return fmt.Errorf("primary_app_id: %w", err)
	}
	*p = PageConfig(w.plain)
	p.PrimaryAppID = id
	return nil
}

// MarshalJSON writes an empty primary_app_id as null.
func (p PageConfig) MarshalJSON() ([]byte, error) {
	type plain PageConfig
	w := struct {
		plain
		PrimaryAppID *string `json:"primary_app_id"`
	}{plain: plain(p)}
	if p.PrimaryAppID != "" {
		w.PrimaryAppID = &p.PrimaryAppID
	}
	return json.Marshal(w)
}

// UnmarshalJSON accepts app_id as a string or a number, and refuses unknown fields.
func (a *AppConfig) UnmarshalJSON(b []byte) error {
	type plain AppConfig
	var w struct {
		plain
		AppID json.RawMessage `json:"app_id"`
	}
	if err := strictUnmarshal(b, &w); err != nil {
		return err
	}
	id, err := decodeID(w.AppID)
	if err != nil {
		return fmt.Errorf("app_id: %w", err)
	}
	*a = AppConfig(w.plain)
	a.AppID = id
	return nil
}

// UnmarshalJSON accepts handover_app_id as a string or a number, and refuses unknown fields.
func (b *BotConfig) UnmarshalJSON(data []byte) error {
	type plain BotConfig
	var w struct {
		plain
		HandoverAppID json.RawMessage `json:"handover_app_id"`
	}
	if err := strictUnmarshal(data, &w); err != nil {
		return err
	}
	id, err := decodeID(w.HandoverAppID)
	if err != nil {
		return fmt.Errorf("handover_app_id: %w", err)
	}
	*b = BotConfig(w.plain)
	b.HandoverAppID = id
	return nil
}

// decodeID reads an id written as a JSON string, number or null.
func decodeID(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", errors.New("want a string, a number or null")
	}
	return n.String(), nil
}

// hasField reports whether the app subscribes to a webhook field.
func (a *AppConfig) hasField(f string) bool {
	return slices.Contains(a.Fields, f)
}

// claimsIdle reports whether the reference bot claims idle threads.
func (b *BotConfig) claimsIdle() bool {
	return b.ClaimIdle == nil || *b.ClaimIdle
}

// normalized checks a page config and returns a copy with defaults filled in: mode, app names
// and fields. Every problem is reported, so one round trip fixes a config.
func (p PageConfig) normalized() (PageConfig, error) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	out := p
	out.Apps = make([]AppConfig, len(p.Apps))
	if !isNumericID(p.PageID) {
		bad("page_id %q must be a numeric Facebook page id", p.PageID)
	}
	if out.Mode == "" {
		out.Mode = ModeHOPv2
	}
	switch out.Mode {
	case ModeHOPv1, ModeCR:
		if p.PrimaryAppID == "" {
			if out.Mode == ModeHOPv1 {
				bad("mode hop_v1 needs primary_app_id (the Primary Receiver)")
			} else {
				bad("mode cr needs primary_app_id (the default app); use cr_zero for a page without one")
			}
		}
	case ModeHOPv2:
	case ModeCRZero:
		if p.PrimaryAppID != "" {
			bad("mode cr_zero is Conversation Routing without a default app: primary_app_id must be null")
		}
	default:
		bad("unknown mode %q: want hop_v1, hop_v2, cr or cr_zero", p.Mode)
	}
	if len(p.Apps) == 0 {
		bad("apps is empty: a page needs at least one connected app")
	}

	ids := map[string]bool{}
	tokens := map[string]bool{}
	for i, a := range p.Apps {
		where := fmt.Sprintf("apps[%d]", i)
		if a.AppID != "" {
			where = fmt.Sprintf("app %s", a.AppID)
		}
		switch {
		case !isNumericID(a.AppID):
			bad("%s: app_id %q must be a numeric Facebook app id", where, a.AppID)
		case a.AppID == PageInboxAppID:
			bad("%s: the Page Inbox is built into the simulator; do not list it as an app", where)
		case ids[a.AppID]:
			bad("%s: duplicate app_id", where)
		}
		ids[a.AppID] = true
		switch {
		case a.AccessToken == "":
			bad("%s: access_token is missing", where)
		case tokens[a.AccessToken]:
			bad("%s: access_token is also used by another app of this page", where)
		}
		tokens[a.AccessToken] = true
		if a.Name == "" {
			a.Name = "App " + a.AppID
		}
		if a.Fields == nil {
			a.Fields = slices.Clone(defaultFields)
		} else {
			a.Fields = slices.Clone(a.Fields)
		}
		for j, f := range a.Fields {
			if f == aliasHandovers {
				a.Fields[j] = FieldHandovers
			} else if !slices.Contains(knownFields, f) {
				bad("%s: unknown webhook field %q (known: %s)", where, f, strings.Join(knownFields, ", "))
			}
		}
		if a.CallbackURL != "" {
			u, err := url.Parse(a.CallbackURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad("%s: callback_url %q must be an absolute http(s) URL", where, a.CallbackURL)
			}
			if a.AppSecret == "" {
				bad("%s: app_secret is needed to sign the webhooks sent to callback_url", where)
			}
		}
		if a.Bot != nil {
			b := *a.Bot
			a.Bot = &b
			if a.CallbackURL != "" {
				bad("%s: a reference bot (bot set) runs inside the simulator and takes no callback_url", where)
			}
			if b.PassDelayMS < 0 || b.PassDelayMS > maxPassDelayMS {
				bad("%s: bot.pass_delay_ms must be between 0 and %d", where, maxPassDelayMS)
			}
			if b.Reply != "" && b.Reply != "echo" {
				bad("%s: bot.reply %q: want \"echo\" or empty", where, b.Reply)
			}
			if b.HandoverText == "" {
				if b.HandoverAppID != "" || b.HandoverVia != "" {
					bad("%s: bot.handover_app_id and bot.handover_via need bot.handover_text (the customer text that makes the bot hand over)", where)
				}
			} else {
				switch {
				case b.HandoverAppID == "":
					bad("%s: bot.handover_app_id is required with bot.handover_text: the app the bot passes control to", where)
				case !isNumericID(b.HandoverAppID):
					bad("%s: bot.handover_app_id %q must be a numeric Facebook app id", where, b.HandoverAppID)
				case b.HandoverAppID == a.AppID:
					bad("%s: bot.handover_app_id is the bot itself: name the app that takes over (RingCX's)", where)
				}
				switch b.HandoverVia {
				case "":
					a.Bot.HandoverVia = HandoverViaPass
				case HandoverViaPass, HandoverViaSendAPI:
				default:
					bad("%s: bot.handover_via %q: want %q (the default) or %q", where, b.HandoverVia, HandoverViaPass, HandoverViaSendAPI)
				}
			}
		}
		out.Apps[i] = a
	}
	for _, a := range out.Apps {
		if b := a.Bot; b != nil && isNumericID(b.HandoverAppID) && b.HandoverAppID != a.AppID &&
			!ids[b.HandoverAppID] && b.HandoverAppID != PageInboxAppID {
			bad("app %s: bot.handover_app_id %s is not among the page's apps (nor the Page Inbox)", a.AppID, b.HandoverAppID)
		}
	}
	if p.PrimaryAppID != "" && !ids[p.PrimaryAppID] && p.PrimaryAppID != PageInboxAppID {
		bad("primary_app_id %s is not among the page's apps", p.PrimaryAppID)
	}
	if len(problems) > 0 {
		return PageConfig{}, fmt.Errorf("invalid page config: %s", strings.Join(problems, "; "))
	}
	return out, nil
}

// isNumericID reports whether s looks like a Facebook id: 1 to 20 decimal digits.
func isNumericID(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// page is a validated page config with its apps indexed.
type page struct {
	cfg  PageConfig
	apps map[string]*AppConfig
}

func newPage(cfg PageConfig) *page {
	pg := &page{cfg: cfg, apps: make(map[string]*AppConfig, len(cfg.Apps))}
	for i := range pg.cfg.Apps {
		pg.apps[pg.cfg.Apps[i].AppID] = &pg.cfg.Apps[i]
	}
	return pg
}

func (pg *page) id() string      { return pg.cfg.PageID }
func (pg *page) mode() string    { return pg.cfg.Mode }
func (pg *page) primary() string { return pg.cfg.PrimaryAppID }

// connected reports whether an app may be given control of the page's threads.
func (pg *page) connected(appID string) bool {
	return pg.apps[appID] != nil || appID == PageInboxAppID
}

// takeoverAllowed is Conversation Routing's per-app takeover setting. Unset, it is on for the
// default app and off for the others: a choice (Meta is silent on the default; the takeover
// setting was tied to the default app before it became per app in June 2024).
func (pg *page) takeoverAllowed(appID string) bool {
	if a := pg.apps[appID]; a != nil && a.TakeoverAllowed != nil {
		return *a.TakeoverAllowed
	}
	return appID == pg.primary()
}

// role is the app's role as app_roles webhooks name it.
func (pg *page) role(appID string) string {
	if appID == pg.primary() {
		return "primary_receiver"
	}
	return "secondary_receiver"
}

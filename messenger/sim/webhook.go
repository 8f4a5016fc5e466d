package sim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Kinds of webhook events, as the log names them.
const (
	evMessage  = "message"
	evEcho     = "echo"
	evPass     = "pass_thread_control"
	evTake     = "take_thread_control"
	evRequest  = "request_thread_control"
	evMetadata = "pass_thread_metadata"
	evAppRoles = "app_roles"
)

// Webhook channels: the entry key an event is delivered under.
const (
	chanMessaging = "messaging"
	chanStandby   = "standby"
)

// event is one webhook event, before it is written for a particular app.
type event struct {
	kind         string
	pageID, psid string
	ts           int64
	mid, text    string
	appID        string // echo: the app that sent the message
	prevOwner    string // pass, take, pass_thread_metadata ("" is idle: null)
	newOwner     string
	requested    string // request_thread_control
	metadata     string
	roles        map[string][]string // app_roles
}

// queued is an event waiting for delivery to one app.
type queued struct {
	ev        event
	appID     string
	channel   string
	asStrings bool
}

// outboxKey names a delivery queue: an app's callback (URL and secret), or a reference bot on
// a page. Events for one key are delivered in order, one POST at a time.
type outboxKey struct {
	appID   string
	url     string
	secret  string
	botPage string
}

type outbox struct {
	key     outboxKey
	items   []queued
	running bool
}

// route delivers a message event (customer message or echo) to a page's apps: in messaging to
// the owner, to the sender of an echo, and to everyone when the thread is idle; in standby to
// the others. The caller holds s.mu.
func (s *Sim) route(pg *page, owner, sender string, ev event) {
	for i := range pg.cfg.Apps {
		a := &pg.cfg.Apps[i]
		channel := chanStandby
		if owner == "" || a.AppID == owner || a.AppID == sender {
			channel = chanMessaging
		}
		if wants(a, ev.kind, channel) {
			s.enqueue(pg, a, channel, ev)
		}
	}
}

// wants reports whether an app's subscription covers a message event on a channel: messages
// (or message_echoes for echoes) in messaging; standby (and message_echoes for echoes) in
// standby.
func wants(a *AppConfig, kind, channel string) bool {
	content := FieldMessages
	if kind == evEcho {
		content = FieldEchoes
	}
	if channel == chanStandby {
		return a.hasField(FieldStandby) && (kind != evEcho || a.hasField(FieldEchoes))
	}
	return a.hasField(content)
}

// deliverTo sends a messaging_handovers event to one app, in messaging (handover events go
// there even for apps that do not own the thread). The Page Inbox and apps not subscribed to
// messaging_handovers get nothing. The caller holds s.mu.
func (s *Sim) deliverTo(pg *page, appID, field string, ev event) {
	a := pg.apps[appID]
	if a == nil || !a.hasField(field) {
		return
	}
	s.enqueue(pg, a, chanMessaging, ev)
}

// enqueue queues an event for an app and starts its outbox if idle. Apps with neither a
// callback nor a bot get nothing. The caller holds s.mu.
func (s *Sim) enqueue(pg *page, a *AppConfig, channel string, ev event) {
	if s.closed {
		return
	}
	key := outboxKey{appID: a.AppID}
	switch {
	case a.Bot != nil:
		key.botPage = pg.id()
	case a.CallbackURL != "":
		key.url, key.secret = a.CallbackURL, a.AppSecret
	default:
		return
	}
	ob := s.outboxes[key]
	if ob == nil {
		ob = &outbox{key: key}
		s.outboxes[key] = ob
	}
	ob.items = append(ob.items, queued{ev: ev, appID: a.AppID, channel: channel, asStrings: pg.cfg.AppIDsAsStrings})
	s.addPending(1)
	if !ob.running {
		ob.running = true
		s.wg.Add(1)
		go s.drain(ob)
	}
}

// drain delivers an outbox's events until it is empty: to a callback in batches of what is
// waiting (at most maxBatchEntries per POST), or to a reference bot one at a time.
func (s *Sim) drain(ob *outbox) {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if s.closed || len(ob.items) == 0 {
			ob.running = false
			if len(ob.items) == 0 {
				delete(s.outboxes, ob.key)
			}
			s.mu.Unlock()
			return
		}
		n := 1
		if ob.key.botPage == "" {
			n = min(len(ob.items), maxBatchEntries)
		}
		batch := slices.Clone(ob.items[:n])
		ob.items = slices.Clone(ob.items[n:])
		s.mu.Unlock()

		if ob.key.botPage != "" {
			s.runBot(ob.key.botPage, batch[0])
		} else {
			s.post(ob.key, batch)
		}

		s.mu.Lock()
		s.donePending(n)
		s.mu.Unlock()
	}
}

// post delivers a batch to a callback, retrying per RetryDelays, and logs every attempt.
func (s *Sim) post(key outboxKey, batch []queued) {
	body, err := encodeEnvelope(batch)
	if err != nil {
		s.logger.Error("webhook: cannot encode batch", "app_id", key.appID, "error", err)
		return
	}
	sha256sig := "sha256=" + sign(sha256.New, key.secret, body)
	sha1sig := "sha1=" + sign(sha1.New, key.secret, body)
	s.mu.Lock()
	s.delivery++
	id := s.delivery
	s.mu.Unlock()

	for attempt := 1; ; attempt++ {
		seqs := s.logAttemptStart(batch, id, attempt)
		status, err := s.postOnce(key.url, body, sha256sig, sha1sig)
		if s.ctx.Err() != nil {
			return
		}
		outcome := OutcomeDelivered
		last := attempt > len(s.retryDelays)
		switch {
		case err == nil && status >= 200 && status < 300:
		case last:
			outcome = OutcomeDropped
		default:
			outcome = OutcomeFailed
		}
		s.logAttemptEnd(seqs, outcome, status, err)
		switch outcome {
		case OutcomeDelivered:
			return
		case OutcomeDropped:
			s.logger.Warn("webhook dropped after the last retry", "app_id", key.appID, "url", key.url,
				"events", len(batch), "attempts", attempt, "status", status, "error", err)
			return
		}
		s.logger.Info("webhook failed, will retry", "app_id", key.appID, "url", key.url,
			"attempt", attempt, "status", status, "error", err, "retry_in", s.retryDelays[attempt-1])
		if s.sleep(s.ctx, s.retryDelays[attempt-1]) != nil {
			return
		}
	}
}

// postOnce makes one webhook POST and returns the HTTP status.
func (s *Sim) postOnce(url string, body []byte, sha256sig, sha1sig string) (int, error) {
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "facebookexternalua")
	req.Header.Set("X-Hub-Signature-256", sha256sig)
	req.Header.Set("X-Hub-Signature", sha1sig)
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// logAttemptStart logs a delivery attempt as it starts, one entry per event it carries, so
// that the log orders it before whatever the receiver does while handling it. It returns the
// entries' sequence numbers.
func (s *Sim) logAttemptStart(batch []queued, id int64, attempt int) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seqs := make([]int64, 0, len(batch))
	for _, q := range batch {
		s.appendLog(LogEntry{
			Kind:           KindWebhook,
			PageID:         q.ev.pageID,
			PSID:           q.ev.psid,
			RecipientAppID: q.appID,
			Field:          q.channel,
			Event:          q.ev.kind,
			MID:            q.ev.mid,
			DeliveryID:     id,
			Attempt:        attempt,
			Outcome:        OutcomePending,
		})
		seqs = append(seqs, s.seq)
	}
	return seqs
}

// logAttemptEnd records the outcome of a delivery attempt in its log entries.
func (s *Sim) logAttemptEnd(seqs []int64, outcome string, status int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seq := range seqs {
		e := s.logEntry(seq)
		if e == nil {
			continue // trimmed from the log meanwhile
		}
		e.Outcome, e.HTTPStatus = outcome, status
		if err != nil {
			e.Detail = err.Error()
		}
	}
}

// sign returns the lowercase hex HMAC of body keyed with secret.
func sign(h func() hash.Hash, secret string, body []byte) string {
	mac := hmac.New(h, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// Wire shapes of webhooks (reference §6). Field order follows Meta's samples.
type wireEnvelope struct {
	Object string      `json:"object"`
	Entry  []wireEntry `json:"entry"`
}

type wireEntry struct {
	ID        string      `json:"id"`
	Time      int64       `json:"time"`
	Messaging []wireEvent `json:"messaging,omitempty"`
	Standby   []wireEvent `json:"standby,omitempty"`
}

type wireEvent struct {
	Sender               *wireID             `json:"sender,omitempty"`
	Recipient            wireID              `json:"recipient"`
	Timestamp            int64               `json:"timestamp"`
	Message              *wireMessage        `json:"message,omitempty"`
	PassThreadControl    *wireHandover       `json:"pass_thread_control,omitempty"`
	TakeThreadControl    *wireHandover       `json:"take_thread_control,omitempty"`
	PassThreadMetadata   *wireHandover       `json:"pass_thread_metadata,omitempty"`
	RequestThreadControl *wireRequest        `json:"request_thread_control,omitempty"`
	AppRoles             map[string][]string `json:"app_roles,omitempty"`
}

type wireID struct {
	ID string `json:"id"`
}

type wireMessage struct {
	IsEcho   bool   `json:"is_echo,omitempty"`
	AppID    any    `json:"app_id,omitempty"`
	Metadata string `json:"metadata,omitempty"`
	MID      string `json:"mid"`
	Text     string `json:"text"`
}

type wireHandover struct {
	PreviousOwnerAppID any    `json:"previous_owner_app_id"`
	NewOwnerAppID      any    `json:"new_owner_app_id"`
	Metadata           string `json:"metadata,omitempty"`
}

type wireRequest struct {
	RequestedOwnerAppID any    `json:"requested_owner_app_id"`
	Metadata            string `json:"metadata,omitempty"`
}

// appIDValue writes an app id as a JSON number (production's habit) or a string; "" is null.
func appIDValue(id string, asString bool) any {
	switch {
	case id == "":
		return nil
	case asString:
		return id
	}
	return json.Number(id)
}

// wire writes an event as Meta sends it.
func (ev event) wire(asStrings bool) wireEvent {
	user, pageRef := &wireID{ID: ev.psid}, wireID{ID: ev.pageID}
	w := wireEvent{Sender: user, Recipient: pageRef, Timestamp: ev.ts}
	switch ev.kind {
	case evMessage:
		w.Message = &wireMessage{MID: ev.mid, Text: ev.text}
	case evEcho:
		w.Sender, w.Recipient = &wireID{ID: ev.pageID}, wireID{ID: ev.psid}
		w.Message = &wireMessage{IsEcho: true, AppID: appIDValue(ev.appID, asStrings), Metadata: ev.metadata, MID: ev.mid, Text: ev.text}
	case evPass, evTake, evMetadata:
		h := &wireHandover{
			PreviousOwnerAppID: appIDValue(ev.prevOwner, asStrings),
			NewOwnerAppID:      appIDValue(ev.newOwner, asStrings),
			Metadata:           ev.metadata,
		}
		switch ev.kind {
		case evPass:
			w.PassThreadControl = h
		case evTake:
			w.TakeThreadControl = h
		default:
			w.PassThreadMetadata = h
		}
	case evRequest:
		w.RequestThreadControl = &wireRequest{RequestedOwnerAppID: appIDValue(ev.requested, asStrings), Metadata: ev.metadata}
	case evAppRoles:
		w.Sender = nil
		w.AppRoles = ev.roles
	}
	return w
}

// encodeEnvelope writes a batch as one webhook body, one event per entry.
func encodeEnvelope(batch []queued) ([]byte, error) {
	env := wireEnvelope{Object: "page", Entry: make([]wireEntry, 0, len(batch))}
	for _, q := range batch {
		e := wireEntry{ID: q.ev.pageID, Time: q.ev.ts}
		if q.channel == chanStandby {
			e.Standby = []wireEvent{q.ev.wire(q.asStrings)}
		} else {
			e.Messaging = []wireEvent{q.ev.wire(q.asStrings)}
		}
		env.Entry = append(env.Entry, e)
	}
	return metaJSON(env)
}

// metaJSON encodes v the way Meta writes JSON: no HTML escaping, every non-ASCII character as
// a lowercase \uXXXX escape (a surrogate pair above U+FFFF) and "/" as "\/".
func metaJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return escapeMeta(bytes.TrimSuffix(buf.Bytes(), []byte("\n"))), nil
}

// escapeMeta rewrites encoding/json output. Outside strings JSON has neither "/" nor non-ASCII
// bytes, and encoding/json emits valid UTF-8, so a byte-level pass is safe.
func escapeMeta(b []byte) []byte {
	const hexDigits = "0123456789abcdef"
	out := make([]byte, 0, len(b)+len(b)/8)
	appendU := func(r rune) {
		out = append(out, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
	}
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '/':
			out = append(out, '\\', '/')
			i++
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r > 0xffff {
				r1, r2 := utf16.EncodeRune(r)
				appendU(r1)
				appendU(r2)
			} else {
				appendU(r)
			}
			i += size
		}
	}
	return out
}

// VerifyWebhook performs Meta's verification handshake with an app's callback: a GET with
// hub.mode=subscribe, the app's verify token and a challenge, which must come back as the
// body of a 200 answer.
func (s *Sim) VerifyWebhook(ctx context.Context, pageID, appID string) error {
	s.mu.Lock()
	pg := s.pages[pageID]
	var a AppConfig
	if pg != nil && pg.apps[appID] != nil {
		a = *pg.apps[appID]
	}
	s.mu.Unlock()
	switch {
	case pg == nil:
		return fmt.Errorf("verify webhook: page %s: %w", pageID, ErrUnknownPage)
	case a.AppID == "":
		return fmt.Errorf("verify webhook: app %s is not connected to page %s", appID, pageID)
	case a.CallbackURL == "":
		return fmt.Errorf("verify webhook: app %s has no callback_url", appID)
	}
	challenge := strconv.Itoa(rand.IntN(1_000_000_000) + 1_000_000_000)
	u, err := url.Parse(a.CallbackURL)
	if err != nil {
		return fmt.Errorf("verify webhook: %w", err)
	}
	q := u.Query()
	q.Set("hub.mode", "subscribe")
	q.Set("hub.verify_token", a.VerifyToken)
	q.Set("hub.challenge", challenge)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("verify webhook: %w", err)
	}
	req.Header.Set("User-Agent", "facebookplatform/1.0 (+http://developers.facebook.com)")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("verify webhook: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("verify webhook: callback answered HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if got := strings.TrimSpace(string(body)); got != challenge {
		return fmt.Errorf("verify webhook: callback answered %q, want the challenge %q", got, challenge)
	}
	return nil
}

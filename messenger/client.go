package messenger

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults of a Client whose fields are left zero.
const (
	DefaultBaseURL    = "https://graph.facebook.com"
	DefaultVersion    = "v19.0"
	DefaultTimeout    = 5 * time.Second
	DefaultMaxRetries = 2
	DefaultBackoff    = 200 * time.Millisecond
)

// Credentials are what the client needs to act as one app on one page: the
// app's page access token and, optionally, its app secret for appsecret_proof.
type Credentials struct {
	AccessToken string
	AppSecret   string
}

// Client calls Meta's Graph API thread-control calls and Send API on behalf of
// the app whose page tokens it is given. It is safe for concurrent use.
//
// Calls are retried (at most MaxRetries times, with exponential backoff and
// jitter) on network errors, 5xx answers and rate limiting; never on other 4xx.
// A retried call that had in fact reached Meta may then be refused (for
// instance "not the thread owner" after a pass that succeeded): callers that
// care ask thread_owner.
type Client struct {
	BaseURL    string
	Version    string
	HTTP       *http.Client
	Timeout    time.Duration // per attempt
	MaxRetries int           // 0: DefaultMaxRetries; negative: none
	Backoff    time.Duration

	// Credentials returns the token of the app for a page; ok is false for a
	// page the client cannot act on.
	Credentials func(pageID string) (c Credentials, ok bool)

	// Observe, if set, is called once per call (not per attempt) with the
	// call's name, its outcome ("ok" or an error class) and its duration.
	Observe func(call, outcome string, d time.Duration)
}

// PassThreadControl passes control of the thread with psid to targetAppID.
func (c *Client) PassThreadControl(ctx context.Context, pageID, psid, targetAppID, metadata string) error {
	body := map[string]any{"recipient": recipient(psid), "target_app_id": targetAppID}
	if metadata != "" {
		body["metadata"] = metadata
	}
	return c.call(ctx, "pass_thread_control", http.MethodPost, pageID, nil, body, successResult)
}

// TakeThreadControl takes control of the thread. Meta documents two answers,
// {"success":true} and {"data":[{"thread_owner":{…}}]}; both are accepted.
func (c *Client) TakeThreadControl(ctx context.Context, pageID, psid, metadata string) error {
	body := map[string]any{"recipient": recipient(psid)}
	if metadata != "" {
		body["metadata"] = metadata
	}
	return c.call(ctx, "take_thread_control", http.MethodPost, pageID, nil, body, successOrOwnerResult)
}

// RequestThreadControl asks the current owner to pass control. Success means
// the request was accepted, not that control was granted: that arrives as a
// pass_thread_control webhook.
func (c *Client) RequestThreadControl(ctx context.Context, pageID, psid, metadata string) error {
	body := map[string]any{"recipient": recipient(psid)}
	if metadata != "" {
		body["metadata"] = metadata
	}
	return c.call(ctx, "request_thread_control", http.MethodPost, pageID, nil, body, successResult)
}

// ReleaseThreadControl returns the thread to idle (HOP v2 and later).
func (c *Client) ReleaseThreadControl(ctx context.Context, pageID, psid string) error {
	body := map[string]any{"recipient": recipient(psid)}
	return c.call(ctx, "release_thread_control", http.MethodPost, pageID, nil, body, successResult)
}

// ExtendThreadControl extends the owner's control window by d (at most 7 days).
func (c *Client) ExtendThreadControl(ctx context.Context, pageID, psid string, d time.Duration) error {
	body := map[string]any{"recipient": recipient(psid), "duration": int64(d / time.Second)}
	return c.call(ctx, "extend_thread_control", http.MethodPost, pageID, nil, body, successResult)
}

// ThreadOwner asks Meta who controls the thread. An idle thread (or one whose
// owner Meta does not show to this app) gives appID "" and a zero expires;
// an owned thread whose owner is hidden gives appID "" and its expiry.
func (c *Client) ThreadOwner(ctx context.Context, pageID, psid string) (appID string, expires time.Time, err error) {
	var out threadOwnerAnswer
	q := url.Values{"recipient": {psid}}
	err = c.call(ctx, "thread_owner", http.MethodGet, pageID, q, nil, func(b []byte) error {
		return decodeJSON(b, &out)
	})
	if err != nil {
		return "", time.Time{}, err
	}
	owner, exp := out.owner()
	return owner, exp, nil
}

// FeatureStatus asks Meta how the page routes its conversations
// (GET /{page}?fields=messaging_feature_status). Meta documents the answer's
// shape but not what each flag means: hopV2 is the "hop_v2" flag, multiApp
// the "msgr_multi_app" flag, which the Conversation Routing docs use to tell
// whether Conversation Routing is on.
func (c *Client) FeatureStatus(ctx context.Context, pageID string) (hopV2, multiApp bool, err error) {
	var out struct {
		Status *struct {
			HOPv2    bool `json:"hop_v2"`
			MultiApp bool `json:"msgr_multi_app"`
		} `json:"messaging_feature_status"`
	}
	q := url.Values{"fields": {"messaging_feature_status"}}
	err = c.call(ctx, "messaging_feature_status", http.MethodGet, pageID, q, nil, func(b []byte) error {
		if err := decodeJSON(b, &out); err != nil {
			return err
		}
		if out.Status == nil {
			return fmt.Errorf("graph api answer has no messaging_feature_status: %.200s", b)
		}
		return nil
	})
	if err != nil {
		return false, false, err
	}
	return out.Status.HOPv2, out.Status.MultiApp, nil
}

// App is an application connected to a page.
type App struct {
	ID   ID     `json:"id"`
	Name string `json:"name"`
}

// SecondaryReceivers lists the page's other connected apps (primary only).
func (c *Client) SecondaryReceivers(ctx context.Context, pageID string) ([]App, error) {
	var out struct {
		Data []App `json:"data"`
	}
	q := url.Values{"fields": {"id,name"}}
	err := c.call(ctx, "secondary_receivers", http.MethodGet, pageID, q, nil, func(b []byte) error {
		return decodeJSON(b, &out)
	})
	return out.Data, err
}

// SendText sends a text message to the customer with the Send API and returns
// Meta's message id. Only the thread's owner (or any app on an idle thread,
// HOP v2) may send.
func (c *Client) SendText(ctx context.Context, pageID, psid, text string) (messageID string, err error) {
	body := map[string]any{
		"recipient":      recipient(psid),
		"messaging_type": "RESPONSE",
		"message":        map[string]string{"text": text},
	}
	var out struct {
		RecipientID ID     `json:"recipient_id"`
		MessageID   string `json:"message_id"`
	}
	err = c.call(ctx, "send_message", http.MethodPost, pageID, nil, body, func(b []byte) error {
		if err := decodeJSON(b, &out); err != nil {
			return err
		}
		if out.MessageID == "" {
			return fmt.Errorf("answer has no message_id: %.200s", b)
		}
		return nil
	})
	return out.MessageID, err
}

func recipient(psid string) map[string]string { return map[string]string{"id": psid} }

type threadOwnerAnswer struct {
	Data []struct {
		ThreadOwner struct {
			AppID      ID     `json:"app_id"`
			Expiration *int64 `json:"expiration"`
		} `json:"thread_owner"`
	} `json:"data"`
}

func (a threadOwnerAnswer) owner() (string, time.Time) {
	if len(a.Data) == 0 {
		return "", time.Time{}
	}
	o := a.Data[0].ThreadOwner
	var exp time.Time
	if o.Expiration != nil {
		exp = unixMaybeMillis(*o.Expiration)
	}
	return string(o.AppID), exp
}

// unixMaybeMillis reads a Unix timestamp that Meta documents without a unit:
// values too large to be seconds are taken as milliseconds.
func unixMaybeMillis(v int64) time.Time {
	if v > 1e11 {
		return time.UnixMilli(v)
	}
	return time.Unix(v, 0)
}

func successResult(b []byte) error {
	var out struct {
		Success json.RawMessage `json:"success"`
	}
	if err := decodeJSON(b, &out); err != nil {
		return err
	}
	// Meta has answered both true and "true".
	switch strings.Trim(string(out.Success), `"`) {
	case "true":
		return nil
	}
	return fmt.Errorf("graph api answered without success: %.200s", b)
}

func successOrOwnerResult(b []byte) error {
	if successResult(b) == nil {
		return nil
	}
	var out threadOwnerAnswer
	if err := decodeJSON(b, &out); err == nil {
		if owner, _ := out.owner(); owner != "" {
			return nil
		}
	}
	return fmt.Errorf("graph api answered neither success nor a thread owner: %.200s", b)
}

func decodeJSON(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decoding graph api answer: %w", err)
	}
	return nil
}

// errUnknownPage is returned for a page the client has no token for.
var errUnknownPage = errors.New("no page access token for this page")

// call sends one Graph request, with retries, and hands a 2xx body to decode.
func (c *Client) call(ctx context.Context, name, method, pageID string, q url.Values, body any, decode func([]byte) error) error {
	start := time.Now()
	err := c.callWithRetries(ctx, name, method, pageID, q, body, decode)
	if c.Observe != nil {
		c.Observe(name, Outcome(err), time.Since(start))
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// Calls are the names of the Graph calls the client makes, as Outcome and
// Observe report them.
var Calls = []string{
	"pass_thread_control", "take_thread_control", "request_thread_control", "release_thread_control",
	"extend_thread_control", "thread_owner", "messaging_feature_status", "secondary_receivers", "send_message",
}

// Outcomes are the values Outcome returns.
var Outcomes = []string{"ok", "not_owner", "rate_limited", "meta_error", "server_error", "network_error"}

// Outcome classifies a call's error for metrics and logs: "ok", "not_owner",
// "rate_limited", "meta_error", "server_error" or "network_error".
func Outcome(err error) string {
	var e *Error
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &e) && e.NotThreadOwner():
		return "not_owner"
	case errors.As(err, &e) && e.RateLimited():
		return "rate_limited"
	case errors.As(err, &e) && e.HTTPStatus >= 500:
		return "server_error"
	case errors.As(err, &e):
		return "meta_error"
	}
	return "network_error"
}

func (c *Client) callWithRetries(ctx context.Context, name, method, pageID string, q url.Values, body any, decode func([]byte) error) error {
	creds, ok := c.credentials(pageID)
	if !ok {
		return fmt.Errorf("page %s: %w", pageID, errUnknownPage)
	}
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	endpoint := c.endpoint(pageID, name, q, creds)
	maxRetries := c.MaxRetries
	if maxRetries == 0 {
		maxRetries = DefaultMaxRetries
	}
	var unanswered error // an earlier attempt's error that was not Meta's answer
	for attempt := 0; ; attempt++ {
		b, err := c.attempt(ctx, method, endpoint, payload)
		if err == nil {
			return decode(b)
		}
		var me *Error
		answered := errors.As(err, &me)
		if !answered && unanswered == nil {
			unanswered = err
		}
		if !answered || me.retryable() {
			if attempt < maxRetries && ctx.Err() == nil {
				if serr := sleep(ctx, c.backoff(attempt)); serr != nil {
					return fmt.Errorf("%w (gave up retrying: %v)", err, serr)
				}
				continue
			}
		}
		if answered && unanswered != nil {
			return &UnansweredError{Unanswered: unanswered, Last: err}
		}
		return err
	}
}

func (c *Client) credentials(pageID string) (Credentials, bool) {
	if c.Credentials == nil {
		return Credentials{}, false
	}
	cr, ok := c.Credentials(pageID)
	return cr, ok && cr.AccessToken != ""
}

func (c *Client) endpoint(pageID, name string, q url.Values, creds Credentials) string {
	base := strings.TrimRight(c.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	version := c.Version
	if version == "" {
		version = DefaultVersion
	}
	edge := "/" + name
	switch name {
	case "send_message":
		edge = "/messages"
	case "messaging_feature_status":
		edge = "" // a field of the page node
	}
	v := url.Values{}
	for k, vs := range q {
		v[k] = vs
	}
	v.Set("access_token", creds.AccessToken)
	if creds.AppSecret != "" {
		v.Set("appsecret_proof", AppSecretProof(creds.AccessToken, creds.AppSecret))
	}
	return base + "/" + version + "/" + url.PathEscape(pageID) + edge + "?" + v.Encode()
}

// AppSecretProof is the hex HMAC-SHA256 of an access token keyed with the app
// secret, which Meta accepts (or requires) next to the token.
func AppSecretProof(token, appSecret string) string {
	m := hmac.New(sha256.New, []byte(appSecret))
	m.Write([]byte(token))
	return hex.EncodeToString(m.Sum(nil))
}

const maxAnswer = 1 << 20

func (c *Client) attempt(ctx context.Context, method, endpoint string, payload []byte) ([]byte, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, rd)
	if err != nil {
		return nil, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, redactToken(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, redactToken(err)
	}
	if resp.StatusCode/100 == 2 {
		return b, nil
	}
	return nil, decodeError(resp.StatusCode, b)
}

// decodeError turns a non-2xx answer into an *Error, keeping the raw text
// when the body is not Meta's envelope.
func decodeError(status int, b []byte) *Error {
	var env struct {
		Error *Error `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil && env.Error != nil {
		env.Error.HTTPStatus = status
		return env.Error
	}
	msg := strings.TrimSpace(string(b))
	if len(msg) > 200 {
		msg = msg[:200]
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{HTTPStatus: status, Message: msg}
}

// redactToken removes the query string (with the access token) from the URL
// that net/http puts into its errors.
func redactToken(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery = ""
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

func (c *Client) backoff(attempt int) time.Duration {
	base := c.Backoff
	if base == 0 {
		base = DefaultBackoff
	}
	d := base << attempt
	// Full jitter in [d/2, d): spreads retries of many callers.
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

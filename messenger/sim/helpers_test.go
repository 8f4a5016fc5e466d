package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Test fixtures: one page with three apps, named by letter in tables.
const (
	testPage = "1000"
	idP      = "11" // primary / default app
	idO      = "22" // the usual owner
	idT      = "33" // a third app
)

var letterToID = map[string]string{"P": idP, "O": idO, "T": idT, "": ""}

func idToLetter(id string) string {
	for l, v := range letterToID {
		if v == id {
			return l
		}
	}
	return id
}

func token(id string) string  { return "tok-" + id }
func secret(id string) string { return "secret-" + id }

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is an injectable clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// hit is one request a collector received.
type hit struct {
	header http.Header
	body   []byte
	at     time.Time
}

// collector is a webhook callback that records what it receives. answer, when set, decides
// the status of each request (n counts from 1).
type collector struct {
	srv    *httptest.Server
	mu     sync.Mutex
	hits   []hit
	answer func(n int) int
}

func newCollector(t *testing.T) *collector {
	t.Helper()
	c := &collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.hits = append(c.hits, hit{header: r.Header.Clone(), body: body, at: time.Now()})
		n := len(c.hits)
		answer := c.answer
		c.mu.Unlock()
		status := http.StatusOK
		if answer != nil {
			status = answer(n)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *collector) URL(path string) string { return c.srv.URL + path }

func (c *collector) Hits() []hit {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]hit(nil), c.hits...)
}

// app returns an app config for a fixture id with the given callback and fields.
func app(id, callback string, fields ...string) AppConfig {
	names := map[string]string{idP: "P app", idO: "O app", idT: "T app"}
	a := AppConfig{
		AppID:       id,
		Name:        names[id],
		AccessToken: token(id),
		AppSecret:   secret(id),
		CallbackURL: callback,
		VerifyToken: "verify-" + id,
	}
	if len(fields) > 0 {
		a.Fields = fields
	}
	return a
}

// newSim returns a simulator closed at the end of the test, with short retry delays.
func newSim(t *testing.T, opts Options) *Sim {
	t.Helper()
	if opts.RetryDelays == nil {
		opts.RetryDelays = []time.Duration{5 * time.Millisecond, 5 * time.Millisecond}
	}
	s := New(opts)
	t.Cleanup(s.Close)
	return s
}

func mustPut(t *testing.T, s *Sim, cfg PageConfig) {
	t.Helper()
	if cfg.PageID == "" {
		cfg.PageID = testPage
	}
	if err := s.PutPage(cfg); err != nil {
		t.Fatalf("PutPage: %v", err)
	}
}

func settle(t *testing.T, s *Sim) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Settle(ctx); err != nil {
		t.Fatalf("Settle: %v", err)
	}
}

// setOwnerForTest puts a thread in a given state.
func setOwnerForTest(s *Sim, pageID, psid, owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pg := s.pages[pageID]
	now := s.now()
	setOwner(pg, s.thread(pg, psid, now), owner, now)
}

// call makes a Graph call through the handler: POST with a JSON body, GET with a query string.
// It returns the status and the decoded body.
func call(t *testing.T, h http.Handler, method, path, tok string, args map[string]any) (int, map[string]any) {
	t.Helper()
	status, raw := callRaw(t, h, method, path, tok, args)
	var body map[string]any
	if err := decodeJSON(raw, &body); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v: %s", method, path, err, raw)
	}
	return status, body
}

func callRaw(t *testing.T, h http.Handler, method, path, tok string, args map[string]any) (int, []byte) {
	t.Helper()
	q := url.Values{}
	if tok != "" {
		q.Set("access_token", tok)
	}
	var body io.Reader
	if method == http.MethodGet {
		for k, v := range args {
			q.Set(k, fmt.Sprint(v))
		}
	} else {
		b, err := json.Marshal(args)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	target := path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req := httptest.NewRequest(method, target, body)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// errorCode returns "code/subcode" (or "code") of a Graph error body, "" for a success.
func errorCode(body map[string]any) string {
	e, ok := body["error"].(map[string]any)
	if !ok {
		return ""
	}
	code, sub := fmt.Sprint(e["code"]), fmt.Sprint(e["error_subcode"])
	if e["error_subcode"] == nil {
		return code
	}
	return code + "/" + sub
}

// deliveredHooks lists the webhooks delivered, as "<recipient letter> <field> <event>".
func deliveredHooks(s *Sim) []string {
	var out []string
	for _, e := range s.Log("", "") {
		if e.Kind == KindWebhook && e.Outcome == OutcomeDelivered {
			out = append(out, fmt.Sprintf("%s %s %s", idToLetter(e.RecipientAppID), e.Field, e.Event))
		}
	}
	return out
}

// control makes a control API request with a JSON body (nil for none).
func control(t *testing.T, h http.Handler, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		if s, ok := body.(string); ok {
			r = strings.NewReader(s)
		} else {
			b, err := json.Marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			r = bytes.NewReader(b)
		}
	}
	req := httptest.NewRequest(method, path, r)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v: %s", method, path, err, rec.Body.String())
	}
	return rec.Code, out
}

// envelope is a decoded webhook body.
type envelope struct {
	Object string `json:"object"`
	Entry  []struct {
		ID        string           `json:"id"`
		Time      int64            `json:"time"`
		Messaging []map[string]any `json:"messaging"`
		Standby   []map[string]any `json:"standby"`
	} `json:"entry"`
}

func decodeEnvelope(t *testing.T, b []byte) envelope {
	t.Helper()
	var env envelope
	if err := decodeJSON(b, &env); err != nil {
		t.Fatalf("webhook body is not JSON: %v: %s", err, b)
	}
	return env
}

// serve runs a simulator's handler on a loopback HTTP server closed at the end of the test.
func serve(t *testing.T, s *Sim) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

// httpCall makes a Graph call over real HTTP: POST with a JSON body, GET with a query string.
// It returns the status, the decoded body and the raw body.
func httpCall(t *testing.T, srv *httptest.Server, method, path, tok string, args map[string]any) (int, map[string]any, []byte) {
	t.Helper()
	q := url.Values{}
	if tok != "" {
		q.Set("access_token", tok)
	}
	var body io.Reader
	if method == http.MethodGet {
		for k, v := range args {
			q.Set(k, fmt.Sprint(v))
		}
	} else {
		b, err := json.Marshal(args)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	target := srv.URL + path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	var out map[string]any
	if err := decodeJSON(raw, &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v: %s", method, path, err, raw)
	}
	return resp.StatusCode, out, raw
}

// httpPut makes a control API PUT with a JSON body over real HTTP.
func httpPut(t *testing.T, srv *httptest.Server, path string, v any) (int, map[string]any, []byte) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, srv.URL+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("PUT %s: answer is not JSON: %v: %s", path, err, raw)
	}
	return resp.StatusCode, out, raw
}

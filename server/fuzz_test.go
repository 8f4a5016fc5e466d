package server_test

// Fuzz targets that drive the whole server — Echo, the engine, a real bbolt
// store and the Messenger simulator — through its http.Handler, asserting
// properties that hold for every input (SPEC.md §3), not only "no panic".
//
// Each fuzz process builds one fixture (newFuzzFixture) in the target's
// setup; inputs then run against it one after another, so the store and the
// threads carry over from input to input and the properties are stated so
// that they hold in any state the earlier inputs left.
//
// Run one: go test ./server/ -run '^$' -fuzz '^FuzzWebhook$' -fuzztime 60s
// (make fuzz runs them all).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
)

// The fixture's threads, fixed so that seeds can name them.
const (
	fuzzPage2 = "100000000000002" // configured in threadctl only: Meta (the simulator) does not know it

	psidBot      = "7200000000000001" // bot (the reference bot owns it)
	psidAgent    = "7200000000000002" // agent, no intervention
	psidIdle     = "7200000000000003" // idle, a closed intervention
	psidEngaged  = "7200000000000004" // agent, an open intervention and a synchronised content
	psidTwoPages = "7200000000000005" // on both pages: ambiguous without page_id
	psidPage2    = "7200000000000006" // on page 2 only: its Graph calls fail (502)
	psid70       = "7200000000000000000000000000000000000000000000000000000000000000000001"
)

// fuzzFixture is the server under fuzzing and what the properties read.
type fuzzFixture struct {
	*fixture
	h http.Handler

	ivOpen, ivClosed, content string // ids made by the setup
	lastID                    string // the id of the last 201 answer
	inputs                    int
}

// newFuzzFixture is newFixture (server_test.go) for a testing.TB, so that a
// fuzz target builds it once in its setup, with timers long enough that
// nothing changes a thread by itself while an input runs: a request for
// control stays pending for an hour, and a failed timer-driven call is
// retried an hour later. It then makes the threads named by the constants
// above.
func newFuzzFixture(tb testing.TB) *fuzzFixture {
	tb.Helper()
	ctx := context.Background()
	f := &fixture{}

	db, err := store.Open(tb.TempDir(), store.Options{})
	if err != nil {
		tb.Fatalf("store.Open: %v", err)
	}
	f.db = db

	f.sim = sim.New(sim.Options{RetryDelays: []time.Duration{10 * time.Millisecond, 50 * time.Millisecond}})
	simSrv := httptest.NewServer(f.sim.Handler())

	graph := &messenger.Client{
		BaseURL: simSrv.URL, Version: "v19.0", Timeout: 5 * time.Second, Backoff: 10 * time.Millisecond,
		Credentials: func(string) (messenger.Credentials, bool) {
			return messenger.Credentials{AccessToken: "ringcx-page-token", AppSecret: ringcxSecret}, true
		},
	}
	f.metrics = server.NewMetrics(func() (int, time.Time) { return f.eng.PendingRequests() }, time.Now)
	eng, err := engine.New(engine.Config{Store: db, Graph: graph, PendingTimeout: time.Hour, RetryDelay: time.Hour, Observer: f.metrics})
	if err != nil {
		tb.Fatalf("engine.New: %v", err)
	}
	f.eng = eng
	tb.Cleanup(func() {
		eng.Close()
		if problems, err := db.Check(); err != nil || len(problems) > 0 {
			tb.Errorf("store check after fuzzing: %v %v", problems, err)
		}
		db.Close()
	})
	for _, p := range []engine.Page{
		{ID: pageID, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID, bot2ID}},
		{ID: fuzzPage2, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID}},
	} {
		if err := eng.SetPage(ctx, p); err != nil {
			tb.Fatalf("SetPage: %v", err)
		}
	}
	if err := eng.Start(ctx); err != nil {
		tb.Fatalf("engine.Start: %v", err)
	}
	f.srv, err = server.New(server.Config{
		Engine: eng, APITokens: []string{apiToken}, VerifyToken: verifyToken,
		WebhookSecrets: []string{ringcxSecret}, Ready: eng.Ping, Metrics: f.metrics,
		Docs: os.DirFS(filepath.Join("..", "docs")),
	})
	if err != nil {
		tb.Fatalf("server.New: %v", err)
	}
	hs := httptest.NewServer(f.srv.Handler())
	f.url, f.client = hs.URL, hs.Client()
	tb.Cleanup(hs.Close)
	tb.Cleanup(func() {
		f.sim.Close()
		simSrv.Close()
	})
	noClaim := false
	err = f.sim.PutPage(sim.PageConfig{
		PageID: pageID, Mode: "hop_v2", PrimaryAppID: botID,
		Apps: []sim.AppConfig{
			{AppID: ringcxID, Name: "RingCX", AccessToken: "ringcx-page-token", AppSecret: ringcxSecret,
				CallbackURL: hs.URL + "/webhooks/messenger", VerifyToken: verifyToken,
				Fields: []string{"messages", "messaging_handovers", "standby"}},
			{AppID: botID, Name: "Bot", AccessToken: "bot-page-token", AppSecret: "bot-secret",
				Fields: []string{"messages", "messaging_handovers", "standby"},
				Bot:    &sim.BotConfig{HonorRequests: true, Reply: "echo"}},
			{AppID: bot2ID, Name: "Bot 2", AccessToken: "bot2-page-token", AppSecret: "bot2-secret",
				Fields: []string{"messages", "messaging_handovers", "standby"},
				Bot:    &sim.BotConfig{HonorRequests: true, ClaimIdle: &noClaim}},
		},
	})
	if err != nil {
		tb.Fatalf("sim.PutPage: %v", err)
	}

	ff := &fuzzFixture{fixture: f, h: f.srv.Handler()}
	ff.makeThreads(tb)
	return ff
}

// makeThreads brings the fixture's threads to their states through the API
// and the simulator, as a customer, a bot and an agent would.
func (ff *fuzzFixture) makeThreads(tb testing.TB) {
	tb.Helper()
	ctx := context.Background()
	must := func(method, target string, want int) reply {
		tb.Helper()
		r, ok := ff.serve(fuzzRequest(method, target, [][2]string{{"Authorization", "Bearer " + apiToken}}, nil))
		if !ok || r.status != want {
			tb.Fatalf("setup: %s %s = %v, want %d", method, target, r, want)
		}
		return r
	}
	created := func(r reply) string {
		var v struct{ ID string }
		if err := json.Unmarshal(r.body, &v); err != nil || v.ID == "" {
			tb.Fatalf("setup: %v has no id", r)
		}
		return v.ID
	}
	for _, psid := range []string{psidBot, psidAgent, psidIdle, psidEngaged} {
		if _, err := ff.sim.CustomerMessage(pageID, psid, "hello"); err != nil {
			tb.Fatalf("setup: customer message: %v", err)
		}
		ff.waitFor(tb, psid, states.Bot)
	}
	for _, psid := range []string{psidAgent, psidIdle} {
		must(http.MethodPost, "/1.0/bots/handover?"+handoverQuery(psid, "bot", "agent", "").Encode(), http.StatusOK)
		ff.waitFor(tb, psid, states.Agent)
	}
	ff.ivClosed = created(must(http.MethodPost, "/1.0/interventions?identity_foreign_id="+psidIdle, http.StatusCreated))
	must(http.MethodPut, "/1.0/interventions/"+ff.ivClosed+"/close", http.StatusOK)
	ff.waitFor(tb, psidIdle, states.Idle)
	ff.ivOpen = created(must(http.MethodPost, "/1.0/interventions?identity_foreign_id="+psidEngaged, http.StatusCreated))
	ff.waitFor(tb, psidEngaged, states.Agent)
	ff.content = created(must(http.MethodPost, "/1.0/contents?identity_foreign_id="+psidEngaged+"&body=hello+from+the+agent", http.StatusCreated))

	ms := time.Now().UnixMilli()
	var entries []string
	for i, e := range []struct{ page, psid string }{{pageID, psidTwoPages}, {fuzzPage2, psidTwoPages}, {fuzzPage2, psidPage2}} {
		entries = append(entries, fmt.Sprintf(`{"id":"%[1]s","time":%[3]d,"standby":[{"sender":{"id":"%[2]s"},"recipient":{"id":"%[1]s"},"timestamp":%[3]d,"message":{"mid":"m_setup_%[4]d","text":"hi"}}]}`, e.page, e.psid, ms, i))
	}
	body := []byte(`{"object":"page","entry":[` + strings.Join(entries, ",") + `]}`)
	sig, _ := messenger.Sign(body, ringcxSecret)
	if r, ok := ff.serve(fuzzRequest(http.MethodPost, "/webhooks/messenger", [][2]string{{"X-Hub-Signature-256", sig}}, body)); !ok || r.status != http.StatusOK {
		tb.Fatalf("setup: webhook = %v", r)
	}
	for _, k := range []engine.ThreadKey{{PageID: pageID, PSID: psidTwoPages}, {PageID: fuzzPage2, PSID: psidTwoPages}, {PageID: fuzzPage2, PSID: psidPage2}} {
		if _, err := ff.eng.Thread(ctx, k); err != nil {
			tb.Fatalf("setup: %v", err)
		}
	}
	ff.quiet(tb)
}

// waitFor waits until threadctl's thread on the demo page is in state want.
func (ff *fuzzFixture) waitFor(tb testing.TB, psid string, want states.State) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ff.quiet(tb)
		th, err := ff.eng.Thread(context.Background(), engine.ThreadKey{PageID: pageID, PSID: psid})
		if err == nil && th.State == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("setup: thread %s is %s (%v), want %s", psid, th.State, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quiet waits until the simulator has delivered every webhook and the
// reference bots have acted: with the fixture's long timers nothing then
// changes a thread until the next request.
func (ff *fuzzFixture) quiet(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ff.sim.Settle(ctx); err != nil {
		tb.Fatalf("sim.Settle: %v", err)
	}
}

// ---- requests

// fuzzRequest is an HTTP/1.1 request as a client writes it on the wire.
func fuzzRequest(method, target string, header [][2]string, body []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: threadctl.test\r\n", method, target)
	for _, h := range header {
		b.WriteString(h[0] + ": " + h[1] + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	return b.Bytes()
}

// serve parses raw as net/http's server does and runs it through the
// server's handler. ok is false when net/http would have refused the
// request before any handler (a malformed request line, URL or header).
func (ff *fuzzFixture) serve(raw []byte) (reply, bool) {
	r, _, ok := ff.serveRequest(raw)
	return r, ok
}

func (ff *fuzzFixture) serveRequest(raw []byte) (reply, *http.Request, bool) {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return reply{}, nil, false
	}
	for _, vs := range req.Header {
		for _, v := range vs {
			if !validHeaderValue(v) {
				return reply{}, nil, false
			}
		}
	}
	req.RemoteAddr = "192.0.2.1:40000"
	rec := httptest.NewRecorder()
	ff.h.ServeHTTP(rec, req)
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	return reply{status: res.StatusCode, header: res.Header, body: body}, req, true
}

// formMalformed reports whether raw is a request whose form body (URL-encoded
// or multipart, on POST, PUT or PATCH) does not parse.
func formMalformed(raw []byte) bool {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil || (req.Method != http.MethodPost && req.Method != http.MethodPut && req.Method != http.MethodPatch) {
		return false
	}
	ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	switch ct {
	case "application/x-www-form-urlencoded":
		return req.ParseForm() != nil
	case "multipart/form-data":
		return req.ParseMultipartForm(32<<10) != nil
	}
	return false
}

// validHeaderValue is net/http's server rule (httpguts.ValidHeaderFieldValue):
// no control byte but tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// headerSafe reports whether a fuzzed string can be one header's value.
func headerSafe(v string) bool { return validHeaderValue(v) && len(v) < 8<<10 }

// ---- properties shared by the targets

// statusProblem says what is wrong with an answer's status code, if
// anything: never 500, and of the 5xx only 502 (Meta) and 503 — the store
// unavailable, which in this fixture it never is.
func (ff *fuzzFixture) statusProblem(status int) string {
	switch {
	case status == http.StatusInternalServerError:
		return "HTTP 500"
	case status == http.StatusServiceUnavailable:
		if err := ff.eng.Ping(context.Background()); err == nil {
			return "HTTP 503 (store unavailable) while the store answers"
		}
	case status >= 500 && status != http.StatusBadGateway:
		return fmt.Sprintf("HTTP %d: only 502 and 503 are expected of the 5xx", status)
	case status < 100:
		return fmt.Sprintf("HTTP %d", status)
	}
	return ""
}

// envelopeProblem checks an answer in the Bots API envelope (SPEC.md §3):
// JSON {"status":N,"message":"…"} and nothing else, N the HTTP status, a
// non-empty message.
func envelopeProblem(r reply) string {
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Sprintf("Content-Type %q, want application/json", ct)
	}
	if prefix := fmt.Sprintf(`{"status":%d,"message":`, r.status); !bytes.HasPrefix(r.body, []byte(prefix)) {
		return "body does not start with " + prefix
	}
	var env struct {
		Status  *int    `json:"status"`
		Message *string `json:"message"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return fmt.Sprintf("body is not the envelope: %v", err)
	}
	if dec.More() {
		return "data after the envelope"
	}
	switch {
	case env.Status == nil || *env.Status != r.status:
		return "status field is not the HTTP status"
	case env.Message == nil || strings.TrimSpace(*env.Message) == "":
		return "message is empty"
	}
	return ""
}

// asJSONText is s as it reads once through JSON, which turns invalid UTF-8
// into U+FFFD.
func asJSONText(s string) string {
	b, _ := json.Marshal(s)
	json.Unmarshal(b, &s)
	return s
}

// envelopeMessage is an envelope's message.
func envelopeMessage(r reply) string {
	var env server.Envelope
	json.Unmarshal(r.body, &env)
	return env.Message
}

// duplicated lists the parameters given more than once in q, known to the
// endpoint or not. SPEC.md §3: such a request could mean two things and is
// refused (400, naming the parameter), never guessed.
func duplicated(q url.Values) []string {
	var out []string
	for n, vs := range q {
		if len(vs) > 1 {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// credentials classifies a request's API token: none of it anywhere (no
// access_token value and no Authorization header holds the token), or
// exactly the documented way (one access_token and no Authorization header,
// or "Bearer <token>" and no access_token).
func credentials(req *http.Request, q url.Values) (none, exact bool) {
	auth := req.Header.Values("Authorization")
	none = !slices.Contains(q["access_token"], apiToken) && !slices.ContainsFunc(auth, func(v string) bool { return strings.Contains(v, apiToken) })
	switch {
	case len(auth) == 0:
		exact = len(q["access_token"]) == 1 && q.Get("access_token") == apiToken
	case len(auth) == 1:
		exact = len(q["access_token"]) == 0 && auth[0] == "Bearer "+apiToken
	}
	return none, exact
}

// tokenProblem checks the API token rule: a request without the token is
// answered 401 (or 400 when it is also ambiguous: a parameter repeated, or a
// query string that does not parse, so whether it holds a token is unknown),
// one with exactly the token never 401.
func tokenProblem(r reply, none, exact, ambiguous bool) string {
	switch {
	case none && r.status != http.StatusUnauthorized && !(ambiguous && r.status == http.StatusBadRequest):
		return "a request without the API token is not answered 401"
	case exact && r.status == http.StatusUnauthorized:
		return "a request with the API token is answered 401"
	}
	return ""
}

// malformedProblem checks that a query string that does not parse is a 400
// that says so, whatever the credentials: it is refused before the token
// check, as a repeated parameter is.
func malformedProblem(r reply, perr error) string {
	if perr == nil {
		return ""
	}
	if r.status != http.StatusBadRequest || !strings.Contains(envelopeMessage(r), "malformed") {
		return fmt.Sprintf("a query string that does not parse (%v) is answered %d %q, want 400 saying it is malformed", perr, r.status, envelopeMessage(r))
	}
	return ""
}

// dupProblem checks the ambiguity rule: a repeated parameter is a 400 that
// names it (a 401 comes first when the token is missing or ambiguous).
func dupProblem(r reply, dups []string, exact bool) string {
	if len(dups) == 0 {
		return ""
	}
	switch {
	case r.status == http.StatusBadRequest:
		msg := envelopeMessage(r)
		if !slices.ContainsFunc(dups, func(d string) bool { return strings.Contains(msg, strconv.Quote(d)) }) {
			return fmt.Sprintf("400 for repeated %s does not name it: %q", strings.Join(dups, ", "), msg)
		}
	case r.status == http.StatusUnauthorized && !exact:
	default:
		return fmt.Sprintf("parameter %s given twice is answered %d, want 400 naming it (SPEC.md §3: refused, never guessed)", strings.Join(dups, ", "), r.status)
	}
	return ""
}

// revisions is every thread's revision.
func (ff *fuzzFixture) revisions(t *testing.T) map[engine.ThreadKey]uint64 {
	t.Helper()
	out := map[engine.ThreadKey]uint64{}
	f := engine.ListFilter{Limit: 500}
	for {
		threads, next, err := ff.eng.ListThreads(context.Background(), f)
		if err != nil {
			t.Fatalf("listing threads: %v", err)
		}
		for _, th := range threads {
			out[th.Key()] = th.Revision
		}
		if next == "" {
			return out
		}
		f.After = next
	}
}

// callerChanges lists the history entries an API caller (the Bots API or the
// agent API) added between two snapshots of revisions.
func (ff *fuzzFixture) callerChanges(t *testing.T, before, after map[engine.ThreadKey]uint64) []string {
	t.Helper()
	var out []string
	for k, rev := range after {
		if rev <= before[k] {
			continue
		}
		hist, err := ff.eng.History(context.Background(), k, 0, int(rev-before[k]))
		if err != nil {
			t.Fatalf("history of %s: %v", k, err)
		}
		for _, h := range hist {
			if h.Revision > before[k] && (h.Cause == engine.CauseBotsAPI || h.Cause == engine.CauseAgent) {
				out = append(out, fmt.Sprintf("%s rev %d: %s by %s, %s → %s (%s)", k, h.Revision, h.Event, h.Cause, h.From, h.To, h.Outcome))
			}
		}
	}
	slices.Sort(out)
	return out
}

// threadProblem checks one thread record's invariants as the debug endpoint
// shows them: a known state, an owner that fits it, a pending request
// exactly in pending-request, a history that ends in the state.
func (ff *fuzzFixture) threadProblem(t *testing.T, key engine.ThreadKey) string {
	t.Helper()
	r, ok := ff.serve(fuzzRequest(http.MethodGet, "/debug/threads/"+url.PathEscape(key.PSID)+"?page_id="+url.QueryEscape(key.PageID),
		[][2]string{{"Authorization", "Bearer " + apiToken}}, nil))
	if !ok || r.status != http.StatusOK {
		return fmt.Sprintf("debug view of %s: %v", key, r)
	}
	var v threadJSON
	if err := json.Unmarshal(r.body, &v); err != nil {
		return fmt.Sprintf("debug view of %s: %v", key, err)
	}
	page, _ := ff.eng.Page(key.PageID)
	st, err := states.ParseState(v.State)
	switch {
	case err != nil:
		return fmt.Sprintf("%s: %v", key, err)
	case v.IdentityForeignID != key.PSID || v.PageID != key.PageID:
		return fmt.Sprintf("debug view of %s shows %s/%s", key, v.PageID, v.IdentityForeignID)
	case v.Revision == 0 || len(v.Transitions) == 0:
		return fmt.Sprintf("%s: revision %d with %d transitions", key, v.Revision, len(v.Transitions))
	case v.Transitions[0].Revision != v.Revision || v.Transitions[0].To != v.State:
		return fmt.Sprintf("%s: %s at revision %d, newest transition %d ends in %s", key, v.State, v.Revision, v.Transitions[0].Revision, v.Transitions[0].To)
	case (st == states.Pending) != (v.PendingRequest != nil):
		return fmt.Sprintf("%s: state %s with pending request %v", key, st, v.PendingRequest)
	case st == states.Idle && v.OwnerAppID != "":
		return fmt.Sprintf("%s: idle with owner %s", key, v.OwnerAppID)
	case st == states.Agent && v.OwnerAppID != page.RingCXAppID:
		return fmt.Sprintf("%s: agent with owner %q, not the RingCX app %s", key, v.OwnerAppID, page.RingCXAppID)
	case (st == states.Bot || st == states.Pending) && v.OwnerAppID == page.RingCXAppID:
		return fmt.Sprintf("%s: %s owned by the RingCX app", key, st)
	}
	return ""
}

// storeProblem runs the store's own check (store/check.go).
func (ff *fuzzFixture) storeProblem() string {
	if problems, err := ff.db.Check(); err != nil || len(problems) > 0 {
		return fmt.Sprintf("store check: %v %v", strings.Join(problems, "\n"), err)
	}
	return ""
}

// fail reports a broken property with the request that broke it.
func fail(t *testing.T, raw []byte, r reply, format string, args ...any) {
	t.Helper()
	req := raw
	if len(req) > 4096 {
		req = append(req[:4096:4096], "…"...)
	}
	t.Fatalf("%s\nrequest:\n%q\nanswer: HTTP %d %v\n%s", fmt.Sprintf(format, args...), req, r.status, r.header, bytes.TrimSpace(r.body))
}

// ---- FuzzBotsAPI

// FuzzBotsAPI sends POST /1.0/bots/handover with an arbitrary raw query
// string and Authorization header. For every input: no 500 and of the 5xx
// only 502/503; the body is the envelope with the HTTP status ("Success" for
// 200); no token → 401 and no thread changes, the token → never 401; a
// repeated parameter → 400 naming it; a refusal (4xx) records nothing on any
// thread; after a 200 the thread is where the handover leads.
func FuzzBotsAPI(f *testing.F) {
	tok := "access_token=" + apiToken + "&"
	valid := func(psid, from, to, app string) string { return handoverQuery(psid, from, to, app).Encode() }
	for _, s := range [][2]string{
		{tok + valid(psidBot, "bot", "agent", ""), ""},
		{valid(psidAgent, "agent", "bot", botID), "Bearer " + apiToken},
		{valid(psidAgent, "agent", "bot", bot2ID), "bearer " + apiToken},
		{tok + valid(psidIdle, "bot", "agent", ""), ""},
		{tok + valid(psidIdle, "agent", "bot", bot2ID), ""},
		{tok + valid(psidEngaged, "agent", "bot", botID), ""},                         // 409: intervention engaged
		{tok + valid(psidTwoPages, "bot", "agent", ""), ""},                           // 400: ambiguous
		{tok + valid(psidTwoPages, "bot", "agent", "") + "&page_id=" + fuzzPage2, ""}, // 502: Meta does not know page 2
		{tok + valid(psidPage2, "bot", "agent", "") + "&page_id=" + pageID, ""},       // 404: another page's customer
		{tok + valid(psid70, "bot", "agent", ""), ""},
		{tok + valid("7200000000000099", "bot", "agent", ""), ""},
		{tok + valid(psidBot, "agent", "bot", ringcxID), ""},
		{tok + valid(psidBot, "bot", "bot", botID), ""},
		{tok + "identity_foreign_id=" + psidBot + "&from=bot&to=agent&type=whatsapp", ""},
		{tok + "identity_foreign_id=%zz&from=bot&to=agent&type=messenger", ""},
		{tok + "identity_foreign_id=" + psidBot + "&from=b%zzot&to=agent&type=messenger", ""},
		{tok + "identity_foreign_id=" + psidBot + ";from=bot&to=agent&type=messenger", ""},
		{tok + "identity_foreign_id=%E2%80%AE7200000000000001&from=%F0%9F%A4%96&to=agent&type=messenger", ""},
		{tok + "identity_foreign_id=" + strings.Repeat("9", 4000) + "&from=bot&to=agent&type=messenger", ""},
		{"identity_foreign_id=" + psidBot + "&from=bot&to=agent&type=messenger", ""},
		{"access_token=&" + valid(psidBot, "bot", "agent", ""), ""},
		{"access_token=dev-tok%65n&" + valid(psidBot, "bot", "agent", ""), ""},
		{"access_token=not-the-token&" + valid(psidBot, "bot", "agent", ""), ""},
		{tok + valid(psidBot, "bot", "agent", ""), "Bearer not-the-token"},
		{tok + valid(psidBot, "bot", "agent", ""), "Basic ZGV2LXRva2Vu"},
		{valid(psidBot, "bot", "agent", ""), apiToken},
		{valid(psidBot, "bot", "agent", ""), "Bearer  " + apiToken + " "},
		{valid(psidBot, "bot", "agent", ""), "Bearer"},
		{"", ""},
		{"&&&=&", "Bearer " + apiToken},
		// Regression (found by this target in CI): a query string that does
		// not parse, without the token, is refused 400 (malformed) before the
		// token check; the oracle wanted 401.
		{"%", "0"},
		// Regression (found by this target): a repeated query parameter is not refused: the server acts on
		// its first value (here from=bot: a handover to the agent, 200)
		// where SPEC.md §3 wants a 400 naming the parameter, nothing applied.
		{tok + "identity_foreign_id=" + psidBot + "&from=bot&from=agent&to=agent&type=messenger", ""},
		// Regression (found by this target): same with two access tokens: the first is used (200).
		{tok + "access_token=not-the-token&identity_foreign_id=" + psidAgent + "&from=agent&to=bot&type=messenger&app_id=" + botID, ""},
		// Regression (found by this target): same with app_id given twice, the second empty (200).
		{tok + "identity_foreign_id=" + psidAgent + "&from=agent&to=bot&type=messenger&app_id=" + botID + "&app_id=", ""},
	} {
		f.Add(s[0], s[1])
	}
	ff := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, query, authorization string) {
		if !headerSafe(authorization) {
			return
		}
		var hdr [][2]string
		if authorization != "" {
			hdr = append(hdr, [2]string{"Authorization", authorization})
		}
		raw := fuzzRequest(http.MethodPost, "/1.0/bots/handover?"+query, hdr, nil)
		ff.quiet(t)
		before := ff.revisions(t)
		r, req, ok := ff.serveRequest(raw)
		if !ok {
			return
		}
		ff.inputs++
		if p := ff.statusProblem(r.status); p != "" {
			fail(t, raw, r, "%s", p)
		}
		if !slices.Contains([]int{200, 400, 401, 404, 409, 502, 503}, r.status) {
			fail(t, raw, r, "HTTP %d is not a status of the Bots API (SPEC.md §3.1)", r.status)
		}
		if p := envelopeProblem(r); p != "" {
			fail(t, raw, r, "not the envelope: %s", p)
		}
		if r.status == http.StatusOK && envelopeMessage(r) != "Success" {
			fail(t, raw, r, "200 without the message Success")
		}
		q := req.URL.Query()
		none, exact := credentials(req, q)
		dups := duplicated(q)
		_, perr := url.ParseQuery(req.URL.RawQuery)
		if p := malformedProblem(r, perr); p != "" {
			fail(t, raw, r, "%s", p)
		}
		if p := tokenProblem(r, none, exact, len(dups) > 0 || perr != nil); p != "" {
			fail(t, raw, r, "%s", p)
		}
		if p := dupProblem(r, dups, exact); p != "" && perr == nil { // a malformed query string is refused as that first
			fail(t, raw, r, "%s", p)
		}
		after := ff.revisions(t)
		if none && len(after) != len(before) {
			fail(t, raw, r, "threads went from %d to %d on a request without the token", len(before), len(after))
		}
		if r.status >= 400 && r.status < 500 {
			if changed := ff.callerChanges(t, before, after); len(changed) > 0 {
				fail(t, raw, r, "refused with %d, yet recorded:\n%s", r.status, strings.Join(changed, "\n"))
			}
		}
		if r.status == http.StatusOK {
			key := engine.ThreadKey{PageID: q.Get("page_id"), PSID: q.Get("identity_foreign_id")}
			if key.PageID == "" {
				k, err := ff.eng.FindIdentity(context.Background(), key.PSID)
				if err != nil {
					fail(t, raw, r, "200, but the identity is not found: %v", err)
				}
				key = k
			}
			th, err := ff.eng.Thread(context.Background(), key)
			switch {
			case err != nil:
				fail(t, raw, r, "200, but thread %s: %v", key, err)
			case q.Get("to") == "agent" && th.State != states.Agent && th.State != states.Pending:
				fail(t, raw, r, "200 for to=agent, thread %s is %s", key, th.State)
			case q.Get("to") == "bot" && th.State != states.Bot:
				fail(t, raw, r, "200 for to=bot, thread %s is %s", key, th.State)
			}
		}
	})
}

// ---- FuzzAgentAPI

// Placeholders a seed may put in the path or the query for ids the fixture
// made (or the last 201 made), which the fuzzer could not guess.
func (ff *fuzzFixture) expand(s string) string {
	return strings.NewReplacer("{iv}", ff.ivOpen, "{ivclosed}", ff.ivClosed, "{ct}", ff.content, "{new}", ff.lastID).Replace(s)
}

// agentRoute is the route of the API under /1.0/ a request names — method
// and path, by Echo's rules (the raw path when it has escapes) — or "".
func agentRoute(req *http.Request) string {
	p, m := req.URL.EscapedPath(), req.Method
	route := p
	if rest, ok := strings.CutPrefix(p, "/1.0/interventions/"); ok {
		route = "/1.0/interventions/:id"
		if id, ok := strings.CutSuffix(rest, "/close"); ok {
			rest, route = id, "/1.0/interventions/:id/close"
		}
		if rest == "" || strings.Contains(rest, "/") {
			return ""
		}
	} else if rest, ok := strings.CutPrefix(p, "/1.0/contents/"); ok {
		if rest == "" || strings.Contains(rest, "/") {
			return ""
		}
		route = "/1.0/contents/:id"
	}
	switch route = m + " " + route; route {
	case "POST /1.0/bots/handover", "POST /1.0/interventions", "POST /1.0/contents",
		"PUT /1.0/interventions/:id/close", "GET /1.0/interventions/:id", "GET /1.0/contents/:id":
		return route
	}
	return ""
}

// FuzzAgentAPI sends any method, path under /1.0/, query and body (a form,
// multipart or plain) to the agent API (SPEC.md §3.2), with the token as a
// Bearer header, in the query, or not at all. For every input: no 500 and of
// the 5xx only 502/503; every answer but a 2xx is the envelope; a 201 is a
// JSON object with an id, answered to a POST that creates, the content
// holding the body sent; a 200 shows the record asked for; no token → 401,
// the token → never 401; a repeated parameter → 400 naming it; a refusal
// (4xx) records nothing on any thread.
func FuzzAgentAPI(f *testing.F) {
	const (
		noToken    = 1 // flags: no token at all
		queryToken = 2 // the token as ?access_token= rather than Bearer
		form       = 4 // Content-Type: application/x-www-form-urlencoded
		multipart  = 8 // Content-Type: multipart/form-data; boundary=B
	)
	for _, s := range []struct {
		method, path, query, body string
		flags                     uint8
	}{
		{"POST", "/1.0/interventions", "identity_foreign_id=" + psidBot, "", 0},
		{"POST", "/1.0/interventions", "identity_foreign_id=" + psidAgent, "", queryToken},
		{"POST", "/1.0/interventions", "identity_foreign_id=" + psidEngaged, "", 0}, // 409: already open
		{"POST", "/1.0/interventions", "identity_foreign_id=" + psidTwoPages, "", 0},
		{"POST", "/1.0/interventions", "identity_foreign_id=" + psidTwoPages + "&page_id=" + fuzzPage2, "", 0},
		{"POST", "/1.0/interventions", "identity_foreign_id=" + psid70, "", 0},
		{"POST", "/1.0/interventions", "identity_foreign_id=%zz", "", 0},
		{"POST", "/1.0/interventions", "", "identity_foreign_id=" + psidBot, form},
		{"PUT", "/1.0/interventions/{iv}/close", "", "", 0},
		{"PUT", "/1.0/interventions/{ivclosed}/close", "", "", queryToken},
		{"PUT", "/1.0/interventions/{new}/close", "", "", 0},
		{"GET", "/1.0/interventions/{iv}", "", "", 0},
		{"GET", "/1.0/interventions/{ivclosed}", "", "", noToken},
		{"GET", "/1.0/interventions/0123456789abcdef01234567", "", "", 0},
		{"GET", "/1.0/interventions/%2e%2e%2Fcontents%2F{ct}", "", "", 0},
		{"GET", "/1.0/interventions/..%00", "", "", 0},
		{"GET", "/1.0/interventions/%E2%98%83", "", "", 0},
		{"DELETE", "/1.0/interventions/{iv}", "", "", 0},
		{"HEAD", "/1.0/interventions/{iv}", "", "", 0},
		{"POST", "/1.0/interventions/{iv}/close", "", "", 0},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidEngaged + "&body=thanks%2C+on+it", "", 0},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidBot + "&body=%F0%9F%91%8B+%E4%BD%A0%E5%A5%BD", "", queryToken},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidIdle, "body=from+the+form", form},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidAgent + "&body=query", "body=form+wins", form},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidAgent, "--B\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\nmultipart body\r\n--B--\r\n", multipart},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidAgent, "--B\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\nunterminated", multipart},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidAgent + "&body=%ff%fe", "", 0},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidAgent + "&body=+++", "", 0},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidPage2 + "&body=hi&page_id=" + fuzzPage2, "", 0},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidAgent + "&body=" + strings.Repeat("%C3%A9", 2001), "", 0},
		{"POST", "/1.0/contents", "body=hi", "", 0},
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidAgent + "&body=hi", "", noToken},
		{"GET", "/1.0/contents/{ct}", "", "", 0},
		{"GET", "/1.0/contents/{new}", "", "", queryToken},
		{"GET", "/1.0/contents/%zz", "", "", 0},
		{"GET", "/1.0/contents/", "", "", 0},
		{"PATCH", "/1.0/contents/{ct}", "", "", 0},
		{"POST", "/1.0/bots/handover", "identity_foreign_id=" + psidBot + "&from=bot&to=agent&type=messenger", "", 0},
		// Regression (found by this target): a repeated query parameter is not refused: the content is
		// created (201) for the first identity where SPEC.md §3 wants a 400
		// naming identity_foreign_id, nothing applied.
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidAgent + "&identity_foreign_id=" + psidBot + "&body=to+whom%3F", "", 0},
		// Regression (found by this target): same with body given twice: "one" is sent, "two" dropped (201).
		{"POST", "/1.0/contents", "identity_foreign_id=" + psidAgent + "&body=one&body=two", "", 0},
	} {
		f.Add(s.method, s.path, s.query, s.body, s.flags)
	}
	ff := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, method, path, query, body string, flags uint8) {
		path, query = ff.expand(path), ff.expand(query)
		if !strings.HasPrefix(path, "/1.0/") {
			return
		}
		var hdr [][2]string
		switch {
		case flags&noToken != 0:
		case flags&queryToken != 0:
			if query != "" {
				query += "&"
			}
			query += "access_token=" + apiToken
		default:
			hdr = append(hdr, [2]string{"Authorization", "Bearer " + apiToken})
		}
		switch {
		case flags&form != 0:
			hdr = append(hdr, [2]string{"Content-Type", "application/x-www-form-urlencoded"})
		case flags&multipart != 0:
			hdr = append(hdr, [2]string{"Content-Type", "multipart/form-data; boundary=B"})
		}
		target := path
		if query != "" {
			target += "?" + query
		}
		raw := fuzzRequest(method, target, hdr, []byte(body))
		ff.quiet(t)
		before := ff.revisions(t)
		r, req, ok := ff.serveRequest(raw)
		if !ok {
			return
		}
		ff.inputs++
		if p := ff.statusProblem(r.status); p != "" {
			fail(t, raw, r, "%s", p)
		}
		q := req.URL.Query()
		none, exact := credentials(req, q)
		dups := duplicated(q)
		route := agentRoute(req)
		_, perr := url.ParseQuery(req.URL.RawQuery)
		if p := malformedProblem(r, perr); p != "" && route != "" {
			fail(t, raw, r, "%s", p)
		}
		// A form body that does not parse may hold a token: refused (400)
		// before the token check, as a malformed query string is.
		badForm := formMalformed(raw)
		if p := tokenProblem(r, none, exact, len(dups) > 0 || perr != nil || badForm); p != "" && route != "" {
			fail(t, raw, r, "%s", p)
		}
		if p := dupProblem(r, dups, exact); p != "" && route != "" && perr == nil {
			fail(t, raw, r, "%s", p)
		}
		if r.status >= 400 && r.status < 500 {
			if changed := ff.callerChanges(t, before, ff.revisions(t)); len(changed) > 0 {
				fail(t, raw, r, "refused with %d, yet recorded:\n%s", r.status, strings.Join(changed, "\n"))
			}
		}
		if req.Method == http.MethodHead {
			if len(r.body) > 0 {
				fail(t, raw, r, "a body for HEAD")
			}
			return
		}
		if r.status/100 != 2 {
			if p := envelopeProblem(r); p != "" {
				fail(t, raw, r, "not the envelope: %s", p)
			}
			return
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			fail(t, raw, r, "Content-Type %q, want application/json", ct)
		}
		var obj map[string]any
		if err := json.Unmarshal(r.body, &obj); err != nil {
			fail(t, raw, r, "a %d that is not a JSON object: %v", r.status, err)
		}
		if route == "POST /1.0/bots/handover" {
			if envelopeProblem(r) != "" || envelopeMessage(r) != "Success" {
				fail(t, raw, r, "a handover 2xx that is not the Success envelope")
			}
			return
		}
		id, _ := obj["id"].(string)
		if id == "" {
			fail(t, raw, r, "a %d without an id", r.status)
		}
		want := http.StatusOK
		if req.Method == http.MethodPost {
			want = http.StatusCreated
		}
		if route == "" || r.status != want {
			fail(t, raw, r, "HTTP %d for %s %s (route %q), want %d", r.status, req.Method, req.URL.EscapedPath(), route, want)
		}
		switch route {
		case "POST /1.0/interventions":
			iv := decodeAs[interventionJSON](t, raw, r)
			if iv.Status != engine.InterventionOpen || iv.Closed || iv.ClosedAt != nil || iv.IdentityForeignID != q.Get("identity_foreign_id") {
				fail(t, raw, r, "opened intervention %+v, want open on %s", iv, q.Get("identity_foreign_id"))
			}
		case "PUT /1.0/interventions/:id/close":
			if iv := decodeAs[interventionJSON](t, raw, r); iv.Status != engine.InterventionClosed || !iv.Closed || iv.ClosedAt == nil {
				fail(t, raw, r, "closed intervention %+v, want closed with closed_at", iv)
			}
		case "GET /1.0/interventions/:id":
			if iv := decodeAs[interventionJSON](t, raw, r); iv.Status != engine.InterventionOpen && iv.Status != engine.InterventionClosed {
				fail(t, raw, r, "intervention status %q", iv.Status)
			}
		case "POST /1.0/contents", "GET /1.0/contents/:id":
			ct := decodeAs[contentJSON](t, raw, r)
			if !slices.Contains([]string{engine.SyncPending, engine.SyncSynced, engine.SyncFailed}, ct.SynchronizationStatus) {
				fail(t, raw, r, "synchronization_status %q", ct.SynchronizationStatus)
			}
			if route == "POST /1.0/contents" && (ct.Body != req.FormValue("body") || ct.IdentityForeignID != q.Get("identity_foreign_id")) {
				fail(t, raw, r, "content %s for %s, want the body %q sent for %s", ct.Body, ct.IdentityForeignID, req.FormValue("body"), q.Get("identity_foreign_id"))
			}
		}
		if r.status == http.StatusCreated {
			ff.lastID = id
		}
	})
}

func decodeAs[T any](t *testing.T, raw []byte, r reply) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		fail(t, raw, r, "decoding: %v", err)
	}
	return v
}

// ---- FuzzWebhook

// Signature modes of FuzzWebhook, chosen by mode%8: most inputs are signed
// with the RingCX app's secret, so that the fuzzer explores the parser and
// the engine behind the signature.
const (
	sigNone      = 0 // no X-Hub-Signature-256
	sigOtherApp  = 1 // signed with the bot app's secret
	sigOtherBody = 2 // the signature of another body
	sigSHA1Only  = 3 // only the legacy X-Hub-Signature

	// Other bits of mode.
	jsonType    = 8  // Content-Type: application/json
	wrap        = 16 // the body is the events of one entry: {"object":"page","entry":[{"id":…,"messaging":[body]}]}
	wrapStandby = 32 // … in standby[] rather than messaging[]
	wrapPage2   = 64 // … of page 2 rather than the demo page
)

// namedThreads lists the threads a webhook body names on configured pages,
// and the keys it names that are not numeric PSIDs.
func (ff *fuzzFixture) namedThreads(w *messenger.Webhook) (valid, invalid []engine.ThreadKey) {
	seen := map[engine.ThreadKey]bool{}
	for _, en := range w.Entry {
		if _, ok := ff.eng.Page(string(en.ID)); !ok {
			continue
		}
		for _, ev := range append(slices.Clone(en.Messaging), en.Standby...) {
			if ev.Kind() == messenger.KindAppRoles {
				continue
			}
			k := engine.ThreadKey{PageID: string(en.ID), PSID: string(ev.CustomerID())}
			if seen[k] {
				continue
			}
			seen[k] = true
			if isPSID(k.PSID) {
				valid = append(valid, k)
			} else {
				invalid = append(invalid, k)
			}
		}
	}
	return valid, invalid
}

func isPSID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// webhookState is what a refused webhook must leave alone: the number of
// threads in each state, the named threads' revisions, and the pages.
func (ff *fuzzFixture) webhookState(t *testing.T, body []byte) string {
	t.Helper()
	counts, err := ff.db.StateCounts(context.Background())
	if err != nil {
		t.Fatalf("state counts: %v", err)
	}
	out := fmt.Sprintf("counts %v; pages %+v", counts, ff.eng.Pages())
	if w, err := messenger.ParseWebhook(body); err == nil {
		valid, _ := ff.namedThreads(w)
		for _, k := range valid {
			th, err := ff.eng.Thread(context.Background(), k)
			out += fmt.Sprintf("; %s rev %d %v", k, th.Revision, engine.ErrorCode(err))
		}
	}
	return out
}

// FuzzWebhook posts arbitrary bodies to POST /webhooks/messenger, signed
// with the RingCX app's secret for most inputs and unsigned or mis-signed for
// the others (mode); with mode&wrap the fuzzed bytes are the events of one
// entry, so that mutations reach the engine more often than Meta's envelope
// survives them. For every input: unsigned or mis-signed → 403 in the
// envelope and nothing applied (no thread created or changed, no page
// changed); signed → 200 "Success", or 400 exactly when Meta's shape cannot
// be parsed (the envelope, saying why), or 503 only if the store is down —
// never 500; after a 200, every thread the body names that threadctl has
// passes its invariants (threadProblem: the debug view loads and agrees with
// itself), non-numeric PSIDs made no thread, and the store passes Check
// (after every input while the store is small, then every 50th).
func FuzzWebhook(f *testing.F) {
	ms := time.Now().UnixMilli()
	ev := func(psid, payload string) string {
		return fmt.Sprintf(`{"sender":{"id":"%s"},"recipient":{"id":"%s"},"timestamp":%d,%s}`, psid, pageID, ms, payload)
	}
	entry := func(page, field string, events ...string) string {
		return fmt.Sprintf(`{"id":"%s","time":%d,"%s":[%s]}`, page, ms, field, strings.Join(events, ","))
	}
	hook := func(entries ...string) []byte {
		return []byte(`{"object":"page","entry":[` + strings.Join(entries, ",") + `]}`)
	}
	msg := func(mid string) string { return `"message":{"mid":"` + mid + `","text":"hi"}` }
	var fifty []string
	for i := range 50 {
		fifty = append(fifty, entry(pageID, "messaging", ev(fmt.Sprintf("73000000000%05d", i), msg(fmt.Sprintf("m_fifty_%d", i)))))
	}
	for _, s := range []struct {
		body []byte
		mode uint8
	}{
		{hook(entry(pageID, "standby", ev("7300000000000001", msg("m_1")))), 4},
		{hook(entry(pageID, "messaging", ev(psidAgent, msg("m_2")))), 5},
		{hook(entry(pageID, "messaging", ev(psidBot, `"pass_thread_control":{"previous_owner_app_id":`+botID+`,"new_owner_app_id":`+ringcxID+`,"metadata":"x"}`))), 6},
		{hook(entry(pageID, "standby", ev(psidAgent, `"take_thread_control":{"previous_owner_app_id":"`+ringcxID+`","new_owner_app_id":"`+botID+`"}`))), 7},
		{hook(entry(pageID, "messaging", ev(psidAgent, `"request_thread_control":{"requested_owner_app_id":`+botID+`,"metadata":"give"}`))), 4},
		{hook(entry(pageID, "messaging", ev(psidEngaged, `"request_thread_control":{"requested_owner_app_id":"`+bot2ID+`"}`))), 4},
		{hook(entry(pageID, "messaging", ev(psidIdle, `"pass_thread_control":{"previous_owner_app_id":null,"new_owner_app_id":"263902037430900"}`))), 4},
		// messaging and standby in one entry, numbers as strings and as numbers.
		{[]byte(fmt.Sprintf(`{"object":"page","entry":[{"id":%s,"time":%d,"messaging":[{"sender":{"id":%s},"recipient":{"id":%s},"timestamp":%d,"message":{"mid":"m_3","text":"a"}}],"standby":[{"sender":{"id":"%s"},"recipient":{"id":"%s"},"timestamp":"%d","message":{"mid":"m_4","text":"b"}}]}]}`,
			pageID, ms, psidBot, pageID, ms, psidBot, pageID, ms)), 4},
		{[]byte(fmt.Sprintf(`{"object":"page","entry":[{"id":%s,"time":%d,"messaging":[{"sender":{"id":%s},"recipient":{"id":%s},"timestamp":%d,"message":{"mid":"m_5","text":"a"}}],"standby":[{"sender":{"id":%s},"recipient":{"id":%s},"timestamp":%d,"message":{"mid":"m_6","text":"b"}}]}]}`,
			pageID, ms, psidBot, pageID, ms, psidAgent, pageID, ms)), 5},
		// app_roles: the primary moves to RingCX, then back to the bot.
		{hook(`{"id":"` + pageID + `","time":1,"messaging":[{"recipient":{"id":"` + pageID + `"},"timestamp":1,"app_roles":{"` + ringcxID + `":["primary_receiver"]}}]}`), 4},
		{hook(`{"id":"` + pageID + `","time":1,"messaging":[{"recipient":{"id":"` + pageID + `"},"timestamp":2,"app_roles":{"` + botID + `":["primary_receiver"],"` + ringcxID + `":["secondary_receiver"]}}]}`), 4},
		{hook(`{"id":"` + pageID + `","messaging":[{"app_roles":{"` + ringcxID + `":["primary_receiver"]}}]}`), 0},
		{hook(fifty...), 4},
		{hook(entry(pageID, "messaging", ev(psid70, msg("m_70")))), 4},
		{hook(entry(pageID, "messaging", ev("72000000000000%30", msg("m_esc")), ev("-1", msg("m_neg")), ev("7.2e15", msg("m_float")))), 4},
		{hook(entry(pageID, "messaging", `{"sender":{"id":7200000000000007},"recipient":{"id":1},"timestamp":-1,"message":{"mid":"","text":"\u202e\u0000"}}`)), 4},
		{hook(entry(pageID, "messaging", `{"sender":{"id":"7200000000000008"},"recipient":{"id":1},"timestamp":99999999999999,"postback":{"title":"t","payload":"p"}}`)), 4},
		// Regression (found by this target): a correctly signed webhook whose
		// event timestamp is past year 9999 was answered 503 (the thread's
		// time could not be encoded), so Meta would deliver it for ever. Now
		// it is refused as unparsable: 400, saying why.
		{[]byte(`{"object":"page","entry":[{"id":"` + pageID + `","messaging":[{"sender":{"id":"7200000000000009"},"timestamp":253402300800000,"message":{"mid":"m"}}]}]}`), 4},
		{hook(entry(pageID, "messaging", `{"sender":{"id":"7200000000000010"},"timestamp":253402300799999,"message":{"mid":"m_y9999"}}`)), 4}, // the last millisecond of year 9999
		{hook(entry(fuzzPage2, "standby", ev(psidTwoPages, msg("m_7")))), 4},
		{hook(entry("100000000000999", "messaging", ev("7300000000000002", msg("m_8")))), 4},
		{hook(entry(pageID, "messaging", ev("7300000000000003", `"read":{"watermark":1}`), ev("7300000000000003", `"delivery":{"mids":["x"]}`), ev("7300000000000003", `"message":{"mid":"m_echo","is_echo":true,"app_id":`+botID+`}`))), 4},
		{[]byte(`{"object":"page","entry":[]}`), 4},
		{[]byte(`{"object":"instagram","entry":[{"id":"1"}]}`), 4},
		{[]byte(`{"object":"page","entry":[{"id":"","messaging":[]}]}`), 4},
		{[]byte(`{"object":"page","entry":[{"id":"` + pageID + `","messaging":[{"recipient":{"id":"1"},"message":{"mid":"m"}}]}]}`), 4},
		{[]byte(`{"object":"page","entry":[{"id":1.5}]}`), 4},
		{[]byte(`not json`), 4},
		{[]byte(``), 4},
		{hook(entry(pageID, "messaging", ev("7300000000000004", msg("m_9")))), sigNone},
		{hook(entry(pageID, "messaging", ev(psidBot, `"pass_thread_control":{"new_owner_app_id":"`+ringcxID+`"}`))), sigOtherApp},
		{hook(entry(pageID, "messaging", ev("7300000000000005", msg("m_10")))), sigOtherBody},
		{hook(entry(pageID, "messaging", ev("7300000000000006", msg("m_11")))), sigSHA1Only},
	} {
		f.Add(s.body, s.mode)
	}
	// Events alone, wrapped by the target (mode&wrap).
	for i, e := range []string{
		`{"sender":{"id":"7300000000000100"},"recipient":{"id":"` + pageID + `"},"timestamp":1,"message":{"mid":"m_w1","text":"hi"}}`,
		`{"sender":{"id":` + psidBot + `},"timestamp":2,"pass_thread_control":{"previous_owner_app_id":` + botID + `,"new_owner_app_id":` + ringcxID + `}}`,
		`{"sender":{"id":"` + psidAgent + `"},"timestamp":3,"take_thread_control":{"previous_owner_app_id":"` + ringcxID + `","new_owner_app_id":"` + bot2ID + `"}}`,
		`{"sender":{"id":"` + psidIdle + `"},"timestamp":4,"request_thread_control":{"requested_owner_app_id":"` + botID + `"}}`,
		`{"sender":{"id":"` + psidEngaged + `"},"timestamp":5,"postback":{"title":"Talk to a human","payload":"AGENT"}}`,
		`{"recipient":{"id":"` + pageID + `"},"timestamp":6,"app_roles":{"` + bot2ID + `":["primary_receiver"]}}`,
		`{"sender":{"id":"` + psidTwoPages + `"},"timestamp":7,"message":{"mid":"m_w2","text":"hi"}},{"sender":{"id":"` + psidTwoPages + `"},"timestamp":8,"pass_thread_control":{"new_owner_app_id":"` + ringcxID + `"}}`,
	} {
		f.Add([]byte(e), uint8(4+wrap+uint8(i%2)*wrapStandby+uint8(i/6)*wrapPage2))
	}
	ff := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		if mode&wrap != 0 {
			field, page := "messaging", pageID
			if mode&wrapStandby != 0 {
				field = "standby"
			}
			if mode&wrapPage2 != 0 {
				page = fuzzPage2
			}
			body = []byte(`{"object":"page","entry":[{"id":"` + page + `","time":1,"` + field + `":[` + string(body) + `]}]}`)
		}
		var hdr [][2]string
		sig256, sig1 := messenger.Sign(body, ringcxSecret)
		switch mode % 8 {
		case sigNone:
		case sigOtherApp:
			s, _ := messenger.Sign(body, "bot-secret")
			hdr = append(hdr, [2]string{"X-Hub-Signature-256", s})
		case sigOtherBody:
			s, _ := messenger.Sign(append(slices.Clone(body), ' '), ringcxSecret)
			hdr = append(hdr, [2]string{"X-Hub-Signature-256", s})
		case sigSHA1Only:
			hdr = append(hdr, [2]string{"X-Hub-Signature", sig1})
		default:
			hdr = append(hdr, [2]string{"X-Hub-Signature-256", sig256}, [2]string{"X-Hub-Signature", sig1})
		}
		signed := mode%8 > sigSHA1Only
		if mode&jsonType != 0 {
			hdr = append(hdr, [2]string{"Content-Type", "application/json"})
		}
		raw := fuzzRequest(http.MethodPost, "/webhooks/messenger", hdr, body)
		var before string
		if !signed {
			ff.quiet(t)
			before = ff.webhookState(t, body)
		}
		r, ok := ff.serve(raw)
		if !ok {
			t.Fatalf("the fixture's own request is refused: %q", raw)
		}
		ff.inputs++
		if p := ff.statusProblem(r.status); p != "" {
			fail(t, raw, r, "%s", p)
		}
		if len(body) > 1<<20 {
			if r.status != http.StatusRequestEntityTooLarge {
				fail(t, raw, r, "a body over 1 MiB is answered %d, want 413", r.status)
			}
			return
		}
		if !signed {
			if r.status != http.StatusForbidden {
				fail(t, raw, r, "a webhook without the right signature is answered %d, want 403", r.status)
			}
			if p := envelopeProblem(r); p != "" {
				fail(t, raw, r, "not the envelope: %s", p)
			}
			ff.quiet(t)
			if after := ff.webhookState(t, body); after != before {
				fail(t, raw, r, "a refused webhook changed threadctl:\nbefore %s\nafter  %s", before, after)
			}
			return
		}
		w, parseErr := messenger.ParseWebhook(body)
		switch {
		case r.status == http.StatusOK:
			if parseErr != nil {
				fail(t, raw, r, "200 for a body the parser refuses: %v", parseErr)
			}
			if string(bytes.TrimSpace(r.body)) != successBody {
				fail(t, raw, r, "200 without the Success envelope")
			}
		case r.status == http.StatusBadRequest:
			if p := envelopeProblem(r); p != "" {
				fail(t, raw, r, "not the envelope: %s", p)
			}
			if parseErr == nil {
				fail(t, raw, r, "400 for a body Meta's shape parses")
			}
			if msg, why := envelopeMessage(r), asJSONText(parseErr.Error()); !strings.Contains(msg, why) {
				fail(t, raw, r, "the 400 does not say why: %q, want it to contain %q", msg, why)
			}
			return
		case r.status == http.StatusServiceUnavailable:
			if p := envelopeProblem(r); p != "" {
				fail(t, raw, r, "not the envelope: %s", p)
			}
			return
		default:
			fail(t, raw, r, "a signed webhook is answered %d, want 200, 400 or 503", r.status)
		}
		ff.quiet(t)
		valid, invalid := ff.namedThreads(w)
		for _, k := range invalid {
			if _, err := ff.eng.Thread(context.Background(), k); engine.ErrorCode(err) != engine.CodeNotFound {
				fail(t, raw, r, "PSID %q is not a numeric PSID, yet thread %s: %v", k.PSID, k, err)
			}
		}
		for i, k := range valid {
			_, err := ff.eng.Thread(context.Background(), k)
			if engine.ErrorCode(err) == engine.CodeNotFound {
				continue
			}
			if p := ff.threadProblem(t, k); p != "" {
				fail(t, raw, r, "%s", p)
			}
			if i == 0 && ff.inputs%20 == 1 {
				page := fuzzRequest(http.MethodGet, "/debug/threads/"+url.PathEscape(k.PSID)+"/view?page_id="+k.PageID, [][2]string{{"Authorization", "Bearer " + apiToken}}, nil)
				if v, _ := ff.serve(page); v.status != http.StatusOK {
					fail(t, raw, v, "the debug page of %s does not load", k)
				}
			}
		}
		counts, err := ff.db.StateCounts(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, c := range counts {
			n += c
		}
		if n <= 1000 || ff.inputs%50 == 0 {
			if p := ff.storeProblem(); p != "" {
				fail(t, raw, r, "after this input (or one of the last 50): %s", p)
			}
		}
	})
}

// ---- FuzzDebug

// Paths of FuzzDebug, chosen by kind%8; seg is the fuzzed segment.
var debugPaths = []func(seg string) string{
	func(string) string { return "/debug/threads" },
	func(seg string) string { return "/debug/threads/" + seg },
	func(seg string) string { return "/debug/threads/" + seg + "/view" },
	func(string) string { return "/debug/" },
	func(seg string) string { return "/diagrams/" + seg },
	func(seg string) string { return "/diagrams/threads/" + seg },
	func(string) string { return "/debug" },
	func(seg string) string { return "/diagrams/workflows/" + seg },
}

// How FuzzDebug passes the token, chosen by kind/8%4.
const (
	authBearer = iota
	authQuery
	authNone
	authWrong
)

var hrefRE = regexp.MustCompile(`href="([^"]*)"`)

// FuzzDebug reads the inspection endpoints — /debug/threads,
// /debug/threads/{id}, /debug/threads/{id}/view, /debug/, /debug,
// /diagrams/{file}, /diagrams/threads/{file}, /diagrams/workflows/{file} —
// with a fuzzed path segment and query, the token as Bearer, in the query,
// wrong or missing. For every input: no 500 (501 only for SVG without
// Graphviz); JSON answers are the envelope unless 2xx, and a 2xx JSON is an
// object; HTML pages carry the debug headers (debugpage.go), keep a query
// token in their local links and never write a Bearer token into the page;
// redirects stay on this server; a 200 diagram has its format's Content-Type;
// no token → 401, the token → never 401; and reading changes no thread.
func FuzzDebug(f *testing.F) {
	for _, s := range []struct {
		kind       uint8
		seg, query string
	}{
		{0, "", ""},
		{0, "", "state=agent&page_id=" + pageID},
		{0, "", "state=bot&limit=1"},
		{0, "", "limit=0"},
		{0, "", "limit=501"},
		{0, "", "state=nonsense"},
		{0, "", "cursor=%00%ff&limit=2"},
		{0, "", "cursor=bot%00" + pageID + "%00" + psidBot},
		{1, psidEngaged, ""},
		{1, psidEngaged, "limit=1&before=2"},
		{1, psidTwoPages, ""},
		{1, psidTwoPages, "page_id=" + fuzzPage2},
		{1, psid70, ""},
		{1, "72000000000000%30%31", ""},
		{1, "%E2%98%83", ""},
		{1, psidIdle, "before=-1"},
		{1, psidIdle, "limit=abc"},
		{2, psidEngaged, ""},
		{2, psidIdle, "limit=1"},
		{2, psidTwoPages, ""},
		{2, "%3Cscript%3Ealert(1)%3C%2Fscript%3E", ""},
		{2 + 8*authQuery, psidEngaged, "limit=1"},
		{3, "", ""},
		{3, "", "state=pending-request&page_id=1"},
		{3, "", "identity=" + psidBot},
		{3, "", "identity=%2F%2Fevil.example"},
		{3 + 8*authQuery, "", "state=agent"},
		{3 + 8*authQuery, "", "identity=" + psidBot + "&page_id=" + pageID},
		{4, "bot.mmd", ""},
		{4, "ringcx.dot", ""},
		{4, "none.svg", ""},
		{4, "nobody.svg", ""},
		{4, "bot.png", ""},
		{4, ".mmd", ""},
		{5, psidEngaged + ".mmd", ""},
		{5, psidAgent + ".svg", "page_id=" + pageID},
		{5, psidTwoPages + ".dot", ""},
		{5, "x.dot", ""},
		{6, "", "a=b&c"},
		{6 + 8*authQuery, "", "state=idle"},
		{7, "bot-primary.mmd", ""},
		{7, "unknown.svg", ""},
		{1 + 8*authNone, psidBot, ""},
		{3 + 8*authNone, "", ""},
		{4 + 8*authWrong, "bot.mmd", ""},
		{2 + 8*authWrong, psidBot, "access_token=" + apiToken},
	} {
		f.Add(s.kind, s.seg, s.query)
	}
	ff := newFuzzFixture(f)
	_, noGraphviz := exec.LookPath("dot")
	f.Fuzz(func(t *testing.T, kind uint8, seg, query string) {
		path := debugPaths[kind%8](seg)
		auth := int(kind / 8 % 4)
		var hdr [][2]string
		switch auth {
		case authBearer:
			hdr = append(hdr, [2]string{"Authorization", "Bearer " + apiToken})
		case authQuery:
			if query != "" {
				query += "&"
			}
			query += "access_token=" + apiToken
		case authWrong:
			hdr = append(hdr, [2]string{"Authorization", "Bearer not-the-token"})
		}
		target := path
		if query != "" {
			target += "?" + query
		}
		raw := fuzzRequest(http.MethodGet, target, hdr, nil)
		ff.quiet(t)
		before := ff.revisions(t)
		r, req, ok := ff.serveRequest(raw)
		if !ok {
			return
		}
		ff.inputs++
		if p := ff.statusProblem(r.status); p != "" && !(r.status == http.StatusNotImplemented && noGraphviz != nil) {
			fail(t, raw, r, "%s", p)
		}
		q := req.URL.Query()
		none, exact := credentials(req, q)
		routed := strings.HasPrefix(req.URL.Path, "/debug") || strings.HasPrefix(req.URL.Path, "/diagrams/")
		if p := tokenProblem(r, none, exact, false); p != "" && routed && r.status != http.StatusNotFound {
			fail(t, raw, r, "%s", p)
		}
		ct := r.header.Get("Content-Type")
		switch {
		case r.status >= 300 && r.status < 400:
			loc := r.header.Get("Location")
			if !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") || strings.HasPrefix(loc, "/\\") {
				fail(t, raw, r, "redirect to %q leaves the server", loc)
			}
		case strings.HasPrefix(ct, "application/json"):
			if r.status/100 != 2 {
				if p := envelopeProblem(r); p != "" {
					fail(t, raw, r, "not the envelope: %s", p)
				}
			} else if !json.Valid(r.body) || !bytes.HasPrefix(r.body, []byte("{")) {
				fail(t, raw, r, "a 2xx JSON answer that is not a JSON object")
			}
		case strings.HasPrefix(ct, "text/html"):
			for k, v := range map[string]string{
				"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
				"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
			} {
				if got := r.header.Get(k); got != v {
					fail(t, raw, r, "HTML page with %s %q, want %q", k, got, v)
				}
			}
			// The Bearer token stays in its header: the page may carry a
			// query's own access_token along, never the header's.
			bearerOnly := auth == authBearer && !slices.Contains(q["access_token"], apiToken)
			for _, m := range hrefRE.FindAllSubmatch(r.body, -1) {
				href := strings.ReplaceAll(string(m[1]), "&amp;", "&")
				switch {
				case bearerOnly && strings.Contains(href, "access_token="+apiToken):
					fail(t, raw, r, "the page opened with a Bearer token writes it into link %q", href)
				case auth == authQuery && strings.HasPrefix(href, "/") && !strings.Contains(href, "access_token="+apiToken):
					fail(t, raw, r, "the page opened with ?access_token= loses it in link %q", href)
				}
			}
			if bearerOnly && bytes.Contains(r.body, []byte(`value="`+apiToken+`"`)) {
				fail(t, raw, r, "the page opened with a Bearer token writes it into a form")
			}
		case r.status == http.StatusOK && strings.HasPrefix(req.URL.Path, "/diagrams/"):
			want := map[string]string{".mmd": "text/plain; charset=utf-8", ".dot": "text/vnd.graphviz; charset=utf-8", ".svg": "image/svg+xml"}[pathExt(req.URL.Path)]
			if ct != want || len(r.body) == 0 {
				fail(t, raw, r, "diagram with Content-Type %q and %d bytes, want %q", ct, len(r.body), want)
			}
		default:
			fail(t, raw, r, "an answer with Content-Type %q", ct)
		}
		if changed := ff.revisions(t); !maps.Equal(before, changed) {
			fail(t, raw, r, "reading changed threads: before %v, after %v", before, changed)
		}
	})
}

func pathExt(p string) string {
	if i := strings.LastIndexByte(p, '.'); i >= 0 && !strings.Contains(p[i:], "/") {
		return p[i:]
	}
	return ""
}

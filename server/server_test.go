package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
)

// The demo page of SPEC.md §7, and a second bot app.
const (
	pageID   = "100000000000001"
	ringcxID = "200000000000001"
	botID    = "300000000000001"
	bot2ID   = "300000000000002"

	otherPage = "100000000000999" // not configured

	apiToken     = "dev-token"
	verifyToken  = "dev-verify"
	ringcxSecret = "ringcx-secret"
)

// fixture is the server under test on a real bbolt store and a real engine,
// talking to the Messenger simulator over loopback HTTP; the simulator
// delivers the RingCX app's webhooks to the server's /webhooks/messenger.
type fixture struct {
	sim     *sim.Sim
	db      *store.DB
	eng     *engine.Engine
	srv     *server.Server
	metrics *server.Metrics
	url     string
	client  *http.Client

	storeClosed bool
}

// newFixture starts the fixture; opts change the server's configuration.
func newFixture(t *testing.T, opts ...func(*server.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{}

	db, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
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
	eng, err := engine.New(engine.Config{Store: db, Graph: graph, RetryDelay: 200 * time.Millisecond, Observer: f.metrics})
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	f.eng = eng
	// Cleanups run last-registered first: the simulator stops delivering,
	// then the server stops, then the engine and the store close.
	t.Cleanup(func() {
		eng.Close()
		if f.storeClosed {
			return
		}
		if problems, err := db.Check(); err != nil || len(problems) > 0 {
			t.Errorf("store check: %v %v", problems, err)
		}
		db.Close()
	})
	if err := eng.SetPage(ctx, engine.Page{ID: pageID, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID, bot2ID}}); err != nil {
		t.Fatalf("SetPage: %v", err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatalf("engine.Start: %v", err)
	}

	cfg := server.Config{
		Engine: eng, APITokens: []string{apiToken}, VerifyToken: verifyToken,
		WebhookSecrets: []string{ringcxSecret}, Ready: eng.Ping, Metrics: f.metrics,
	}
	for _, o := range opts {
		o(&cfg)
	}
	f.srv, err = server.New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	hs := httptest.NewServer(f.srv.Handler())
	f.url, f.client = hs.URL, hs.Client()
	f.client.Timeout = 10 * time.Second // a hung request fails its test
	t.Cleanup(hs.Close)
	t.Cleanup(func() {
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
		t.Fatalf("sim.PutPage: %v", err)
	}
	return f
}

// closeStore closes the bbolt store under the running server.
func (f *fixture) closeStore(t *testing.T) {
	t.Helper()
	f.settle(t)
	if err := f.db.Close(); err != nil {
		t.Fatalf("closing the store: %v", err)
	}
	f.storeClosed = true
}

var psidSeq atomic.Int64

// newPSID returns a fresh customer PSID (all of the same length, so they sort
// as numbers).
func newPSID() string { return strconv.FormatInt(7100000000000000+psidSeq.Add(1), 10) }

// reply is an HTTP answer, read in full.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) String() string { return fmt.Sprintf("HTTP %d %s", r.status, bytes.TrimSpace(r.body)) }

// do sends a request to the server under test.
func (f *fixture) do(t *testing.T, method, target string, hdr http.Header, body io.Reader) reply {
	t.Helper()
	req, err := http.NewRequest(method, f.url+target, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, target, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// api sends a request with the API token in the query string.
func (f *fixture) api(t *testing.T, method, path string, q url.Values) reply {
	t.Helper()
	q = clone(q)
	q.Set("access_token", apiToken)
	return f.do(t, method, path+"?"+q.Encode(), nil, nil)
}

func clone(q url.Values) url.Values {
	out := url.Values{}
	for k, vs := range q {
		out[k] = slices.Clone(vs)
	}
	return out
}

func bearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// handoverQuery is the query of a valid POST /1.0/bots/handover (no token).
func handoverQuery(psid, from, to, appID string) url.Values {
	q := url.Values{"identity_foreign_id": {psid}, "from": {from}, "to": {to}, "type": {"messenger"}}
	if appID != "" {
		q.Set("app_id", appID)
	}
	return q
}

func (f *fixture) settle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.sim.Settle(ctx); err != nil {
		t.Fatalf("sim.Settle: %v", err)
	}
}

// thread reads threadctl's record of a thread directly from the engine.
func (f *fixture) thread(t *testing.T, psid string) engine.Thread {
	t.Helper()
	th, err := f.eng.Thread(context.Background(), engine.ThreadKey{PageID: pageID, PSID: psid})
	if err != nil {
		t.Fatalf("thread %s: %v", psid, err)
	}
	return th
}

// waitState waits until threadctl's state and Meta's owner (the
// simulator's; "" is idle) are the ones given.
func (f *fixture) waitState(t *testing.T, psid string, want states.State, metaOwner string) {
	t.Helper()
	f.settle(t)
	eventually(t, func() (bool, string) {
		got, owner := f.thread(t, psid).State, f.sim.Thread(pageID, psid).OwnerAppID
		return got == want && owner == metaOwner,
			fmt.Sprintf("threadctl state %s, Meta owner %q; want %s, %q", got, owner, want, metaOwner)
	})
}

func eventually(t *testing.T, ok func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		done, msg := ok()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// customer makes the customer write on the demo page (primary = the bot
// app), which gives the thread to the bot: threadctl's state is bot.
func (f *fixture) customer(t *testing.T, psid string) {
	t.Helper()
	if _, err := f.sim.CustomerMessage(pageID, psid, "hello"); err != nil {
		t.Fatalf("customer message: %v", err)
	}
	f.waitState(t, psid, states.Bot, botID)
}

// toAgent brings a new thread to agent through the Bots API and the
// reference bot passing control.
func (f *fixture) toAgent(t *testing.T, psid string) {
	t.Helper()
	f.customer(t, psid)
	if r := f.api(t, http.MethodPost, "/1.0/bots/handover", handoverQuery(psid, "bot", "agent", "")); r.status != http.StatusOK {
		t.Fatalf("handover to agent: %v", r)
	}
	f.waitState(t, psid, states.Agent, ringcxID)
}

// toIdle brings a new thread to idle: to agent, then an intervention opened
// and closed, which releases the thread.
func (f *fixture) toIdle(t *testing.T, psid string) {
	t.Helper()
	f.toAgent(t, psid)
	iv := f.openIntervention(t, psid)
	if r := f.api(t, http.MethodPut, "/1.0/interventions/"+iv.ID+"/close", nil); r.status != http.StatusOK {
		t.Fatalf("close intervention: %v", r)
	}
	f.waitState(t, psid, states.Idle, "")
}

// toPending brings a new thread to pending-request: the bot owns it, RingCX
// asks for control, and the reference bot's pass fails (until t ends).
func (f *fixture) toPending(t *testing.T, psid string) {
	t.Helper()
	f.customer(t, psid)
	f.failBotPass(t)
	if r := f.api(t, http.MethodPost, "/1.0/bots/handover", handoverQuery(psid, "bot", "agent", "")); r.status != http.StatusOK {
		t.Fatalf("handover to agent: %v", r)
	}
	f.waitState(t, psid, states.Pending, botID)
}

// failBotPass makes the reference bot's pass_thread_control fail until t
// ends, so that RingCX's requests for control stay pending.
func (f *fixture) failBotPass(t *testing.T) {
	f.sim.SetFault(sim.Fault{Call: "pass_thread_control", Status: 500, AppID: botID})
	t.Cleanup(f.sim.ClearFaults)
}

// openIntervention opens an intervention through the agent API.
func (f *fixture) openIntervention(t *testing.T, psid string) interventionJSON {
	t.Helper()
	r := f.api(t, http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {psid}})
	if r.status != http.StatusCreated {
		t.Fatalf("open intervention: %v", r)
	}
	return decode[interventionJSON](t, r)
}

// checkEnvelope checks an answer in the Bots API envelope: the HTTP status,
// the status field equal to it, the keys status then message and nothing
// else, and a message that contains each of parts.
func checkEnvelope(t *testing.T, r reply, wantStatus int, parts ...string) string {
	t.Helper()
	if r.status != wantStatus {
		t.Errorf("HTTP status = %d, want %d (body %s)", r.status, wantStatus, bytes.TrimSpace(r.body))
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if prefix := fmt.Sprintf(`{"status":%d,"message":`, r.status); !bytes.HasPrefix(r.body, []byte(prefix)) {
		t.Errorf("body = %s, want it to start with %s", bytes.TrimSpace(r.body), prefix)
	}
	var env struct {
		Status  int    `json:"status"`
		Message string `json:"message"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		t.Fatalf("body %s is not the envelope: %v", bytes.TrimSpace(r.body), err)
	}
	if env.Status != r.status {
		t.Errorf("status field = %d, want the HTTP status %d", env.Status, r.status)
	}
	if env.Message == "" {
		t.Errorf("message is empty")
	}
	for _, p := range parts {
		if !strings.Contains(env.Message, p) {
			t.Errorf("message = %q, want it to contain %q", env.Message, p)
		}
	}
	return env.Message
}

const successBody = `{"status":200,"message":"Success"}`

func checkSuccess(t *testing.T, r reply) bool {
	t.Helper()
	if got := string(bytes.TrimSpace(r.body)); r.status != http.StatusOK || got != successBody {
		t.Errorf("answer = HTTP %d %s, want HTTP 200 %s", r.status, got, successBody)
		return false
	}
	return true
}

func decode[T any](t *testing.T, r reply) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decoding %s: %v", bytes.TrimSpace(r.body), err)
	}
	return v
}

// The JSON shapes of the agent and debug APIs, as clients read them.
type interventionJSON struct {
	ID                string     `json:"id"`
	IdentityForeignID string     `json:"identity_foreign_id"`
	PageID            string     `json:"page_id"`
	Status            string     `json:"status"`
	Closed            bool       `json:"closed"`
	CreatedAt         time.Time  `json:"created_at"`
	ClosedAt          *time.Time `json:"closed_at"`
	ThreadState       string     `json:"thread_state"`
}

type contentJSON struct {
	ID                    string     `json:"id"`
	IdentityForeignID     string     `json:"identity_foreign_id"`
	PageID                string     `json:"page_id"`
	InterventionID        string     `json:"intervention_id"`
	Body                  string     `json:"body"`
	SynchronizationStatus string     `json:"synchronization_status"`
	SynchronizationError  string     `json:"synchronization_error"`
	ForeignID             string     `json:"foreign_id"`
	SynchronizedAt        *time.Time `json:"synchronized_at"`
}

type threadJSON struct {
	IdentityForeignID string `json:"identity_foreign_id"`
	PageID            string `json:"page_id"`
	State             string `json:"state"`
	OwnerAppID        string `json:"owner_app_id"`
	Primary           string `json:"primary"`
	Revision          uint64 `json:"revision"`
	Intervention      *struct {
		ID string `json:"id"`
	} `json:"intervention"`
	PendingRequest *struct {
		RequestedAt time.Time `json:"requested_at"`
		Deadline    time.Time `json:"deadline"`
		Reason      string    `json:"reason"`
	} `json:"pending_request"`
	QueuedContents  []contentJSON    `json:"queued_contents"`
	AvailableEvents []string         `json:"available_events"`
	Transitions     []transitionJSON `json:"transitions"`
	Before          uint64           `json:"transitions_before"`
}

type transitionJSON struct {
	Revision uint64    `json:"revision"`
	At       time.Time `json:"at"`
	Event    string    `json:"event"`
	Cause    string    `json:"cause"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Outcome  string    `json:"outcome"`
	Calls    []struct {
		Call    string `json:"call"`
		Target  string `json:"target_app_id"`
		Outcome string `json:"outcome"`
		Error   string `json:"error"`
	} `json:"graph_calls"`
}

type threadListJSON struct {
	Threads    []threadJSON `json:"threads"`
	NextCursor string       `json:"next_cursor"`
}

// ---- Bots API (SPEC.md §3.1)

func TestHandoverAuth(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	before := f.thread(t, psid).Revision
	valid := handoverQuery(psid, "bot", "agent", "").Encode()

	tests := []struct {
		name   string
		query  string
		header http.Header
		want   string
	}{
		{"missing token", valid, nil, "missing access token"},
		{"empty access_token", valid + "&access_token=", nil, "missing access token"},
		{"wrong token in query", valid + "&access_token=not-the-token", nil, "invalid access token"},
		{"wrong Bearer token", valid, bearer("not-the-token"), "invalid access token"},
		{"wrong Bearer token with a good query token", valid + "&access_token=" + apiToken, bearer("not-the-token"), "invalid access token"},
		{"Authorization Basic", valid, http.Header{"Authorization": {"Basic ZGV2LXRva2Vu"}}, `"Bearer <access_token>"`},
		{"Authorization without scheme", valid, http.Header{"Authorization": {apiToken}}, `"Bearer <access_token>"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodPost, "/1.0/bots/handover?"+tc.query, tc.header, nil)
			checkEnvelope(t, r, http.StatusUnauthorized, tc.want)
			if got := f.thread(t, psid); got.Revision != before || got.State != states.Bot {
				t.Errorf("thread after a refused call: %s rev %d, want bot rev %d", got.State, got.Revision, before)
			}
		})
	}
}

func TestHandoverBadRequest(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	before := f.thread(t, psid).Revision

	tests := []struct {
		name   string
		change func(q url.Values)
		want   []string
	}{
		{"missing identity_foreign_id", func(q url.Values) { q.Del("identity_foreign_id") }, []string{"identity_foreign_id is required"}},
		{"missing from", func(q url.Values) { q.Del("from") }, []string{"from is required"}},
		{"missing to", func(q url.Values) { q.Del("to") }, []string{"to is required"}},
		{"missing type", func(q url.Values) { q.Del("type") }, []string{"type is required", "messenger"}},
		{"from not bot or agent", func(q url.Values) { q.Set("from", "human") }, []string{`from="human" is invalid`, "bot or agent"}},
		{"to not bot or agent", func(q url.Values) { q.Set("to", "robot") }, []string{`to="robot" is invalid`}},
		{"from and to both bot", func(q url.Values) { q.Set("to", "bot"); q.Set("app_id", botID) }, []string{`from and to are both "bot"`}},
		{"from and to both agent", func(q url.Values) { q.Set("from", "agent") }, []string{`from and to are both "agent"`}},
		{"type not messenger", func(q url.Values) { q.Set("type", "whatsapp") }, []string{`type="whatsapp" is not supported`}},
		{"app_id missing for to=bot", func(q url.Values) { q.Set("from", "agent"); q.Set("to", "bot") }, []string{"app_id is required with to=bot"}},
		{"app_id is the RingCX app", func(q url.Values) { q.Set("from", "agent"); q.Set("to", "bot"); q.Set("app_id", ringcxID) },
			[]string{"app_id " + ringcxID + " is not a bot app of page " + pageID, botID, bot2ID}},
		{"app_id unknown", func(q url.Values) { q.Set("from", "agent"); q.Set("to", "bot"); q.Set("app_id", "999") },
			[]string{"app_id 999 is not a bot app of page " + pageID}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := handoverQuery(psid, "bot", "agent", "")
			tc.change(q)
			r := f.api(t, http.MethodPost, "/1.0/bots/handover", q)
			checkEnvelope(t, r, http.StatusBadRequest, tc.want...)
			if got := f.thread(t, psid); got.Revision != before || got.State != states.Bot {
				t.Errorf("thread after a refused call: %s rev %d, want bot rev %d", got.State, got.Revision, before)
			}
		})
	}
}

func TestHandoverUnknownIdentity(t *testing.T) {
	f := newFixture(t)
	known := newPSID()
	f.customer(t, known)
	unknown := newPSID()

	tests := []struct {
		name  string
		query url.Values
		want  string
	}{
		{"to agent", handoverQuery(unknown, "bot", "agent", ""), "unknown identity " + unknown},
		{"to bot", handoverQuery(unknown, "agent", "bot", botID), "unknown identity " + unknown},
		{"with page_id", func() url.Values {
			q := handoverQuery(unknown, "bot", "agent", "")
			q.Set("page_id", pageID)
			return q
		}(), "no thread for identity " + unknown},
		{"known identity on another page", func() url.Values {
			q := handoverQuery(known, "bot", "agent", "")
			q.Set("page_id", otherPage)
			return q
		}(), "no thread for identity " + known},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkEnvelope(t, f.api(t, http.MethodPost, "/1.0/bots/handover", tc.query), http.StatusNotFound, tc.want)
		})
	}
}

func TestAmbiguousIdentity(t *testing.T) {
	f := newFixture(t)
	const page2 = "100000000000002"
	if err := f.eng.SetPage(context.Background(), engine.Page{ID: page2, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID}}); err != nil {
		t.Fatal(err)
	}
	psid := newPSID()
	ms := time.Now().UnixMilli()
	body := fmt.Sprintf(`{"object":"page","entry":[
{"id":"%[1]s","time":%[4]d,"standby":[{"sender":{"id":"%[3]s"},"recipient":{"id":"%[1]s"},"timestamp":%[4]d,"message":{"mid":"m_amb_1","text":"hi"}}]},
{"id":"%[2]s","time":%[4]d,"standby":[{"sender":{"id":"%[3]s"},"recipient":{"id":"%[2]s"},"timestamp":%[4]d,"message":{"mid":"m_amb_2","text":"hi"}}]}]}`,
		pageID, page2, psid, ms)
	checkSuccess(t, f.postWebhook(t, []byte(body), ringcxSecret))

	tests := []struct {
		name       string
		method     string
		path       string
		query      url.Values
		wantStatus int
		want       string
	}{
		{"handover without page_id", http.MethodPost, "/1.0/bots/handover", handoverQuery(psid, "bot", "agent", ""), http.StatusBadRequest, "exists on several pages; give page_id"},
		{"intervention without page_id", http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {psid}}, http.StatusBadRequest, "exists on several pages; give page_id"},
		{"content without page_id", http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {psid}, "body": {"hi"}}, http.StatusBadRequest, "exists on several pages; give page_id"},
		{"debug without page_id", http.MethodGet, "/debug/threads/" + psid, nil, http.StatusBadRequest, "exists on several pages; give page_id"},
		{"debug with page_id", http.MethodGet, "/debug/threads/" + psid, url.Values{"page_id": {page2}}, http.StatusOK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.api(t, tc.method, tc.path, tc.query)
			if tc.wantStatus != http.StatusOK {
				checkEnvelope(t, r, tc.wantStatus, tc.want)
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("answer = %v, want 200", r)
			}
			if v := decode[threadJSON](t, r); v.PageID != page2 || v.IdentityForeignID != psid || v.State != "bot" {
				t.Errorf("thread = %s/%s %s, want %s/%s bot", v.PageID, v.IdentityForeignID, v.State, page2, psid)
			}
		})
	}
}

func TestHandoverConflict(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name      string
		setup     func(t *testing.T, psid string)
		query     func(psid string) url.Values
		want      []string
		wantState states.State
		wantOwner string // Meta's
	}{
		{
			name: "to bot while an intervention is engaged",
			setup: func(t *testing.T, psid string) {
				f.customer(t, psid)
				f.openIntervention(t, psid)
				f.waitState(t, psid, states.Agent, ringcxID)
			},
			query:     func(psid string) url.Values { return handoverQuery(psid, "agent", "bot", botID) },
			want:      []string{"an intervention is engaged on this identity", "close it"},
			wantState: states.Agent, wantOwner: ringcxID,
		},
		{
			name: "to bot while a request for control is pending and an intervention is engaged",
			setup: func(t *testing.T, psid string) {
				f.customer(t, psid)
				f.failBotPass(t)
				f.openIntervention(t, psid)
				f.waitState(t, psid, states.Pending, botID)
			},
			query:     func(psid string) url.Values { return handoverQuery(psid, "agent", "bot", botID) },
			want:      []string{"an intervention is engaged on this identity"},
			wantState: states.Pending, wantOwner: botID,
		},
		{
			name:      "to bot while another bot app owns the thread",
			setup:     f.customer,
			query:     func(psid string) url.Values { return handoverQuery(psid, "agent", "bot", bot2ID) },
			want:      []string{"owned by app " + botID, bot2ID},
			wantState: states.Bot, wantOwner: botID,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			tc.setup(t, psid)
			before := f.thread(t, psid).Revision
			checkEnvelope(t, f.api(t, http.MethodPost, "/1.0/bots/handover", tc.query(psid)), http.StatusConflict, tc.want...)
			f.settle(t)
			got := f.thread(t, psid)
			if got.State != tc.wantState || got.Revision != before {
				t.Errorf("thread after the refusal: %s rev %d, want %s rev %d (unchanged, nothing recorded)", got.State, got.Revision, tc.wantState, before)
			}
			if owner := f.sim.Thread(pageID, psid).OwnerAppID; owner != tc.wantOwner {
				t.Errorf("Meta's owner = %q, want %q", owner, tc.wantOwner)
			}
		})
	}
}

func TestHandoverMetaFailure(t *testing.T) {
	f := newFixture(t)
	code100 := func(call string) sim.Fault {
		return sim.Fault{Call: call, Status: 400, Code: 100, Message: "Invalid parameter (simulated)", Count: 3, AppID: ringcxID}
	}
	tests := []struct {
		name      string
		setup     func(t *testing.T, psid string)
		query     func(psid string) url.Values
		fault     sim.Fault
		want      []string
		event     states.Event
		wantState states.State // unchanged
		wantOwner string       // Meta's
	}{
		{
			name:  "request refused with code 100",
			setup: f.customer, query: func(psid string) url.Values { return handoverQuery(psid, "bot", "agent", "") },
			fault:     code100("request_thread_control"),
			want:      []string{"request_thread_control", "HTTP 400", "code 100", "Invalid parameter (simulated)", "fbtrace_id"},
			event:     states.HandoverToAgent,
			wantState: states.Bot, wantOwner: botID,
		},
		{
			name:  "request fails with HTTP 500",
			setup: f.customer, query: func(psid string) url.Values { return handoverQuery(psid, "bot", "agent", "") },
			fault:     sim.Fault{Call: "request_thread_control", Status: 500, Count: 3, AppID: ringcxID},
			want:      []string{"request_thread_control", "HTTP 500", "code 2"},
			event:     states.HandoverToAgent,
			wantState: states.Bot, wantOwner: botID,
		},
		{
			name:  "pass refused",
			setup: f.toAgent, query: func(psid string) url.Values { return handoverQuery(psid, "agent", "bot", botID) },
			fault:     code100("pass_thread_control"),
			want:      []string{"pass_thread_control", "code 100", "Invalid parameter (simulated)"},
			event:     states.HandoverToBot,
			wantState: states.Agent, wantOwner: ringcxID,
		},
		{
			name:  "take fails",
			setup: f.toIdle, query: func(psid string) url.Values { return handoverQuery(psid, "bot", "agent", "") },
			fault:     sim.Fault{Call: "take_thread_control", Status: 503, Count: 3, AppID: ringcxID},
			want:      []string{"take_thread_control", "HTTP 503"},
			event:     states.HandoverToAgent,
			wantState: states.Idle, wantOwner: "",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			tc.setup(t, psid)
			f.sim.SetFault(tc.fault)
			defer f.sim.ClearFaults()

			r := f.api(t, http.MethodPost, "/1.0/bots/handover", tc.query(psid))
			checkEnvelope(t, r, http.StatusBadGateway, tc.want...)

			f.waitState(t, psid, tc.wantState, tc.wantOwner)
			v := decode[threadJSON](t, f.api(t, http.MethodGet, "/debug/threads/"+psid, nil))
			if len(v.Transitions) == 0 {
				t.Fatalf("no transitions recorded")
			}
			last := v.Transitions[0]
			if last.Event != string(tc.event) || last.Outcome != engine.OutcomeFailed || last.From != string(tc.wantState) || last.To != string(tc.wantState) {
				t.Errorf("last transition = %s %s %s → %s, want %s failed %s → %s", last.Event, last.Outcome, last.From, last.To, tc.event, tc.wantState, tc.wantState)
			}
			if len(last.Calls) != 1 || last.Calls[0].Call != tc.fault.Call || last.Calls[0].Outcome == "ok" || last.Calls[0].Error == "" {
				t.Errorf("graph calls = %+v, want one failed %s with its error", last.Calls, tc.fault.Call)
			}
		})
	}
}

func TestStoreUnavailable(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	f.closeStore(t)

	fresh := newPSID()
	webhook := func(psid string) (http.Header, []byte) {
		body := customerWebhook(psid, "m_closed_store_"+psid, time.Now())
		sig, _ := messenger.Sign(body, ringcxSecret)
		return http.Header{"X-Hub-Signature-256": {sig}, "Content-Type": {"application/json"}}, body
	}
	newHook, newBody := webhook(fresh)
	knownHook, knownBody := webhook(psid)
	tests := []struct {
		name   string
		method string
		target string
		header http.Header
		body   []byte
		want   string
	}{
		{"handover", http.MethodPost, "/1.0/bots/handover?access_token=" + apiToken + "&" + handoverQuery(psid, "bot", "agent", "").Encode(), nil, nil, "the store is unavailable"},
		{"handover to bot", http.MethodPost, "/1.0/bots/handover?" + handoverQuery(psid, "agent", "bot", botID).Encode(), bearer(apiToken), nil, "the store is unavailable"},
		{"open intervention", http.MethodPost, "/1.0/interventions?access_token=" + apiToken + "&identity_foreign_id=" + psid, nil, nil, "the store is unavailable"},
		{"create content", http.MethodPost, "/1.0/contents?access_token=" + apiToken + "&identity_foreign_id=" + psid + "&body=hi", nil, nil, "the store is unavailable"},
		{"debug thread", http.MethodGet, "/debug/threads/" + psid + "?access_token=" + apiToken, nil, nil, "the store is unavailable"},
		{"debug list", http.MethodGet, "/debug/threads?access_token=" + apiToken, nil, nil, "the store is unavailable"},
		{"webhook for a new thread", http.MethodPost, "/webhooks/messenger", newHook, newBody, "the store is unavailable"},
		{"webhook for a known thread", http.MethodPost, "/webhooks/messenger", knownHook, knownBody, "the store is unavailable"},
		{"readyz", http.MethodGet, "/readyz", nil, nil, "not ready"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, tc.method, tc.target, tc.header, bytes.NewReader(tc.body))
			checkEnvelope(t, r, http.StatusServiceUnavailable, tc.want)
		})
	}
	t.Run("healthz stays up", func(t *testing.T) {
		checkSuccess(t, f.do(t, http.MethodGet, "/healthz", nil, nil))
	})
}

func TestHandoverSuccess(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name      string
		setup     func(t *testing.T, psid string)
		from, to  string
		appID     string
		auth      string // "" for ?access_token=, else the Authorization header
		wantState states.State
		wantOwner string // Meta's and threadctl's
	}{
		{"bot to agent, token in query", f.customer, "bot", "agent", "", "", states.Agent, ringcxID},
		{"bot to agent, Bearer token", f.customer, "bot", "agent", "", "Bearer " + apiToken, states.Agent, ringcxID},
		{"agent to bot, token in query", f.toAgent, "agent", "bot", botID, "", states.Bot, botID},
		{"agent to the second bot, Bearer token", f.toAgent, "agent", "bot", bot2ID, "Bearer " + apiToken, states.Bot, bot2ID},
		{"to agent while agent: no change", f.toAgent, "bot", "agent", "", "", states.Agent, ringcxID},
		{"to the bot app that owns the thread: no change", f.customer, "agent", "bot", botID, "Bearer " + apiToken, states.Bot, botID},
		{"to agent while idle: take", f.toIdle, "bot", "agent", "", "", states.Agent, ringcxID},
		{"to bot while idle: pass", f.toIdle, "agent", "bot", bot2ID, "", states.Bot, bot2ID},
		{"to bot while a request is pending: cancel", f.toPending, "agent", "bot", botID, "", states.Bot, botID},
		{"to agent while a request is pending: no change", f.toPending, "bot", "agent", "", "", states.Pending, botID},
		{"bearer scheme in lower case", f.customer, "bot", "agent", "", "bearer " + apiToken, states.Agent, ringcxID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			tc.setup(t, psid)
			q := handoverQuery(psid, tc.from, tc.to, tc.appID)
			var r reply
			if tc.auth != "" {
				r = f.do(t, http.MethodPost, "/1.0/bots/handover?"+q.Encode(), http.Header{"Authorization": {tc.auth}}, nil)
			} else {
				r = f.api(t, http.MethodPost, "/1.0/bots/handover", q)
			}
			if !checkSuccess(t, r) {
				t.FailNow()
			}
			f.waitState(t, psid, tc.wantState, tc.wantOwner)
			if got := f.thread(t, psid).Owner; got != tc.wantOwner {
				t.Errorf("threadctl's owner = %q, want %q", got, tc.wantOwner)
			}
		})
	}
}

// ---- Agent side (SPEC.md §3.2)

func TestInterventionLifecycle(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	var iv interventionJSON

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"open", func(t *testing.T) {
			r := f.api(t, http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {psid}})
			if r.status != http.StatusCreated {
				t.Fatalf("open = %v, want 201", r)
			}
			iv = decode[interventionJSON](t, r)
			if iv.ID == "" || iv.IdentityForeignID != psid || iv.PageID != pageID || iv.Status != "open" || iv.Closed || iv.ClosedAt != nil {
				t.Errorf("opened intervention = %+v, want an open one on %s/%s", iv, pageID, psid)
			}
			// agent_engage while the bot owns the thread (primary bot): request.
			if iv.ThreadState != string(states.Pending) {
				t.Errorf("thread_state = %q, want %q", iv.ThreadState, states.Pending)
			}
			f.waitState(t, psid, states.Agent, ringcxID)
			if got := f.thread(t, psid).Intervention; got != iv.ID {
				t.Errorf("thread's intervention = %q, want %q", got, iv.ID)
			}
		}},
		{"open twice", func(t *testing.T) {
			r := f.api(t, http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {psid}})
			checkEnvelope(t, r, http.StatusConflict, "already open", iv.ID)
		}},
		{"get open", func(t *testing.T) {
			r := f.api(t, http.MethodGet, "/1.0/interventions/"+iv.ID, nil)
			if r.status != http.StatusOK {
				t.Fatalf("get = %v, want 200", r)
			}
			if got := decode[interventionJSON](t, r); got.ID != iv.ID || got.Status != "open" || got.Closed {
				t.Errorf("got %+v, want intervention %s open", got, iv.ID)
			}
		}},
		{"close", func(t *testing.T) {
			r := f.do(t, http.MethodPut, "/1.0/interventions/"+iv.ID+"/close", bearer(apiToken), nil)
			if r.status != http.StatusOK {
				t.Fatalf("close = %v, want 200", r)
			}
			got := decode[interventionJSON](t, r)
			if got.ID != iv.ID || got.Status != "closed" || !got.Closed || got.ClosedAt == nil {
				t.Errorf("closed intervention = %+v, want %s closed with closed_at", got, iv.ID)
			}
			iv = got
			// intervention_closed in agent: release → idle.
			f.waitState(t, psid, states.Idle, "")
			if got := f.thread(t, psid).Intervention; got != "" {
				t.Errorf("thread's intervention after close = %q, want none", got)
			}
		}},
		{"close again is idempotent", func(t *testing.T) {
			before := f.thread(t, psid).Revision
			r := f.api(t, http.MethodPut, "/1.0/interventions/"+iv.ID+"/close", nil)
			if r.status != http.StatusOK {
				t.Fatalf("second close = %v, want 200", r)
			}
			got := decode[interventionJSON](t, r)
			if got.Status != "closed" || got.ClosedAt == nil || !got.ClosedAt.Equal(*iv.ClosedAt) {
				t.Errorf("second close = %+v, want it unchanged (closed_at %v)", got, iv.ClosedAt)
			}
			if after := f.thread(t, psid).Revision; after != before {
				t.Errorf("revision after the second close = %d, want %d", after, before)
			}
		}},
		{"get closed", func(t *testing.T) {
			got := decode[interventionJSON](t, f.api(t, http.MethodGet, "/1.0/interventions/"+iv.ID, nil))
			if got.Status != "closed" || !got.Closed {
				t.Errorf("got %+v, want closed", got)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			return
		}
	}
}

func TestInterventionErrors(t *testing.T) {
	f := newFixture(t)
	unknown := newPSID()
	tests := []struct {
		name       string
		method     string
		path       string
		query      url.Values
		wantStatus int
		want       string
	}{
		{"open without identity", http.MethodPost, "/1.0/interventions", nil, http.StatusBadRequest, "identity_foreign_id is required"},
		{"open on an unknown identity", http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {unknown}}, http.StatusNotFound, "unknown identity " + unknown},
		{"get unknown", http.MethodGet, "/1.0/interventions/0123456789abcdef01234567", nil, http.StatusNotFound, "unknown intervention 0123456789abcdef01234567"},
		{"close unknown", http.MethodPut, "/1.0/interventions/0123456789abcdef01234567/close", nil, http.StatusNotFound, "unknown intervention 0123456789abcdef01234567"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkEnvelope(t, f.api(t, tc.method, tc.path, tc.query), tc.wantStatus, tc.want)
		})
	}
	t.Run("without token", func(t *testing.T) {
		checkEnvelope(t, f.do(t, http.MethodGet, "/1.0/interventions/0123456789abcdef01234567", nil, nil), http.StatusUnauthorized, "missing access token")
	})
}

func TestInterventionMetaFailure(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	f.sim.SetFault(sim.Fault{Call: "request_thread_control", Status: 400, Code: 100, Message: "Invalid parameter (simulated)", Count: 3, AppID: ringcxID})
	defer f.sim.ClearFaults()

	r := f.api(t, http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {psid}})
	checkEnvelope(t, r, http.StatusBadGateway, "request_thread_control", "code 100", "Invalid parameter (simulated)")
	f.waitState(t, psid, states.Bot, botID)
	if got := f.thread(t, psid).Intervention; got != "" {
		t.Errorf("thread's intervention after Meta refused = %q, want none opened", got)
	}
	// Nothing is opened: a new intervention can be opened once Meta agrees.
	f.sim.ClearFaults()
	f.openIntervention(t, psid)
	f.waitState(t, psid, states.Agent, ringcxID)
}

func TestContentErrors(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	unknown := newPSID()
	tests := []struct {
		name       string
		query      url.Values
		wantStatus int
		want       string
	}{
		{"missing identity", url.Values{"body": {"hi"}}, http.StatusBadRequest, "identity_foreign_id is required"},
		{"missing body", url.Values{"identity_foreign_id": {psid}}, http.StatusBadRequest, "body is required"},
		{"blank body", url.Values{"identity_foreign_id": {psid}, "body": {"   "}}, http.StatusBadRequest, "body is required"},
		{"body too long", url.Values{"identity_foreign_id": {psid}, "body": {strings.Repeat("é", engine.MaxContentBody+1)}}, http.StatusBadRequest, "at most 2000"},
		{"unknown identity", url.Values{"identity_foreign_id": {unknown}, "body": {"hi"}}, http.StatusNotFound, "unknown identity " + unknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.thread(t, psid).Revision
			checkEnvelope(t, f.api(t, http.MethodPost, "/1.0/contents", tc.query), tc.wantStatus, tc.want)
			f.settle(t)
			if got := f.thread(t, psid); got.Revision != before || got.State != states.Bot {
				t.Errorf("thread after a refused content: %s rev %d, want bot rev %d", got.State, got.Revision, before)
			}
		})
	}
	t.Run("get unknown", func(t *testing.T) {
		checkEnvelope(t, f.api(t, http.MethodGet, "/1.0/contents/0123456789abcdef01234567", nil), http.StatusNotFound, "unknown content 0123456789abcdef01234567")
	})
}

func TestContentSynchronisation(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		setup      func(t *testing.T, psid string)
		asForm     bool
		wantStatus string // synchronization_status in the 201 answer
	}{
		{"RingCX owns the thread", f.toAgent, false, engine.SyncSynced},
		{"RingCX owns the thread, body as a form field", f.toAgent, true, engine.SyncSynced},
		{"the bot owns the thread", f.customer, false, engine.SyncPending},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			tc.setup(t, psid)
			text := "agent reply to " + psid
			var r reply
			if tc.asForm {
				r = f.do(t, http.MethodPost, "/1.0/contents?identity_foreign_id="+psid, http.Header{
					"Authorization": {"Bearer " + apiToken}, "Content-Type": {"application/x-www-form-urlencoded"},
				}, strings.NewReader(url.Values{"body": {text}}.Encode()))
			} else {
				r = f.api(t, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {psid}, "body": {text}})
			}
			if r.status != http.StatusCreated {
				t.Fatalf("create content = %v, want 201", r)
			}
			ct := decode[contentJSON](t, r)
			if ct.ID == "" || ct.Body != text || ct.IdentityForeignID != psid || ct.PageID != pageID {
				t.Errorf("content = %+v, want body %q on %s/%s", ct, text, pageID, psid)
			}
			if ct.SynchronizationStatus != tc.wantStatus {
				t.Errorf("synchronization_status = %q, want %q (%+v)", ct.SynchronizationStatus, tc.wantStatus, ct)
			}
			if tc.wantStatus == engine.SyncPending && ct.ForeignID != "" {
				t.Errorf("foreign_id of a pending content = %q, want none", ct.ForeignID)
			}

			// Poll until synchronised (at once when RingCX owned the thread;
			// after the reference bot passes control otherwise).
			eventually(t, func() (bool, string) {
				ct = decode[contentJSON](t, f.api(t, http.MethodGet, "/1.0/contents/"+ct.ID, nil))
				return ct.SynchronizationStatus == engine.SyncSynced, fmt.Sprintf("content %+v, want synced", ct)
			})
			if ct.ForeignID == "" || ct.SynchronizedAt == nil || ct.SynchronizationError != "" {
				t.Errorf("synced content = %+v, want a foreign_id, synchronized_at and no error", ct)
			}
			f.waitState(t, psid, states.Agent, ringcxID)
			sent := slices.ContainsFunc(f.sim.Thread(pageID, psid).Messages, func(m sim.ThreadMessage) bool {
				return m.MID == ct.ForeignID && m.From == ringcxID && m.Text == text
			})
			if !sent {
				t.Errorf("Meta's thread %+v has no message %s from RingCX with the content's text", f.sim.Thread(pageID, psid).Messages, ct.ForeignID)
			}
		})
	}
}

func TestContentSynchronisationFails(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		// setup brings the thread where the content is created, and returns
		// what happens after it is created.
		setup      func(t *testing.T, psid string) func(t *testing.T)
		wantStatus string // synchronization_status in the 201 answer
		wantState  states.State
		wantError  []string
	}{
		{
			name: "Meta refuses the request for control",
			setup: func(t *testing.T, psid string) func(t *testing.T) {
				f.customer(t, psid)
				f.sim.SetFault(sim.Fault{Call: "request_thread_control", Status: 400, Code: 100, Message: "Invalid parameter (simulated)", Count: 3, AppID: ringcxID})
				t.Cleanup(f.sim.ClearFaults)
				return func(*testing.T) {}
			},
			wantStatus: engine.SyncFailed, wantState: states.Bot,
			wantError: []string{"could not get control", "code 100", "Invalid parameter (simulated)"},
		},
		{
			name: "the intervention is closed while the request is pending",
			setup: func(t *testing.T, psid string) func(t *testing.T) {
				f.customer(t, psid)
				f.failBotPass(t)
				iv := f.openIntervention(t, psid)
				f.waitState(t, psid, states.Pending, botID)
				return func(t *testing.T) {
					if r := f.api(t, http.MethodPut, "/1.0/interventions/"+iv.ID+"/close", nil); r.status != http.StatusOK {
						t.Fatalf("close intervention: %v", r)
					}
				}
			},
			wantStatus: engine.SyncPending, wantState: states.Bot,
			wantError: []string{"did not get control", "intervention_closed"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			then := tc.setup(t, psid)
			r := f.api(t, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {psid}, "body": {"never sent"}})
			if r.status != http.StatusCreated {
				t.Fatalf("create content = %v, want 201", r)
			}
			ct := decode[contentJSON](t, r)
			if ct.SynchronizationStatus != tc.wantStatus {
				t.Errorf("synchronization_status = %q, want %q", ct.SynchronizationStatus, tc.wantStatus)
			}
			then(t)
			f.waitState(t, psid, tc.wantState, botID)
			ct = decode[contentJSON](t, f.api(t, http.MethodGet, "/1.0/contents/"+ct.ID, nil))
			if ct.SynchronizationStatus != engine.SyncFailed || ct.ForeignID != "" {
				t.Errorf("content = %+v, want failed and never sent", ct)
			}
			for _, w := range tc.wantError {
				if !strings.Contains(ct.SynchronizationError, w) {
					t.Errorf("synchronization_error = %q, want it to contain %q", ct.SynchronizationError, w)
				}
			}
			v := decode[threadJSON](t, f.api(t, http.MethodGet, "/debug/threads/"+psid, nil))
			if len(v.QueuedContents) != 0 {
				t.Errorf("queued_contents = %+v, want none", v.QueuedContents)
			}
		})
	}
}

// ---- Webhooks (SPEC.md §3.3)

func TestWebhookVerify(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		query      url.Values
		wantStatus int
		want       string // the echoed challenge, or part of the error message
	}{
		{"good token", url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {verifyToken}, "hub.challenge": {"1158201444"}}, http.StatusOK, "1158201444"},
		{"wrong token", url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {"nope"}, "hub.challenge": {"1158201444"}}, http.StatusForbidden, "hub.verify_token does not match"},
		{"missing token", url.Values{"hub.mode": {"subscribe"}, "hub.challenge": {"1158201444"}}, http.StatusForbidden, "hub.verify_token does not match"},
		{"wrong mode", url.Values{"hub.mode": {"unsubscribe"}, "hub.verify_token": {verifyToken}, "hub.challenge": {"1158201444"}}, http.StatusForbidden, `hub.mode is "unsubscribe"`},
		{"missing challenge", url.Values{"hub.mode": {"subscribe"}, "hub.verify_token": {verifyToken}}, http.StatusForbidden, "hub.challenge is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodGet, "/webhooks/messenger?"+tc.query.Encode(), nil, nil)
			if tc.wantStatus == http.StatusOK {
				if r.status != http.StatusOK || string(r.body) != tc.want {
					t.Errorf("answer = %v, want HTTP 200 with body exactly %q", r, tc.want)
				}
				return
			}
			checkEnvelope(t, r, tc.wantStatus, tc.want)
		})
	}
	t.Run("the simulator's handshake", func(t *testing.T) {
		if err := f.sim.VerifyWebhook(context.Background(), pageID, ringcxID); err != nil {
			t.Errorf("VerifyWebhook: %v", err)
		}
	})
}

// customerWebhook is a customer message on the standby channel (the bot
// owns the thread), page and app ids as numbers, as production sends them.
func customerWebhook(psid, mid string, at time.Time) []byte {
	return []byte(fmt.Sprintf(`{"object":"page","entry":[{"id":%s,"time":%d,"standby":[{"sender":{"id":"%s"},"recipient":{"id":"%s"},"timestamp":%d,"message":{"mid":"%s","text":"hi"}}]}]}`,
		pageID, at.UnixMilli(), psid, pageID, at.UnixMilli(), mid))
}

func (f *fixture) postWebhook(t *testing.T, body []byte, secret string) reply {
	t.Helper()
	sig, _ := messenger.Sign(body, secret)
	return f.do(t, http.MethodPost, "/webhooks/messenger", http.Header{"X-Hub-Signature-256": {sig}, "Content-Type": {"application/json"}}, bytes.NewReader(body))
}

func (f *fixture) threadExists(t *testing.T, psid string) bool {
	t.Helper()
	_, err := f.eng.Thread(context.Background(), engine.ThreadKey{PageID: pageID, PSID: psid})
	switch engine.ErrorCode(err) {
	case "":
		return true
	case engine.CodeNotFound:
		return false
	}
	t.Fatalf("thread %s: %v", psid, err)
	return false
}

func TestWebhookSignature(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		header     func(body []byte) http.Header
		wantStatus int
		want       string
	}{
		{"missing signature", func([]byte) http.Header { return nil }, http.StatusForbidden, "missing X-Hub-Signature-256"},
		{"legacy sha1 signature only", func(b []byte) http.Header {
			_, sha1 := messenger.Sign(b, ringcxSecret)
			return http.Header{"X-Hub-Signature": {sha1}}
		}, http.StatusForbidden, "missing X-Hub-Signature-256"},
		{"signed with another app's secret", func(b []byte) http.Header {
			sig, _ := messenger.Sign(b, "bot-secret")
			return http.Header{"X-Hub-Signature-256": {sig}}
		}, http.StatusForbidden, "does not match the body"},
		{"signature of another body", func(b []byte) http.Header {
			sig, _ := messenger.Sign(append(b, ' '), ringcxSecret)
			return http.Header{"X-Hub-Signature-256": {sig}}
		}, http.StatusForbidden, "does not match the body"},
		{"sha1 value in the sha256 header", func(b []byte) http.Header {
			_, sha1 := messenger.Sign(b, ringcxSecret)
			return http.Header{"X-Hub-Signature-256": {sha1}}
		}, http.StatusForbidden, "want sha256=<hex>"},
		{"not hex", func([]byte) http.Header {
			return http.Header{"X-Hub-Signature-256": {"sha256=" + strings.Repeat("zz", 32)}}
		}, http.StatusForbidden, "not a hex SHA-256"},
		{"good signature", func(b []byte) http.Header {
			sig, _ := messenger.Sign(b, ringcxSecret)
			return http.Header{"X-Hub-Signature-256": {sig}}
		}, http.StatusOK, "Success"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			psid := newPSID()
			body := customerWebhook(psid, "m_sig_"+psid, time.Now())
			r := f.do(t, http.MethodPost, "/webhooks/messenger", tc.header(body), bytes.NewReader(body))
			checkEnvelope(t, r, tc.wantStatus, tc.want)
			if tc.wantStatus != http.StatusOK {
				if !strings.Contains(string(r.body), "nothing was applied") {
					t.Errorf("message %s does not say that nothing was applied", r.body)
				}
			}
			if got, want := f.threadExists(t, psid), tc.wantStatus == http.StatusOK; got != want {
				t.Errorf("thread %s exists = %v, want %v", psid, got, want)
			}
		})
	}
}

func TestWebhookUnparsable(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		body string
		want string
	}{
		{"not JSON", `{"object":"page","entry":[`, "not valid JSON"},
		{"object is not page", `{"object":"user","entry":[{"id":"1","messaging":[]}]}`, `webhook object is "user", want "page"`},
		{"no entry", `{"object":"page","entry":[]}`, "webhook has no entry"},
		{"entry without page id", `{"object":"page","entry":[{"time":1,"messaging":[]}]}`, "webhook entry 0 has no page id"},
		{"event without customer", `{"object":"page","entry":[{"id":"` + pageID + `","messaging":[{"recipient":{"id":"` + pageID + `"},"timestamp":1,"message":{"mid":"m_x","text":"hi"}}]}]}`, "webhook entry 0 event 0 (message) has no customer id"},
		{"app id neither number nor string", `{"object":"page","entry":[{"id":"` + pageID + `","messaging":[{"sender":{"id":"1"},"recipient":{"id":"` + pageID + `"},"timestamp":1,"pass_thread_control":{"new_owner_app_id":true}}]}]}`, "id: want a string, an integer or null"},
		{"fractional app id", `{"object":"page","entry":[{"id":"` + pageID + `","messaging":[{"sender":{"id":"1"},"recipient":{"id":"` + pageID + `"},"timestamp":1,"pass_thread_control":{"new_owner_app_id":2.5}}]}]}`, "is not an integer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkEnvelope(t, f.postWebhook(t, []byte(tc.body), ringcxSecret), http.StatusBadRequest, tc.want)
		})
	}
}

func TestWebhookMultiEntry(t *testing.T) {
	f := newFixture(t)
	a, b, c := newPSID(), newPSID(), newPSID()
	ms := time.Now().UnixMilli()
	// One POST, four entries: a customer writes (ids as numbers); the bot
	// passes b's thread to RingCX (ids as numbers), then bot 2 takes it
	// (ids as strings); the bot passes c's thread to RingCX (ids as
	// strings, page id as a string); a page threadctl does not know is
	// skipped.
	body := []byte(fmt.Sprintf(`{"object":"page","entry":[
{"id":%[1]s,"time":%[5]d,"standby":[{"sender":{"id":%[2]s},"recipient":{"id":%[1]s},"timestamp":%[5]d,"message":{"mid":"m_multi_a","text":"hi"}}]},
{"id":%[1]s,"time":%[5]d,"messaging":[{"sender":{"id":%[3]s},"recipient":{"id":%[1]s},"timestamp":%[5]d,"pass_thread_control":{"previous_owner_app_id":%[7]s,"new_owner_app_id":%[6]s,"metadata":"m"}}]},
{"id":"%[1]s","time":%[9]d,"standby":[{"sender":{"id":"%[3]s"},"recipient":{"id":"%[1]s"},"timestamp":%[9]d,"take_thread_control":{"previous_owner_app_id":"%[6]s","new_owner_app_id":"%[8]s","metadata":"m"}}]},
{"id":"%[1]s","time":%[5]d,"messaging":[{"sender":{"id":"%[4]s"},"recipient":{"id":"%[1]s"},"timestamp":%[5]d,"pass_thread_control":{"previous_owner_app_id":"%[7]s","new_owner_app_id":"%[6]s"}}]},
{"id":%[10]s,"time":%[5]d,"standby":[{"sender":{"id":"%[2]s"},"recipient":{"id":"%[10]s"},"timestamp":%[5]d,"message":{"mid":"m_multi_other_page","text":"hi"}}]}
]}`, pageID, a, b, c, ms, ringcxID, botID, bot2ID, ms+1, otherPage))

	want := map[string]struct {
		state, owner string
		revision     uint64
	}{
		a: {"bot", botID, 1},
		b: {"bot", bot2ID, 2},
		c: {"agent", ringcxID, 1},
	}
	check := func(t *testing.T) {
		t.Helper()
		for psid, w := range want {
			r := f.api(t, http.MethodGet, "/debug/threads/"+psid, nil)
			if r.status != http.StatusOK {
				t.Errorf("debug %s = %v, want 200", psid, r)
				continue
			}
			v := decode[threadJSON](t, r)
			if v.State != w.state || v.OwnerAppID != w.owner || v.Revision != w.revision {
				t.Errorf("thread %s = %s owner %s rev %d, want %s owner %s rev %d", psid, v.State, v.OwnerAppID, v.Revision, w.state, w.owner, w.revision)
			}
			for _, tr := range v.Transitions {
				if tr.Outcome != engine.OutcomeApplied {
					t.Errorf("thread %s: transition %d %s outcome %s (%+v), want applied", psid, tr.Revision, tr.Event, tr.Outcome, tr)
				}
			}
		}
	}
	t.Run("applied", func(t *testing.T) {
		checkSuccess(t, f.postWebhook(t, body, ringcxSecret))
		check(t)
	})
	t.Run("unknown page skipped", func(t *testing.T) {
		_, err := f.eng.Thread(context.Background(), engine.ThreadKey{PageID: otherPage, PSID: a})
		if engine.ErrorCode(err) != engine.CodeNotFound {
			t.Errorf("thread %s on page %s: err %v, want not found", a, otherPage, err)
		}
	})
	t.Run("duplicate changes nothing", func(t *testing.T) {
		checkSuccess(t, f.postWebhook(t, body, ringcxSecret))
		check(t)
	})
}

func TestWebhookAppRoles(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	demo := engine.Page{ID: pageID, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID, bot2ID}}

	tests := []struct {
		name  string
		roles string // the app_roles object
		want  states.Primary
		tries int // how often to try (the result must not vary)
	}{
		{"RingCX becomes primary", `{"` + ringcxID + `":["primary_receiver"]}`, states.PrimaryRingCX, 1},
		{"the primary bot app becomes secondary", `{"` + botID + `":["secondary_receiver"]}`, states.PrimaryNone, 1},
		{"another bot app becomes primary", `{"` + bot2ID + `":["primary_receiver"]}`, states.PrimaryBot, 1},
		{"RingCX primary and the bot secondary in one event", `{"` + ringcxID + `":["primary_receiver"],"` + botID + `":["secondary_receiver"]}`, states.PrimaryRingCX, 20},
		{"another bot primary and the primary bot secondary in one event", `{"` + bot2ID + `":["primary_receiver"],"` + botID + `":["secondary_receiver"]}`, states.PrimaryBot, 20},
	}
	applied := 0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range tc.tries {
				applied++
				if err := f.eng.SetPage(context.Background(), demo); err != nil {
					t.Fatal(err)
				}
				ms := time.Now().UnixMilli()
				body := fmt.Sprintf(`{"object":"page","entry":[{"id":"%s","time":%d,"messaging":[{"recipient":{"id":"%s"},"timestamp":%d,"app_roles":%s}]}]}`,
					pageID, ms, pageID, ms, tc.roles)
				checkSuccess(t, f.postWebhook(t, []byte(body), ringcxSecret))

				r := f.api(t, http.MethodGet, "/debug/threads/"+psid, nil)
				var v struct {
					Primary       string   `json:"primary"`
					PrimaryAtLast string   `json:"primary_at_last_transition"`
					Available     []string `json:"available_events"`
				}
				if err := json.Unmarshal(r.body, &v); err != nil {
					t.Fatalf("decoding %s: %v", r.body, err)
				}
				if v.Primary != string(tc.want) || v.PrimaryAtLast != "bot" {
					t.Fatalf("primary %q (at the last transition %q), want %s (bot)", v.Primary, v.PrimaryAtLast, tc.want)
				}
				if got, want := v.Available, eventNames(states.Available(states.HOP(tc.want), states.Bot)); !slices.Equal(got, want) {
					t.Errorf("available_events = %v, want the %s table's %v", got, tc.want, want)
				}
			}
		})
	}
	if got := webhookEvents(t, f.metrics, "app_roles", "applied"); got != float64(applied) {
		t.Errorf("threadctl_webhook_events_total{kind=app_roles,outcome=applied} = %v, want %d", got, applied)
	}
}

// webhookEvents reads one series of threadctl_webhook_events_total.
func webhookEvents(t *testing.T, m *server.Metrics, kind, outcome string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "threadctl_webhook_events_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["outcome"] == outcome {
				return s.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func eventNames(es []states.Event) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e)
	}
	return out
}

func TestWebhookBodyLimit(t *testing.T) {
	f := newFixture(t)
	const limit = 1 << 20 // server.Config's default BodyLimit
	psid := newPSID()
	valid := customerWebhook(psid, "m_limit_"+psid, time.Now())
	atLimit := append(slices.Clone(valid), bytes.Repeat([]byte(" "), limit-len(valid))...)
	over := append(slices.Clone(atLimit), ' ')

	tests := []struct {
		name          string
		body          []byte
		knownLength   bool
		wantStatus    int
		want          string
		wantThreadNow bool
	}{
		{"over the limit, with Content-Length", over, true, http.StatusRequestEntityTooLarge, "over the limit of 1048576 bytes", false},
		{"over the limit, chunked", over, false, http.StatusRequestEntityTooLarge, "over the limit of 1048576 bytes", false},
		{"at the limit", atLimit, true, http.StatusOK, "Success", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sig, _ := messenger.Sign(tc.body, ringcxSecret)
			req := httptest.NewRequest(http.MethodPost, "/webhooks/messenger", bytes.NewReader(tc.body))
			if !tc.knownLength {
				req = httptest.NewRequest(http.MethodPost, "/webhooks/messenger", io.MultiReader(bytes.NewReader(tc.body)))
				req.ContentLength = -1
			}
			req.Header.Set("X-Hub-Signature-256", sig)
			rec := httptest.NewRecorder()
			f.srv.Handler().ServeHTTP(rec, req)
			checkEnvelope(t, reply{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}, tc.wantStatus, tc.want)
			if got := f.threadExists(t, psid); got != tc.wantThreadNow {
				t.Errorf("thread %s exists = %v, want %v", psid, got, tc.wantThreadNow)
			}
		})
	}
}

// ---- Inspection and operations (SPEC.md §3.4)

func TestDebugThread(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	f.failBotPass(t) // RingCX's request stays pending
	iv := f.openIntervention(t, psid)
	f.waitState(t, psid, states.Pending, botID)
	r := f.api(t, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {psid}, "body": {"queued reply"}})
	if r.status != http.StatusCreated {
		t.Fatalf("create content = %v", r)
	}
	ct := decode[contentJSON](t, r)
	f.settle(t)

	r = f.api(t, http.MethodGet, "/debug/threads/"+psid, nil)
	if r.status != http.StatusOK {
		t.Fatalf("debug = %v, want 200", r)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"state", "owner_app_id", "page_id", "primary", "revision", "intervention", "pending_request", "queued_contents", "available_events", "transitions"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("debug thread has no %q field: %s", k, r.body)
		}
	}
	v := decode[threadJSON](t, r)

	t.Run("record", func(t *testing.T) {
		if v.IdentityForeignID != psid || v.PageID != pageID || v.State != string(states.Pending) || v.OwnerAppID != botID || v.Primary != string(states.PrimaryBot) {
			t.Errorf("thread = %s/%s %s owner %s primary %s, want %s/%s pending-request owner %s primary bot",
				v.PageID, v.IdentityForeignID, v.State, v.OwnerAppID, v.Primary, pageID, psid, botID)
		}
		// customer_message, agent_engage (intervention), agent_engage (content).
		if v.Revision != 3 {
			t.Errorf("revision = %d, want 3", v.Revision)
		}
		if v.Intervention == nil || v.Intervention.ID != iv.ID {
			t.Errorf("intervention = %+v, want %s", v.Intervention, iv.ID)
		}
	})
	t.Run("pending request", func(t *testing.T) {
		p := v.PendingRequest
		if p == nil {
			t.Fatalf("pending_request is null")
		}
		if got, want := p.Deadline.Sub(p.RequestedAt), 60*time.Second; got != want {
			t.Errorf("deadline - requested_at = %v, want %v (the default pending timeout)", got, want)
		}
		if p.Deadline.Before(time.Now()) {
			t.Errorf("deadline %v is in the past", p.Deadline)
		}
	})
	t.Run("queued contents", func(t *testing.T) {
		if len(v.QueuedContents) != 1 || v.QueuedContents[0].ID != ct.ID || v.QueuedContents[0].SynchronizationStatus != engine.SyncPending || v.QueuedContents[0].Body != "queued reply" {
			t.Errorf("queued_contents = %+v, want the pending content %s", v.QueuedContents, ct.ID)
		}
	})
	t.Run("available events", func(t *testing.T) {
		// SPEC.md §2, pending-request with primary bot; the open intervention
		// refuses handover_to_bot.
		for _, e := range []states.Event{states.ControlPassed, states.InterventionClosed, states.RequestExpired, states.CustomerMessage} {
			if !slices.Contains(v.AvailableEvents, string(e)) {
				t.Errorf("available_events %v lacks %s", v.AvailableEvents, e)
			}
		}
		for _, e := range []states.Event{states.ControlTaken, states.ControlRequested, states.HandoverToBot} {
			if slices.Contains(v.AvailableEvents, string(e)) {
				t.Errorf("available_events %v has %s, which is not allowed in pending-request with an intervention open", v.AvailableEvents, e)
			}
		}
	})
	t.Run("transitions", func(t *testing.T) {
		type step struct{ event, cause, from, to, outcome, call string }
		want := []step{
			{"agent_engage", "agent", "pending-request", "pending-request", engine.OutcomeNoChange, ""},
			{"agent_engage", "agent", "bot", "pending-request", engine.OutcomeApplied, "request_thread_control"},
			{"customer_message", "webhook", "idle", "bot", engine.OutcomeApplied, ""},
		}
		if len(v.Transitions) != len(want) {
			t.Fatalf("got %d transitions (%+v), want %d", len(v.Transitions), v.Transitions, len(want))
		}
		for i, w := range want {
			tr := v.Transitions[i]
			call := ""
			if len(tr.Calls) == 1 && tr.Calls[0].Outcome == "ok" {
				call = tr.Calls[0].Call
			} else if len(tr.Calls) > 0 {
				call = fmt.Sprintf("%+v", tr.Calls)
			}
			got := step{tr.Event, tr.Cause, tr.From, tr.To, tr.Outcome, call}
			if got != w || tr.Revision != v.Revision-uint64(i) || tr.At.IsZero() {
				t.Errorf("transition %d = %+v rev %d at %v, want %+v rev %d", i, got, tr.Revision, tr.At, w, v.Revision-uint64(i))
			}
		}
	})

	tests := []struct {
		name       string
		target     string
		header     http.Header
		wantStatus int
		wantRevs   []uint64 // revisions of the transitions shown
		wantBefore uint64
		want       string // part of the error message
	}{
		{"no token", "/debug/threads/" + psid, nil, http.StatusUnauthorized, nil, 0, "missing access token"},
		{"wrong token", "/debug/threads/" + psid + "?access_token=nope", nil, http.StatusUnauthorized, nil, 0, "invalid access token"},
		{"Bearer token", "/debug/threads/" + psid, bearer(apiToken), http.StatusOK, []uint64{3, 2, 1}, 0, ""},
		{"limit=1", "/debug/threads/" + psid + "?limit=1", bearer(apiToken), http.StatusOK, []uint64{3}, 3, ""},
		{"limit=2 before=3", "/debug/threads/" + psid + "?limit=2&before=3", bearer(apiToken), http.StatusOK, []uint64{2, 1}, 0, ""},
		{"page_id", "/debug/threads/" + psid + "?page_id=" + pageID, bearer(apiToken), http.StatusOK, []uint64{3, 2, 1}, 0, ""},
		{"limit=0", "/debug/threads/" + psid + "?limit=0", bearer(apiToken), http.StatusBadRequest, nil, 0, `limit="0" must be a number from 1 to 500`},
		{"limit not a number", "/debug/threads/" + psid + "?limit=ten", bearer(apiToken), http.StatusBadRequest, nil, 0, `limit="ten"`},
		{"before not a number", "/debug/threads/" + psid + "?before=x", bearer(apiToken), http.StatusBadRequest, nil, 0, `before="x" must be a revision number`},
		{"unknown identity", "/debug/threads/7999999999999999", bearer(apiToken), http.StatusNotFound, nil, 0, "unknown identity 7999999999999999"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodGet, tc.target, tc.header, nil)
			if tc.wantStatus != http.StatusOK {
				checkEnvelope(t, r, tc.wantStatus, tc.want)
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("answer = %v, want 200", r)
			}
			v := decode[threadJSON](t, r)
			var revs []uint64
			for _, tr := range v.Transitions {
				revs = append(revs, tr.Revision)
			}
			if !slices.Equal(revs, tc.wantRevs) || v.Before != tc.wantBefore {
				t.Errorf("transitions %v, transitions_before %d; want %v, %d", revs, v.Before, tc.wantRevs, tc.wantBefore)
			}
		})
	}
}

func TestDebugThreadList(t *testing.T) {
	f := newFixture(t)
	var bots, agents []string
	ms := time.Now().UnixMilli()
	for range 3 {
		psid := newPSID()
		bots = append(bots, psid)
		checkSuccess(t, f.postWebhook(t, customerWebhook(psid, "m_list_"+psid, time.UnixMilli(ms)), ringcxSecret))
	}
	for range 2 {
		psid := newPSID()
		agents = append(agents, psid)
		body := fmt.Sprintf(`{"object":"page","entry":[{"id":"%s","time":%d,"messaging":[{"sender":{"id":"%s"},"recipient":{"id":"%s"},"timestamp":%d,"pass_thread_control":{"previous_owner_app_id":%s,"new_owner_app_id":%s}}]}]}`,
			pageID, ms, psid, pageID, ms, botID, ringcxID)
		checkSuccess(t, f.postWebhook(t, []byte(body), ringcxSecret))
	}
	all := append(slices.Clone(bots), agents...)
	slices.Sort(all)

	tests := []struct {
		name      string
		query     url.Values
		wantPages []int // threads per page
		wantIDs   []string
		wantState string // every listed thread's state, if set
	}{
		{"state=bot, 2 per page", url.Values{"state": {"bot"}, "limit": {"2"}}, []int{2, 1}, bots, "bot"},
		{"state=agent and page_id, 1 per page", url.Values{"state": {"agent"}, "page_id": {pageID}, "limit": {"1"}}, []int{1, 1}, agents, "agent"},
		{"page_id, 2 per page", url.Values{"page_id": {pageID}, "limit": {"2"}}, []int{2, 2, 1}, all, ""},
		{"no filter", nil, []int{5}, all, ""},
		{"exactly one full page", url.Values{"state": {"bot"}, "limit": {"3"}}, []int{3}, bots, "bot"},
		{"state=idle", url.Values{"state": {"idle"}}, []int{0}, nil, ""},
		{"another page", url.Values{"page_id": {otherPage}}, []int{0}, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				pages []int
				ids   []string
			)
			q := clone(tc.query)
			for len(pages) < 10 {
				r := f.api(t, http.MethodGet, "/debug/threads", q)
				if r.status != http.StatusOK {
					t.Fatalf("list %v = %v, want 200", q, r)
				}
				if !bytes.Contains(r.body, []byte(`"threads":[`)) {
					t.Errorf("body %s has no threads array", r.body)
				}
				list := decode[threadListJSON](t, r)
				pages = append(pages, len(list.Threads))
				for _, th := range list.Threads {
					ids = append(ids, th.IdentityForeignID)
					if th.PageID != pageID || (tc.wantState != "" && th.State != tc.wantState) {
						t.Errorf("listed thread %s on page %s in %s, want page %s state %q", th.IdentityForeignID, th.PageID, th.State, pageID, tc.wantState)
					}
				}
				if list.NextCursor == "" {
					break
				}
				q.Set("cursor", list.NextCursor)
			}
			if !slices.Equal(pages, tc.wantPages) || !slices.Equal(ids, tc.wantIDs) {
				t.Errorf("pages %v with %v, want %v with %v", pages, ids, tc.wantPages, tc.wantIDs)
			}
		})
	}

	t.Run("cursor from another list", func(t *testing.T) {
		first := decode[threadListJSON](t, f.api(t, http.MethodGet, "/debug/threads", url.Values{"state": {"bot"}, "limit": {"1"}}))
		if first.NextCursor == "" {
			t.Fatalf("state=bot&limit=1 returned no cursor")
		}
		cases := []struct {
			name  string
			query url.Values
		}{
			{"state=bot cursor used with state=agent", url.Values{"state": {"agent"}, "cursor": {first.NextCursor}}},
			{"made-up cursor with state", url.Values{"state": {"bot"}, "cursor": {"AAAA"}}},
			{"made-up cursor without filter", url.Values{"cursor": {"AAAA"}}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				checkEnvelope(t, f.api(t, http.MethodGet, "/debug/threads", tc.query), http.StatusBadRequest, "cursor")
			})
		}
	})

	errs := []struct {
		name       string
		target     string
		wantStatus int
		want       string
	}{
		{"unknown state", "/debug/threads?access_token=" + apiToken + "&state=sleeping", http.StatusBadRequest, `unknown state "sleeping"`},
		{"bad cursor", "/debug/threads?access_token=" + apiToken + "&cursor=%21%21%21", http.StatusBadRequest, `cursor "!!!" is not one this list returned`},
		{"limit=0", "/debug/threads?access_token=" + apiToken + "&limit=0", http.StatusBadRequest, "limit"},
		{"limit over 500", "/debug/threads?access_token=" + apiToken + "&limit=501", http.StatusBadRequest, "from 1 to 500"},
		{"no token", "/debug/threads", http.StatusUnauthorized, "missing access token"},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			checkEnvelope(t, f.do(t, http.MethodGet, tc.target, nil, nil), tc.wantStatus, tc.want)
		})
	}
}

func TestOperations(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name       string
		method     string
		target     string
		header     http.Header
		wantStatus int
		want       string
	}{
		{"healthz without token", http.MethodGet, "/healthz", nil, http.StatusOK, "Success"},
		{"readyz without token", http.MethodGet, "/readyz", nil, http.StatusOK, "Success"},
		{"unknown route with token", http.MethodGet, "/no/such/route", bearer(apiToken), http.StatusNotFound, "no such endpoint"},
		{"unknown Bots API version", http.MethodPost, "/2.0/bots/handover", bearer(apiToken), http.StatusNotFound, "no such endpoint"},
		{"unknown route without token", http.MethodGet, "/no/such/route", nil, http.StatusNotFound, "no such endpoint"},
		{"root without token", http.MethodGet, "/", nil, http.StatusNotFound, "no such endpoint"},
		{"wrong method on healthz without token", http.MethodPost, "/healthz", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{"wrong method on the webhook without token", http.MethodPut, "/webhooks/messenger", nil, http.StatusMethodNotAllowed, "method not allowed"},
		{"wrong method on the Bots API", http.MethodGet, "/1.0/bots/handover", bearer(apiToken), http.StatusMethodNotAllowed, "method not allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkEnvelope(t, f.do(t, tc.method, tc.target, tc.header, nil), tc.wantStatus, tc.want)
		})
	}
}

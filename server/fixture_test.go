package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/engine/enginetest"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
)

// The demo page of SPEC.md §7, and a second bot app.
const (
	pageID   = enginetest.PageID
	ringcxID = enginetest.RingCXID
	botID    = enginetest.BotID
	bot2ID   = enginetest.Bot2ID

	otherPage = "100000000000999" // not configured

	apiToken     = enginetest.APIToken
	verifyToken  = enginetest.VerifyToken
	ringcxSecret = enginetest.RingCXSecret
)

// fixture is the server under test on a real bbolt store and a real engine,
// talking to the Messenger simulator over loopback HTTP; the simulator
// delivers the RingCX app's webhooks to the server's /webhooks/messenger
// (enginetest builds all that).
type fixture struct {
	env     *enginetest.Env
	sim     *sim.Sim
	db      *store.DB
	eng     *engine.Engine
	srv     *server.Server
	metrics *server.Metrics
	url     string
	client  *http.Client // gives up after 10 s: a hung request fails its test
}

// newFixture starts the fixture; opts change the server's configuration.
func newFixture(t *testing.T, opts ...func(*server.Config)) *fixture {
	t.Helper()
	f := &fixture{}
	f.metrics = server.NewMetrics(func() (int, time.Time) { return f.eng.PendingRequests() }, time.Now)
	f.env = enginetest.New(t, enginetest.Options{
		Sim:      sim.Options{RetryDelays: []time.Duration{10 * time.Millisecond, 50 * time.Millisecond}},
		Observer: f.metrics,
		Server: func(c *server.Config) {
			c.Metrics = f.metrics
			for _, o := range opts {
				o(c)
			}
		},
	})
	f.sim, f.db, f.eng, f.srv = f.env.Sim, f.env.Store(), f.env.Engine(), f.env.Server()
	f.url, f.client = f.env.URL, f.env.HTTP
	return f
}

// closeStore closes the bbolt store under the running server.
func (f *fixture) closeStore(t *testing.T) {
	t.Helper()
	f.settle(t)
	if err := f.env.CloseStore(); err != nil {
		t.Fatalf("closing the store: %v", err)
	}
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

// settle waits until the simulator has delivered everything; a delivery
// the server refused fails the test.
func (f *fixture) settle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.env.Settle(ctx); err != nil {
		t.Fatal(err)
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

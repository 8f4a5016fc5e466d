package sim_test

import (
	"bufio"
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
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
)

// The demo ids of SPEC §7, as TestBotFrameworkBottender configures them.
const (
	bfPage          = "100000000000001"
	bfRingCX        = "200000000000001"
	bfBot           = "300000000000001"
	bfBotToken      = "bot-page-token"
	bfBotSecret     = "bot-secret"
	bfBotVerify     = "bot-verify-token"
	bfRingCXToken   = "ringcx-page-token"
	bfRingCXSecret  = "ringcx-secret"
	bfWrongSecret   = "not-the-bot-secret"
	bfWebhookPath   = "/webhooks/messenger"
	bfPSIDA         = "7000001"
	bfPSIDB         = "7000002"
	bfPSIDC         = "7000003"
	bfPSIDDirect    = "7000009"
	bfDir           = "testdata/botframework"
	bfFramework     = "bottender"
	bfWait          = 15 * time.Second // the longest wait for one thing the bot does
	bfProcessBudget = 90 * time.Second // the bot process is killed after this long
)

// TestBotFrameworkBottender runs a bot written with bottender (Node.js, unmodified, served as
// its `bottender start` command serves it) as the callback of the bot app of a hop_v2 page, with
// the app's secret configured in bottender, and checks SPEC §4's promise that a third-party bot
// framework receives the simulator's webhooks unchanged:
//
//   - bottender's signature check (X-Hub-Signature, sha1 only, in bottender 1.5.5) accepts every
//     delivery, including bodies with \uXXXX escapes of non-ASCII text and "\/";
//   - its replies, sent through bottender's own Messenger client pointed at the simulator, reach
//     the customers with their exact text;
//   - a POST carrying several entries (one event each) is split into its events;
//   - handover events reach it (request_thread_control, which it honours by passing control
//     through its client, and pass_thread_control when control comes back) and a customer
//     message in standby is seen as standby;
//   - a delivery signed with a wrong secret is refused (HTTP 400), so the check is real, and
//     direct POSTs show which header bottender verifies.
func TestBotFrameworkBottender(t *testing.T) {
	start := time.Now()
	node, version := nodePackages(t, bfDir, bfFramework, "npm ci --ignore-scripts --prefix messenger/sim/"+bfDir)

	// RingCX's webhook endpoint: answers 200.
	ringcx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer ringcx.Close()

	// The simulator delivers webhooks through a transport that records every POST and can hold
	// one back, so that the events queued meanwhile go out together in the next POST.
	tr := &bfTransport{base: &http.Transport{Proxy: nil}}
	defer tr.base.CloseIdleConnections()
	s := sim.New(sim.Options{
		HTTPClient: &http.Client{
			Transport:     tr,
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		RetryDelays: []time.Duration{}, // one attempt: a refused delivery is dropped at once
	})
	defer s.Close()
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	bot := startBotFramework(t, node, map[string]string{
		"BOT_PORT":               "0",
		"BOT_MAX_SECONDS":        fmt.Sprint(int(bfProcessBudget / time.Second)),
		"NODE_ENV":               "production",
		"MESSENGER_PAGE_ID":      bfPage,
		"MESSENGER_ACCESS_TOKEN": bfBotToken,
		"MESSENGER_APP_ID":       bfBot,
		"MESSENGER_APP_SECRET":   bfBotSecret,
		"MESSENGER_VERIFY_TOKEN": bfBotVerify,
		"MESSENGER_GRAPH_ORIGIN": srv.URL,
	})
	botURL := bot.url + bfWebhookPath
	tr.setBotURL(botURL)

	page := func(botSecret string) sim.PageConfig {
		return sim.PageConfig{
			PageID:       bfPage,
			Mode:         sim.ModeHOPv2,
			PrimaryAppID: bfBot,
			Apps: []sim.AppConfig{
				{AppID: bfRingCX, Name: "RingCX", AccessToken: bfRingCXToken, AppSecret: bfRingCXSecret,
					CallbackURL: ringcx.URL + bfWebhookPath, VerifyToken: "dev-verify"},
				// A plain app with a callback, not the reference bot: bottender plays the bot.
				{AppID: bfBot, Name: "Bot (" + bfFramework + ")", AccessToken: bfBotToken, AppSecret: botSecret,
					CallbackURL: botURL, VerifyToken: bfBotVerify},
			},
		}
	}
	if err := s.PutPage(page(bfBotSecret)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bfProcessBudget)
	defer cancel()

	// Meta's verification handshake, answered by bottender's connector with the verify token.
	if err := s.VerifyWebhook(ctx, bfPage, bfBot); err != nil {
		t.Fatalf("webhook verification with %s: %v", bfFramework, err)
	}

	settle := func(what string) {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, bfWait)
		defer scancel()
		if err := s.Settle(sctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// write makes a customer write and returns the message id.
	write := func(psid, text string) string {
		t.Helper()
		mid, err := s.CustomerMessage(bfPage, psid, text)
		if err != nil {
			t.Fatalf("customer %s writes %q: %v", psid, text, err)
		}
		return mid
	}
	// replied waits until the bot printed that it answered a message.
	replied := func(psid, text string) {
		t.Helper()
		bot.waitFor(t, fmt.Sprintf("bot's reply %q to %s", "fw: "+text, psid), func(l bfLine) bool {
			return l.Kind == "replied" && l.PSID == psid && l.Text == "fw: "+text
		})
	}
	// The customer messages that the bot must answer, and whose text the bot must report.
	type sentMsg struct{ psid, mid, text string }
	var answered []sentMsg

	// 1. One message, with text that the simulator writes as \uXXXX escapes (a surrogate pair
	//    for the emoji) and signs as escaped.
	const accented = "ça va? 👋"
	mid := write(bfPSIDA, accented)
	answered = append(answered, sentMsg{bfPSIDA, mid, accented})
	replied(bfPSIDA, accented)
	settle("first message")
	first := tr.postsTo(botURL)
	if len(first) != 1 {
		t.Fatalf("the first customer message made %d POSTs to the bot, want 1", len(first))
	}
	if b := first[0].body; !bytes.Contains(b, []byte(`"text":"\u00e7a va? \ud83d\udc4b"`)) || !bfIsASCII(b) {
		t.Errorf("first webhook body %s: want the text as Meta writes it, \\u00e7a va? \\ud83d\\udc4b, and ASCII only", b)
	}

	// 2. A batch: the POST of the next message is held while more customers write, so the
	//    simulator sends the waiting events together, one per entry, in one POST.
	held, release := tr.holdNext()
	defer release()
	mid = write(bfPSIDB, "hold this one")
	answered = append(answered, sentMsg{bfPSIDB, mid, "hold this one"})
	select {
	case <-held:
	case <-time.After(bfWait):
		t.Fatal("the simulator made no webhook POST to the bot for the held message")
	}
	batch := []sentMsg{
		{bfPSIDA, "", "order #42 / status?"},  // "/" goes out as "\/"
		{bfPSIDB, "", "naïve café — 3 €"},     // more escapes
		{bfPSIDC, "", `x<y & "z">w`},          // no HTML escaping; quotes escaped
		{bfPSIDC, "", "日本語もOK 🚀"},             // CJK and another surrogate pair
		{bfPSIDA, "", "second line\nof text"}, // control character escape
	}
	for i := range batch {
		batch[i].mid = write(batch[i].psid, batch[i].text)
	}
	answered = append(answered, batch...)
	release()
	replied(bfPSIDB, "hold this one")
	for _, m := range batch {
		replied(m.psid, m.text)
	}
	settle("batch")
	for _, p := range tr.postsTo(botURL) {
		if !bytes.Contains(p.body, []byte(batch[0].mid)) {
			continue
		}
		for _, want := range []string{`"text":"order #42 \/ status?"`, `"text":"x<y & \"z\">w"`,
			`"text":"\u65e5\u672c\u8a9e\u3082OK \ud83d\ude80"`, `"text":"second line\nof text"`} {
			if !bytes.Contains(p.body, []byte(want)) {
				t.Errorf("batched webhook body %s: want %s, as Meta writes it", p.body, want)
			}
		}
	}

	// 3. Handover: RingCX asks for the thread (Graph call as RingCX); bottender receives
	//    request_thread_control and the bot passes control with bottender's client.
	ringcxClient := &messenger.Client{
		BaseURL:    srv.URL,
		HTTP:       srv.Client(),
		MaxRetries: -1,
		Credentials: func(string) (messenger.Credentials, bool) {
			return messenger.Credentials{AccessToken: bfRingCXToken, AppSecret: bfRingCXSecret}, true
		},
	}
	if err := ringcxClient.RequestThreadControl(ctx, bfPage, bfPSIDA, "ringcx wants it"); err != nil {
		t.Fatalf("RingCX request_thread_control: %v", err)
	}
	reqLine := bot.waitFor(t, "request_thread_control event", func(l bfLine) bool {
		return l.Kind == "event" && l.Event == "request_thread_control" && l.PSID == bfPSIDA
	})
	if reqLine.RequestedOwnerAppID != bfRingCX || reqLine.Metadata != "ringcx wants it" || reqLine.Standby {
		t.Errorf("bot got request_thread_control %s, want requested_owner_app_id %s, metadata %q, not standby", reqLine.raw, bfRingCX, "ringcx wants it")
	}
	bot.waitFor(t, "bot passes control to RingCX", func(l bfLine) bool {
		return l.Kind == "passed" && l.PSID == bfPSIDA && l.TargetAppID == bfRingCX
	})
	settle("request and pass")
	if owner := s.Thread(bfPage, bfPSIDA).OwnerAppID; owner != bfRingCX {
		t.Fatalf("owner after the bot honoured RingCX's request = %q, want RingCX %s", owner, bfRingCX)
	}
	// While RingCX owns the thread, the bot hears the customer in standby and stays silent.
	standbyMID := write(bfPSIDA, "is a human there?")
	standbyLine := bot.waitFor(t, "standby message", func(l bfLine) bool {
		return l.Kind == "event" && l.Event == "text" && l.MID == standbyMID
	})
	if !standbyLine.Standby || standbyLine.Text != "is a human there?" {
		t.Errorf("bot got %s, want the text in standby", standbyLine.raw)
	}
	settle("standby message")
	// RingCX passes control back: bottender receives pass_thread_control.
	if err := ringcxClient.PassThreadControl(ctx, bfPage, bfPSIDA, bfBot, "back to the bot"); err != nil {
		t.Fatalf("RingCX pass_thread_control: %v", err)
	}
	passLine := bot.waitFor(t, "pass_thread_control event", func(l bfLine) bool {
		return l.Kind == "event" && l.Event == "pass_thread_control" && l.PSID == bfPSIDA
	})
	if passLine.PreviousOwnerAppID != bfRingCX || passLine.NewOwnerAppID != bfBot || passLine.Metadata != "back to the bot" {
		t.Errorf("bot got pass_thread_control %s, want previous_owner_app_id %s, new_owner_app_id %s, metadata %q",
			passLine.raw, bfRingCX, bfBot, "back to the bot")
	}
	mid = write(bfPSIDA, "thanks!")
	answered = append(answered, sentMsg{bfPSIDA, mid, "thanks!"})
	replied(bfPSIDA, "thanks!")
	settle("after handover")

	// 4. The page signs the bot's webhooks with a wrong secret: bottender must refuse them.
	if err := s.PutPage(page(bfWrongSecret)); err != nil {
		t.Fatal(err)
	}
	wrongMID := write(bfPSIDB, "signed with the wrong secret")
	settle("wrongly signed delivery")
	if err := s.PutPage(page(bfBotSecret)); err != nil {
		t.Fatal(err)
	}
	mid = write(bfPSIDB, "signed right again")
	answered = append(answered, sentMsg{bfPSIDB, mid, "signed right again"})
	replied(bfPSIDB, "signed right again")
	settle("after the secret was restored")

	// 5. Direct POSTs of one Meta-shaped body with chosen headers: which header does bottender
	//    verify? It answers 200 when it accepts a body and 400 when its check fails.
	directCases := []struct {
		name string
		// The secrets that sign each header; "" leaves the header out.
		sha1Secret, sha256Secret string
		accepted                 bool
	}{
		{"both headers right", bfBotSecret, bfBotSecret, true},
		{"sha1 right, sha256 wrong", bfBotSecret, bfWrongSecret, true},
		{"sha1 right, no sha256", bfBotSecret, "", true},
		{"sha256 right, no sha1", "", bfBotSecret, false},
		{"sha256 right, sha1 wrong", bfWrongSecret, bfBotSecret, false},
	}
	for i, c := range directCases {
		body := bfDirectBody(bfPSIDDirect, c.name, i)
		var h1, h256 string
		if c.sha1Secret != "" {
			h1 = "sha1=" + bfHMAC(sha1.New, c.sha1Secret, body)
		}
		if c.sha256Secret != "" {
			h256 = "sha256=" + bfHMAC(sha256.New, c.sha256Secret, body)
		}
		status, answer := bfPostDirect(t, botURL, body, h1, h256)
		want := http.StatusBadRequest
		if c.accepted {
			want = http.StatusOK
		}
		if status != want {
			t.Errorf("direct POST, %s: %s answered HTTP %d %s, want %d", c.name, bfFramework, status, answer, want)
		}
		if !c.accepted && !strings.Contains(answer, "Signature Validation Failed") {
			t.Errorf("direct POST, %s: answer %s, want bottender's signature validation error", c.name, answer)
		}
		if c.accepted {
			replied(bfPSIDDirect, c.name)
		}
	}

	// The bot process has handled everything: stop it and read all it printed.
	lines := bot.stop(t)
	elapsed := time.Since(start)

	// --- What the bot (bottender) saw and did. ---
	var errs []string
	textByMID := map[string]bfLine{}
	for _, l := range lines {
		switch {
		case l.Kind == "error":
			errs = append(errs, l.raw)
		case l.Kind == "event" && l.Event == "text":
			if _, dup := textByMID[l.MID]; dup {
				t.Errorf("bot handled message %s twice", l.MID)
			}
			textByMID[l.MID] = l
		case l.Kind == "event" && l.Event == "other":
			t.Errorf("bot got an event it does not know: %s", l.raw)
		}
	}
	if len(errs) > 0 {
		t.Errorf("bot's handler failed:\n%s", strings.Join(errs, "\n"))
	}
	for _, m := range answered {
		l, ok := textByMID[m.mid]
		switch {
		case !ok:
			t.Errorf("bot never got message %s %q from %s", m.mid, m.text, m.psid)
		case l.Text != m.text || l.PSID != m.psid || l.Standby:
			t.Errorf("bot got message %s as %s, want text %q from %s in messaging", m.mid, l.raw, m.text, m.psid)
		}
	}
	if _, ok := textByMID[wrongMID]; ok {
		t.Errorf("bot handled message %s, which was signed with a wrong secret", wrongMID)
	}

	// --- The simulator's POSTs, against what bottender received and answered. ---
	posts := tr.postsTo(botURL)
	requests := map[string][]bfLine{} // body sha256 -> the bot's request lines
	for _, l := range lines {
		if l.Kind == "request" && l.Method == http.MethodPost {
			requests[l.BodySHA256] = append(requests[l.BodySHA256], l)
		}
	}
	var batched bool
	for i, p := range posts {
		sum := sha256.Sum256(p.body)
		wantSecret := bfBotSecret
		if bytes.Contains(p.body, []byte(wrongMID)) {
			wantSecret = bfWrongSecret
		}
		// Both headers, each the HMAC of the exact bytes sent with the secret in force.
		if got, want := p.sha1, "sha1="+bfHMAC(sha1.New, wantSecret, p.body); got != want {
			t.Errorf("POST %d: X-Hub-Signature %q, want %q", i, got, want)
		}
		if got, want := p.sha256, "sha256="+bfHMAC(sha256.New, wantSecret, p.body); got != want {
			t.Errorf("POST %d: X-Hub-Signature-256 %q, want %q", i, got, want)
		}
		if !bfIsASCII(p.body) {
			t.Errorf("POST %d: body is not ASCII-only: %s", i, p.body)
		}
		// bottender got these bytes unchanged, and answered what the simulator recorded.
		got := requests[hex.EncodeToString(sum[:])]
		if len(got) != 1 {
			t.Errorf("POST %d (%d bytes): the bot recorded %d requests with this body's sha256, want 1", i, len(p.body), len(got))
			continue
		}
		if got[0].Status != p.status || got[0].XHubSignature != p.sha1 || got[0].XHubSignature256 != p.sha256 {
			t.Errorf("POST %d: bot answered %d with headers %q %q; simulator saw %d and sent %q %q",
				i, got[0].Status, got[0].XHubSignature, got[0].XHubSignature256, p.status, p.sha1, p.sha256)
		}
		var env struct {
			Entry []struct {
				Messaging []json.RawMessage `json:"messaging"`
				Standby   []json.RawMessage `json:"standby"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(p.body, &env); err != nil {
			t.Fatalf("POST %d: %v", i, err)
		}
		for j, e := range env.Entry {
			if len(e.Messaging)+len(e.Standby) != 1 {
				t.Errorf("POST %d entry %d: %d events, want exactly one per entry", i, j, len(e.Messaging)+len(e.Standby))
			}
		}
		if got[0].Entries != len(env.Entry) {
			t.Errorf("POST %d: bot parsed %d entries, the body has %d", i, got[0].Entries, len(env.Entry))
		}
		if len(env.Entry) > 1 && p.status == http.StatusOK {
			batched = true
		}
		wantStatus := http.StatusOK
		if wantSecret == bfWrongSecret {
			wantStatus = http.StatusBadRequest
			if !strings.Contains(got[0].Answer, "Signature Validation Failed") {
				t.Errorf("POST %d (wrong secret): bot answered %s, want bottender's signature validation error", i, got[0].Answer)
			}
		}
		if p.status != wantStatus {
			t.Errorf("POST %d: bot answered HTTP %d (%s), want %d", i, p.status, got[0].Answer, wantStatus)
		}
	}
	if !batched {
		t.Errorf("no POST to the bot carried several entries; the batch was not exercised")
	}

	// --- The simulator's log: every delivery to the bot delivered, but the wrongly signed one. ---
	byDelivery := map[int64][]sim.LogEntry{}
	var botHooks, ringcxHooks int
	for _, e := range s.Log(bfPage, "") {
		if e.Kind != sim.KindWebhook {
			continue
		}
		switch e.RecipientAppID {
		case bfRingCX:
			ringcxHooks++
			if e.Outcome != sim.OutcomeDelivered {
				t.Errorf("webhook to RingCX: outcome %q (HTTP %d, %s), want delivered", e.Outcome, e.HTTPStatus, e.Detail)
			}
			continue
		case bfBot:
		default:
			t.Errorf("webhook to unexpected app %s", e.RecipientAppID)
			continue
		}
		botHooks++
		byDelivery[e.DeliveryID] = append(byDelivery[e.DeliveryID], e)
		switch {
		case e.MID == wrongMID:
			if e.Outcome != sim.OutcomeDropped || e.HTTPStatus != http.StatusBadRequest || e.Attempt != 1 {
				t.Errorf("wrongly signed delivery: outcome %q HTTP %d attempt %d, want dropped after bottender's HTTP 400 (one attempt)", e.Outcome, e.HTTPStatus, e.Attempt)
			}
		case e.Outcome != sim.OutcomeDelivered || e.HTTPStatus != http.StatusOK:
			t.Errorf("webhook %s %s to the bot (delivery %d, attempt %d): outcome %q HTTP %d (%s), want delivered",
				e.Event, e.MID, e.DeliveryID, e.Attempt, e.Outcome, e.HTTPStatus, e.Detail)
		}
	}
	if botHooks == 0 || ringcxHooks == 0 {
		t.Errorf("simulator logged %d webhooks to the bot and %d to RingCX, want some of each", botHooks, ringcxHooks)
	}
	var batchIDs []int64
	for id, es := range byDelivery {
		if len(es) > 1 {
			batchIDs = append(batchIDs, id)
			for _, e := range es {
				if e.Outcome != sim.OutcomeDelivered {
					t.Errorf("batched delivery %d: entry %s outcome %q", id, e.MID, e.Outcome)
				}
			}
		}
	}
	if len(posts) != len(byDelivery) {
		t.Errorf("transport saw %d POSTs to the bot, the simulator logged %d deliveries", len(posts), len(byDelivery))
	}
	// The messages written while the POST of "hold this one" was held went out together, in
	// order, in one POST: one delivery_id shared by their log entries.
	var wantBatch []string
	for _, m := range batch {
		wantBatch = append(wantBatch, m.mid)
	}
	var gotBatch []string
	for _, id := range batchIDs {
		var mids []string
		for _, e := range byDelivery[id] {
			mids = append(mids, e.MID)
		}
		if slices.Contains(mids, batch[0].mid) {
			gotBatch = mids
		}
	}
	if !slices.Equal(gotBatch, wantBatch) {
		t.Errorf("delivery with the batched messages carried %q, want exactly %q (deliveries with several entries: %v)", gotBatch, wantBatch, batchIDs)
	}

	// --- The threads as Meta sees them: each customer message answered with its exact text. ---
	for _, psid := range []string{bfPSIDA, bfPSIDB, bfPSIDC} {
		view := s.Thread(bfPage, psid)
		var customer, replies, wantCustomer, wantReplies []string
		for _, m := range view.Messages {
			switch m.From {
			case "customer":
				customer = append(customer, m.Text)
			case bfBot:
				replies = append(replies, m.Text)
			default:
				t.Errorf("thread %s: message %q from %s", psid, m.Text, m.From)
			}
		}
		for _, m := range answered {
			if m.psid == psid {
				wantReplies = append(wantReplies, "fw: "+m.text)
			}
		}
		for _, e := range s.Log(bfPage, psid) {
			if e.Kind == sim.KindCustomerMessage {
				wantCustomer = append(wantCustomer, e.Text)
			}
		}
		// Replies to one POST's events are sent concurrently: compare them as sets.
		slices.Sort(replies)
		slices.Sort(wantReplies)
		if !slices.Equal(customer, wantCustomer) || !slices.Equal(replies, wantReplies) {
			t.Errorf("thread %s:\n customer %q\n  replies %q\nwant customer %q\n  replies %q", psid, customer, replies, wantCustomer, wantReplies)
		}
	}
	if owner := s.Thread(bfPage, bfPSIDA).OwnerAppID; owner != bfBot {
		t.Errorf("thread %s owner = %q, want the bot after RingCX passed it back", bfPSIDA, owner)
	}

	if t.Failed() {
		var out strings.Builder
		for _, l := range lines {
			out.WriteString(l.raw + "\n")
		}
		t.Logf("bot stdout:\n%s", out.String())
	}
	t.Logf("%s %s verified X-Hub-Signature (sha1) on %d simulator POSTs (%d with several entries) and %d direct POSTs; run time %v",
		bfFramework, version, len(posts), len(batchIDs), len(directCases), elapsed.Round(time.Millisecond))
}

// bfLine is one JSON line printed by testdata/botframework (server.js, index.js, _error.js).
type bfLine struct {
	Kind string `json:"kind"`
	Port int    `json:"port"`
	// Requests (server.js).
	Method           string `json:"method"`
	Path             string `json:"path"`
	Status           int    `json:"status"`
	Answer           string `json:"answer"`
	BodySHA256       string `json:"body_sha256"`
	XHubSignature    string `json:"x_hub_signature"`
	XHubSignature256 string `json:"x_hub_signature_256"`
	Entries          int    `json:"entries"`
	// Events and actions (index.js).
	PSID                string `json:"psid"`
	Event               string `json:"event"`
	Standby             bool   `json:"standby"`
	MID                 string `json:"mid"`
	Text                string `json:"text"`
	Metadata            string `json:"metadata"`
	RequestedOwnerAppID string `json:"requested_owner_app_id"`
	PreviousOwnerAppID  string `json:"previous_owner_app_id"`
	NewOwnerAppID       string `json:"new_owner_app_id"`
	TargetAppID         string `json:"target_app_id"`

	raw string
}

// bfProcess is the running bot: node server.js, its lines as they come.
type bfProcess struct {
	url    string
	cmd    *exec.Cmd
	cancel context.CancelFunc
	stderr *bfBuffer
	done   chan struct{} // closed when stdout is closed

	mu      sync.Mutex
	lines   []bfLine
	changed chan struct{} // closed and replaced on every new line
}

// startBotFramework starts node server.js with env added to the environment (proxy settings
// removed, so that nothing leaves loopback) and waits until it listens.
func startBotFramework(t *testing.T, node string, env map[string]string) *bfProcess {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bfProcessBudget)
	cmd := exec.CommandContext(ctx, node, "server.js")
	cmd.Dir = bfDir
	cmd.WaitDelay = 5 * time.Second
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		_, overridden := env[name]
		if strings.HasSuffix(strings.ToLower(name), "_proxy") || overridden || strings.HasPrefix(name, "MESSENGER_") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p := &bfProcess{cmd: cmd, cancel: cancel, stderr: &bfBuffer{}, done: make(chan struct{}), changed: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start node server.js: %v", err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			l := bfLine{raw: sc.Text()}
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l = bfLine{Kind: "error", raw: "unparsable line: " + sc.Text()}
			}
			p.mu.Lock()
			p.lines = append(p.lines, l)
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { p.kill() })
	l := p.waitFor(t, "server.js listening", func(l bfLine) bool { return l.Kind == "listening" })
	if l.Port == 0 {
		t.Fatalf("server.js printed %s", l.raw)
	}
	p.url = fmt.Sprintf("http://127.0.0.1:%d", l.Port)
	return p
}

// waitFor returns the first line that matches, waiting for it at most bfWait.
func (p *bfProcess) waitFor(t *testing.T, what string, match func(bfLine) bool) bfLine {
	t.Helper()
	deadline := time.NewTimer(bfWait)
	defer deadline.Stop()
	exited := false
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if match(l) {
				p.mu.Unlock()
				return l
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if exited { // every line was read and none matched
			p.fail(t, "waiting for %s: the bot process exited", what)
		}
		select {
		case <-changed:
		case <-p.done:
			exited = true
		case <-deadline.C:
			p.fail(t, "waiting for %s: nothing after %v", what, bfWait)
		}
	}
}

func (p *bfProcess) snapshot() []bfLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines)
}

// fail stops the test with the bot's output.
func (p *bfProcess) fail(t *testing.T, format string, args ...any) {
	t.Helper()
	p.kill()
	var out strings.Builder
	for _, l := range p.snapshot() {
		out.WriteString(l.raw + "\n")
	}
	t.Fatalf("%s\nbot stdout:\n%sbot stderr:\n%s", fmt.Sprintf(format, args...), out.String(), p.stderr.String())
}

// stop ends the bot process and returns all it printed; what it wrote on stderr is logged.
func (p *bfProcess) stop(t *testing.T) []bfLine {
	t.Helper()
	p.kill()
	if s := strings.TrimSpace(p.stderr.String()); s != "" {
		t.Logf("bot stderr:\n%s", s)
	}
	return p.snapshot()
}

// kill ends the process (it is the test's child, ended by its own id) and waits for it and its
// output.
func (p *bfProcess) kill() {
	p.cancel()
	_ = p.cmd.Wait()
	<-p.done
}

// bfBuffer is a bytes.Buffer safe for the process's writer and the test's reader.
type bfBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *bfBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *bfBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// bfTransport is the simulator's webhook transport: it records every POST to the bot and can
// hold the next one back until released.
type bfTransport struct {
	base *http.Transport

	mu     sync.Mutex
	botURL string
	posts  []bfPost
	gate   *bfGate
}

func (tr *bfTransport) setBotURL(u string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.botURL = u
}

type bfPost struct {
	url          string
	body         []byte
	sha1, sha256 string
	status       int
}

type bfGate struct {
	held, release chan struct{}
}

// holdNext makes the next POST to the bot wait until release is called; held is closed when
// that POST is waiting.
func (tr *bfTransport) holdNext() (held <-chan struct{}, release func()) {
	g := &bfGate{held: make(chan struct{}), release: make(chan struct{})}
	tr.mu.Lock()
	tr.gate = g
	tr.mu.Unlock()
	var once sync.Once
	return g.held, func() { once.Do(func() { close(g.release) }) }
}

func (tr *bfTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
		req.Body = io.NopCloser(bytes.NewReader(b))
	}
	tr.mu.Lock()
	toBot := req.Method == http.MethodPost && req.URL.String() == tr.botURL
	var g *bfGate
	if toBot {
		g, tr.gate = tr.gate, nil
	}
	tr.mu.Unlock()
	if toBot {
		if g != nil {
			close(g.held)
			select {
			case <-g.release:
			case <-req.Context().Done():
				return nil, req.Context().Err()
			}
		}
	}
	resp, err := tr.base.RoundTrip(req)
	if toBot {
		p := bfPost{url: req.URL.String(), body: body, sha1: req.Header.Get("X-Hub-Signature"), sha256: req.Header.Get("X-Hub-Signature-256")}
		if err == nil {
			p.status = resp.StatusCode
		}
		tr.mu.Lock()
		tr.posts = append(tr.posts, p)
		tr.mu.Unlock()
	}
	return resp, err
}

// postsTo returns the POSTs made so far to a URL, in order.
func (tr *bfTransport) postsTo(url string) []bfPost {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []bfPost
	for _, p := range tr.posts {
		if p.url == url {
			out = append(out, p)
		}
	}
	return out
}

// bfDirectBody is a webhook body as Meta writes it, with one customer message: text is name,
// mid is unique per n.
func bfDirectBody(psid, text string, n int) []byte {
	quoted, _ := json.Marshal(text)
	ms := time.Now().UnixMilli()
	return []byte(fmt.Sprintf(`{"object":"page","entry":[{"id":"%s","time":%d,"messaging":[{"sender":{"id":"%s"},"recipient":{"id":"%s"},"timestamp":%d,"message":{"mid":"m_direct_%d","text":%s}}]}]}`,
		bfPage, ms, psid, bfPage, ms, n, quoted))
}

// bfPostDirect sends one webhook POST with the given signature headers ("" leaves one out) and
// returns the answer.
func bfPostDirect(t *testing.T, url string, body []byte, sha1Header, sha256Header string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if sha1Header != "" {
		req.Header.Set("X-Hub-Signature", sha1Header)
	}
	if sha256Header != "" {
		req.Header.Set("X-Hub-Signature-256", sha256Header)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: bfWait}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("direct POST to the bot: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}

// bfHMAC is the lowercase hex HMAC of body with secret.
func bfHMAC(h func() hash.Hash, secret string, body []byte) string {
	m := hmac.New(h, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func bfIsASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

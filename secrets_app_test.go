package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
)

// syncBuffer is a log destination shared by the app's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// transcript collects everything threadctl said during a test: responses
// (status, headers, body) and command output.
type transcript struct {
	parts []string
}

func (tr *transcript) add(what, text string) { tr.parts = append(tr.parts, "== "+what+"\n"+text) }

// TestSecretsNeverEchoed starts threadctl with every kind of secret, each
// from another source, drives it through its errors, debug views and
// commands, and looks for each secret in its logs and everything it
// answered.
func TestSecretsNeverEchoed(t *testing.T) {
	clearEnv(t)
	secrets := map[string]string{
		"global api token":          "Gl0bal-s3cret-token-0001",
		"global api token (hashed)": "Gl0bal-hashed-token-0002",
		"page api token":            "Page-s3cret-token-0003",
		"ringcx_app_secret":         "Ringcx-app-s3cret-0004",
		"page_token":                "Page-access-s3cret-0005",
		"verify_token":              "Verify-s3cret-0006",
	}
	hashed := sha256.Sum256([]byte(secrets["global api token (hashed)"]))
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"secrets/api-tokens": "# global tokens\n" + secrets["global api token"] + "\nsha256:" + hex.EncodeToString(hashed[:]) + "\n",
		"secrets/app-secret": secrets["ringcx_app_secret"] + "\n",
		"secrets/verify":     secrets["verify_token"] + "\n",
	})
	t.Setenv("TEST_PAGE_TOKENS", secrets["page api token"])
	t.Setenv("TEST_PAGE_ACCESS_TOKEN", secrets["page_token"])
	config := filepath.Join(dir, "threadctl.yaml")
	writeFiles(t, dir, map[string]string{"threadctl.yaml": `api_tokens_file: secrets/api-tokens
webhook: {verify_token_file: secrets/verify}
graph: {timeout: 300ms}
pages:
  - page_id: "` + demoPageID + `"
    primary: bot
    ringcx_app_id: "` + demoRingCXAppID + `"
    ringcx_app_secret_file: secrets/app-secret
    page_token_env: TEST_PAGE_ACCESS_TOKEN
    api_tokens_env: TEST_PAGE_TOKENS
    bot_app_ids: ["` + demoBotAppID + `"]
`})
	cfg, err := loadConfig([]string{"--config", config, "--addr", "127.0.0.1:0", "--sim-addr", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "data"), "--log-level", "debug", "--log-format", "json"})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	app, err := Start(context.Background(), cfg, newLogger(cfg, logs))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			app.Close(context.Background())
		}
	})
	base := "http://" + app.Addr()
	var tr transcript
	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(what, method, target string, hdr http.Header, body string) int {
		t.Helper()
		req, err := http.NewRequest(method, base+target, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, vs := range hdr {
			req.Header[k] = vs
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var h strings.Builder
		resp.Header.Write(&h)
		tr.add(what, fmt.Sprintf("%s\n%s\n%s", resp.Status, h.String(), b))
		return resp.StatusCode
	}
	expect := func(what string, got, want int) {
		t.Helper()
		if got != want {
			t.Errorf("%s: HTTP %d, want %d", what, got, want)
		}
	}
	global, hashedToken, pageToken := secrets["global api token"], secrets["global api token (hashed)"], secrets["page api token"]
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	waitState := func(psid, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			req, _ := http.NewRequest(http.MethodGet, base+"/debug/threads/"+psid, nil)
			req.Header.Set("Authorization", "Bearer "+global)
			resp, err := client.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(b), `"state":"`+want+`"`) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("thread %s did not reach %s", psid, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	handover := func(psid string) string {
		return "/1.0/bots/handover?" + url.Values{"identity_foreign_id": {psid}, "from": {"bot"}, "to": {"agent"}, "type": {"messenger"}}.Encode()
	}

	// A thread through its life, with each kind of token: the webhooks are
	// signed with the app secret, the Graph calls carry the page token.
	psid := "7000000000000777"
	if _, err := app.sim.CustomerMessage(demoPageID, psid, "hello"); err != nil {
		t.Fatal(err)
	}
	waitState(psid, "bot")
	expect("handover with the page token", do("handover", http.MethodPost, handover(psid), bearer(pageToken), ""), http.StatusOK)
	waitState(psid, "agent")
	expect("intervention with the hashed token", do("intervention", http.MethodPost, "/1.0/interventions?identity_foreign_id="+psid+"&access_token="+url.QueryEscape(hashedToken), nil, ""), http.StatusCreated)
	expect("content", do("content", http.MethodPost, "/1.0/contents?identity_foreign_id="+psid+"&body=hi", bearer(global),
		""), http.StatusCreated)

	// Errors.
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	errs := []struct {
		what   string
		method string
		target string
		hdr    http.Header
		body   string
		want   int
	}{
		{"wrong token", http.MethodPost, handover(psid) + "&access_token=nope", nil, "", http.StatusUnauthorized},
		{"a secret in the wrong scheme", http.MethodPost, handover(psid), http.Header{"Authorization": {"Token " + global}}, "", http.StatusUnauthorized},
		{"a secret as a token that is not one", http.MethodPost, handover(psid), bearer(secrets["ringcx_app_secret"]), "", http.StatusUnauthorized},
		{"two tokens", http.MethodPost, handover(psid) + "&access_token=" + global + "&access_token=" + pageToken, nil, "", http.StatusBadRequest},
		{"tokens in the query and the body", http.MethodPost, handover(psid) + "&access_token=" + global, form, "access_token=" + pageToken, http.StatusBadRequest},
		{"unknown identity", http.MethodPost, handover("7000000000000999"), bearer(pageToken), "", http.StatusNotFound},
		{"bad parameter", http.MethodPost, handover(psid) + "&to=robot", bearer(global), "", http.StatusBadRequest},
		{"headers too large", http.MethodGet, "/debug/threads", http.Header{"Authorization": {"Bearer " + global}, "X-Pad": {strings.Repeat(global, 1000)}}, "", http.StatusRequestHeaderFieldsTooLarge},
		{"webhook signed with another secret", http.MethodPost, "/webhooks/messenger", http.Header{"X-Hub-Signature-256": {"sha256=00"}}, `{"object":"page","entry":[]}`, http.StatusForbidden},
		{"webhook verify with a wrong token", http.MethodGet, "/webhooks/messenger?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=42", nil, "", http.StatusForbidden},
		{"webhook verify", http.MethodGet, "/webhooks/messenger?hub.mode=subscribe&hub.verify_token=" + secrets["verify_token"] + "&hub.challenge=42", nil, "", http.StatusOK},
		{"page token asking for another page", http.MethodGet, "/debug/threads/" + psid + "?page_id=999", bearer(pageToken), "", http.StatusNotFound},
	}
	for _, e := range errs {
		expect(e.what, do(e.what, e.method, e.target, e.hdr, e.body), e.want)
	}
	// A webhook with a valid signature that cannot be parsed.
	bad := []byte(`{"object":"page","entry":[{"id":1,"messaging":[{"sender":`)
	sig, _ := messenger.Sign(bad, secrets["ringcx_app_secret"])
	expect("unparsable webhook", do("unparsable webhook", http.MethodPost, "/webhooks/messenger", http.Header{"X-Hub-Signature-256": {sig}}, string(bad)), http.StatusBadRequest)

	// Meta failing: an error, then a timeout (net/http's error names the URL,
	// whose query holds the page token).
	for i, fault := range []sim.Fault{{Call: "*", Status: 500}, {Call: "*", DelayMS: 1000}} {
		p := fmt.Sprintf("70000000000008%02d", i)
		if _, err := app.sim.CustomerMessage(demoPageID, p, "hello"); err != nil {
			t.Fatal(err)
		}
		waitState(p, "bot")
		app.sim.SetFault(fault)
		expect(fmt.Sprintf("Graph fault %d", i), do("Graph fault", http.MethodPost, handover(p), bearer(global), ""), http.StatusBadGateway)
		app.sim.ClearFaults()
	}

	// Debug views, diagrams, metrics.
	for _, v := range []struct{ what, target string }{
		{"thread list", "/debug/threads"},
		{"thread", "/debug/threads/" + psid},
		{"debug page", "/debug/"},
		{"thread page", "/debug/threads/" + psid + "/view"},
		{"thread diagram", "/diagrams/threads/" + psid + ".mmd"},
		{"unknown thread page", "/debug/threads/7000000000000999/view"},
	} {
		expect(v.what, do(v.what, http.MethodGet, v.target, bearer(global), ""), map[bool]int{true: http.StatusNotFound, false: http.StatusOK}[strings.Contains(v.what, "unknown")])
	}
	expect("thread list with the token in the query", do("thread list (query token)", http.MethodGet, "/debug/threads?access_token="+url.QueryEscape(pageToken), nil, ""), http.StatusOK)
	expect("metrics", do("metrics", http.MethodGet, "/metrics", nil, ""), http.StatusOK)
	expect("readyz", do("readyz", http.MethodGet, "/readyz", nil, ""), http.StatusOK)

	// Commands.
	command := func(env map[string]string, args ...string) {
		t.Helper()
		for k, v := range env {
			t.Setenv(k, v)
		}
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), args, &stdout, &stderr)
		tr.add("threadctl "+strings.Join(args, " "), fmt.Sprintf("exit %d\n%s\n%s", code, stdout.String(), stderr.String()))
		for k := range env {
			t.Setenv(k, "")
		}
	}
	command(map[string]string{"THREADCTL_TOKEN": global}, "inspect", psid, "--server", base)
	command(map[string]string{"THREADCTL_TOKEN": pageToken}, "inspect", psid, "--server", base, "--json")
	command(map[string]string{"THREADCTL_TOKEN": pageToken}, "inspect", "7000000000000999", "--server", base)
	command(map[string]string{"THREADCTL_TOKEN": secrets["ringcx_app_secret"]}, "inspect", psid, "--server", base)
	command(map[string]string{"THREADCTL_TOKEN": global, "THREADCTL_API_TOKENS": global, "THREADCTL_VERIFY_TOKEN": secrets["verify_token"]}, "serve", "-h")
	command(map[string]string{"THREADCTL_TOKEN": global}, "inspect", "-h")
	// Configurations that are wrong in every way a secret can be.
	writeFiles(t, dir, map[string]string{"bad.yaml": `api_tokens: [` + global + `, "sha256:` + pageToken + `"]
api_tokens_env: TEST_PAGE_TOKENS
webhook: {verify_token: ` + secrets["verify_token"] + `, verify_token_file: secrets/verify}
pages:
  - page_id: "` + demoPageID + `"
    primary: bot
    ringcx_app_id: "` + demoRingCXAppID + `"
    ringcx_app_secret: ` + secrets["ringcx_app_secret"] + `
    ringcx_app_secret_file: secrets/app-secret
    page_token: ` + secrets["page_token"] + `
    page_token_env: TEST_PAGE_ACCESS_TOKEN
    api_tokens: ` + pageToken + `
    api_tokens_file: secrets/missing
    bot_app_ids: ["` + demoBotAppID + `"]
`, "bad2.yaml": "webhook: " + secrets["verify_token"] + "\n", "bad3.yaml": "api_tokens: {" + global + ": 1}\n"})
	command(nil, "serve", "--config", filepath.Join(dir, "bad.yaml"), "--addr", "127.0.0.1:0", "--sim-addr", "127.0.0.1:0")
	command(nil, "serve", "--config", filepath.Join(dir, "bad2.yaml"))
	command(nil, "serve", "--config", filepath.Join(dir, "bad3.yaml"))

	if err := app.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
	closed = true
	command(nil, "check", "--data-dir", filepath.Join(dir, "data"))

	out := strings.Join(tr.parts, "\n")
	if !strings.Contains(out, "are both given") || !strings.Contains(out, "invalid access token") {
		t.Fatalf("the transcript misses the errors it should hold:\n%s", out)
	}
	for name, secret := range secrets {
		for what, text := range map[string]string{"the logs": logs.String(), "the answers and command output": out} {
			// yaml quotes the first 7 characters of a misplaced value.
			if i := strings.Index(text, secret[:7]); i >= 0 {
				t.Errorf("%s show the %s: …%s…", what, name, text[max(0, i-300):min(len(text), i+len(secret)+100)])
			}
		}
	}
}

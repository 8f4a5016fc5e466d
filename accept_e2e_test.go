package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
)

// SPEC.md §3.3: "An accepted event is applied even if the process dies
// right after the 200."

// startServe runs `threadctl serve --config cfg` (Meta being a simulator
// the test runs) on a loopback port and waits until it serves.
func startServe(t *testing.T, dataDir, cfg string) *proc {
	t.Helper()
	cmd := exec.Command(binary, "serve", "--config", cfg, "--addr", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, dataDir: dataDir, logs: make(chan string, 1000), done: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "threadctl serving" {
				ready <- "http://" + fmt.Sprint(rec["addr"])
			}
			select {
			case p.logs <- line:
			default:
			}
		}
	}()
	go func() { p.done <- cmd.Wait() }()
	select {
	case p.addr = <-ready:
	case err := <-p.done:
		t.Fatalf("threadctl exited before serving: %v\n%s", err, drain(p.logs))
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("threadctl did not start\n%s", drain(p.logs))
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// kill ends the process with SIGKILL.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// forwarder is the RingCX app's webhook callback at the simulator: it
// hands each delivery to the threadctl process running at the moment (503
// while none is, and the simulator delivers again).
type forwarder struct {
	mu  sync.Mutex
	url string
}

func (f *forwarder) set(url string) {
	f.mu.Lock()
	f.url = url
	f.mu.Unlock()
}

func (f *forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	target := f.url
	f.mu.Unlock()
	if target == "" {
		http.Error(w, "threadctl is restarting", http.StatusServiceUnavailable)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target+"/webhooks/messenger", r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// debugThread is what GET /debug/threads/{psid} says of a thread.
type debugThread struct {
	State       string `json:"state"`
	Owner       string `json:"owner_app_id"`
	Revision    int    `json:"revision"`
	Transitions []struct {
		Revision int    `json:"revision"`
		Event    string `json:"event"`
		Cause    string `json:"cause"`
		To       string `json:"to"`
		Outcome  string `json:"outcome"`
		Calls    []struct {
			Call    string `json:"call"`
			Target  string `json:"target_app_id"`
			Outcome string `json:"outcome"`
		} `json:"graph_calls"`
	} `json:"transitions"`
}

func getThread(t *testing.T, base, psid string) (debugThread, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/debug/threads/"+psid+"?limit=500", nil)
	req.Header.Set("Authorization", "Bearer "+demoAPIToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return debugThread{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var v debugThread
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("GET /debug/threads/%s: %d %s", psid, resp.StatusCode, body)
	}
	return v, json.Unmarshal(body, &v)
}

// checkAfterKill runs threadctl check on the directory a killed process
// left: it must pass. A torn tail of the log (a write the kill cut short,
// never acknowledged) is noted, not a problem.
func checkAfterKill(t *testing.T, dir string) {
	t.Helper()
	out, err := exec.Command(binary, "check", "--data-dir", dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": ok") {
		t.Errorf("threadctl check after SIGKILL: %v\n%s", err, out)
	}
}

// waitFor polls until ok holds, or fails the test with what msg says.
func waitFor(t *testing.T, d time.Duration, ok func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", msg())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAcceptedEventSurvivesKill: the bot asks for control of a thread
// RingCX holds (no intervention), so threadctl must pass it; Meta is slow
// to answer the pass, so the webhook is accepted and answered 200 before
// the pass is made. threadctl is killed with SIGKILL right after the 200:
// started again (Meta answering now), it applies the event — the thread
// goes to the bot, at Meta and in threadctl — without Meta delivering the
// webhook again.
func TestAcceptedEventSurvivesKill(t *testing.T) {
	s := sim.New(sim.Options{RetryDelays: []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, time.Second}})
	defer s.Close()
	simSrv := httptest.NewServer(s.Handler())
	defer simSrv.Close()
	fwd := &forwarder{}
	hook := httptest.NewServer(fwd)
	defer hook.Close()
	fields := []string{"messages", "messaging_handovers", "standby"}
	err := s.PutPage(sim.PageConfig{PageID: demoPageID, Mode: "hop_v2", PrimaryAppID: demoRingCXAppID, Apps: []sim.AppConfig{
		{AppID: demoRingCXAppID, Name: "RingCX", AccessToken: demoRingCXToken, AppSecret: demoRingCXSec, CallbackURL: hook.URL, VerifyToken: demoVerifyToken, Fields: fields},
		{AppID: demoBotAppID, Name: "Bot", AccessToken: demoBotToken, AppSecret: demoBotSecret, Fields: fields, Bot: &sim.BotConfig{HonorRequests: true}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "threadctl.yaml")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`api_tokens: [%s]
graph: {base_url: %q, version: v19.0, timeout: 10s}
webhook: {verify_token: %s}
pages:
  - page_id: "%s"
    primary: ringcx
    ringcx_app_id: "%s"
    ringcx_app_secret: %s
    page_token: %s
    bot_app_ids: ["%s"]
`, demoAPIToken, simSrv.URL, demoVerifyToken, demoPageID, demoRingCXAppID, demoRingCXSec, demoRingCXToken, demoBotAppID)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	settle := func() {
		t.Helper()
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Settle(c); err != nil {
			t.Fatal(err)
		}
	}

	p := startServe(t, dir, cfg)
	fwd.set(p.addr)
	const psid = "7991000000000001"
	if _, err := s.CustomerMessage(demoPageID, psid, "hi"); err != nil {
		t.Fatal(err)
	}
	settle()
	waitFor(t, 5*time.Second, func() bool {
		th, err := getThread(t, p.addr, psid)
		return err == nil && th.State == "agent" && s.Thread(demoPageID, psid).OwnerAppID == demoRingCXAppID
	}, func() string {
		th, err := getThread(t, p.addr, psid)
		return fmt.Sprintf("want agent, RingCX owner at Meta: %+v %v", th, err)
	})

	// Meta will take 5 s to answer RingCX's pass.
	s.SetFault(sim.Fault{Call: "pass_thread_control", DelayMS: 5000, AppID: demoRingCXAppID})
	now := time.Now().UnixMilli()
	body := []byte(fmt.Sprintf(`{"object":"page","entry":[{"id":"%s","time":%d,"messaging":[{"sender":{"id":"%s"},"recipient":{"id":"%s"},"timestamp":%d,"request_thread_control":{"requested_owner_app_id":%s,"metadata":"the bot asks"}}]}]}`,
		demoPageID, now, psid, demoPageID, now, demoBotAppID))
	sig, _ := messenger.Sign(body, demoRingCXSec)
	req, _ := http.NewRequest(http.MethodPost, p.addr+"/webhooks/messenger", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("webhook answered %d", resp.StatusCode)
	}
	fwd.set("")
	p.kill(t) // right after the 200

	// The event was not applied before the kill: the pass, if it was on
	// its way, is abandoned with its connection.
	settle()
	if owner := s.Thread(demoPageID, psid).OwnerAppID; owner != demoRingCXAppID {
		t.Fatalf("Meta's owner right after the kill = %q, want RingCX still (the pass waited 5 s)", owner)
	}
	for _, e := range s.Log(demoPageID, psid) {
		if e.Call == "pass_thread_control" && e.Outcome == sim.OutcomeOK {
			t.Fatalf("a pass succeeded before the kill: %+v", e)
		}
	}
	checkAfterKill(t, dir)

	s.ClearFaults()
	p = startServe(t, dir, cfg)
	fwd.set(p.addr)
	waitFor(t, 10*time.Second, func() bool {
		th, err := getThread(t, p.addr, psid)
		return err == nil && th.State == "bot" && s.Thread(demoPageID, psid).OwnerAppID == demoBotAppID
	}, func() string {
		th, err := getThread(t, p.addr, psid)
		return fmt.Sprintf("after the restart: threadctl %q (want bot), Meta owner %q (want the bot): %+v %v\n%s", th.State, s.Thread(demoPageID, psid).OwnerAppID, th, err, drain(p.logs))
	})
	settle()
	for _, l := range strings.Split(drain(p.logs), "\n") {
		if strings.Contains(l, "accepted before the restart") {
			t.Logf("the restarted threadctl: %s", l)
		}
	}
	th, err := getThread(t, p.addr, psid)
	if err != nil {
		t.Fatal(err)
	}
	applied := 0
	for _, tr := range th.Transitions {
		if tr.Event != "control_requested" {
			continue
		}
		if tr.Outcome != "applied" || tr.Cause != "webhook" || tr.To != "bot" || len(tr.Calls) != 1 || tr.Calls[0].Call != "pass_thread_control" || tr.Calls[0].Target != demoBotAppID || tr.Calls[0].Outcome != "ok" {
			t.Errorf("control_requested transition = %+v, want applied by the webhook, passing to the bot", tr)
		}
		applied++
	}
	if applied != 1 {
		t.Errorf("control_requested transitions = %d, want 1: %+v", applied, th.Transitions)
	}
	p.stop(t)
	if out, err := exec.Command(binary, "check", "--data-dir", dir).CombinedOutput(); err != nil || !strings.Contains(string(out), ": ok") {
		t.Errorf("threadctl check: %v\n%s", err, out)
	}
}

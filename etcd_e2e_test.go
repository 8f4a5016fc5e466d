package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/store/etcd/etcdtest"
)

// TestEtcdInstanceSIGKILL runs two built `threadctl serve --store etcd`
// processes on a 3-member etcd cluster (in this process), hands threads
// over through both, SIGKILLs one mid-traffic, and keeps going on the
// other: every handover either instance answered 200 is in the survivor's
// history, and once the dead instance's lease has expired every thread
// agrees with Meta (the simulator) and waits for nothing.
func TestEtcdInstanceSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	cluster, err := etcdtest.Start(etcdtest.Options{Members: 3})
	if err != nil {
		t.Fatalf("starting the etcd cluster: %v", err)
	}
	// Cleanups run last registered first: the instances stop before the
	// cluster, the simulator and its hook are closed.
	t.Cleanup(cluster.Close)

	s := sim.New(sim.Options{RetryDelays: []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}})
	t.Cleanup(s.Close)
	simSrv := httptest.NewServer(s.Handler())
	t.Cleanup(simSrv.Close)
	fwd := &forwarder{}
	hook := httptest.NewServer(fwd)
	t.Cleanup(hook.Close)
	fields := []string{"messages", "messaging_handovers", "standby"}
	err = s.PutPage(sim.PageConfig{PageID: demoPageID, Mode: "hop_v2", PrimaryAppID: demoBotAppID, Apps: []sim.AppConfig{
		{AppID: demoRingCXAppID, Name: "RingCX", AccessToken: demoRingCXToken, AppSecret: demoRingCXSec, CallbackURL: hook.URL, VerifyToken: demoVerifyToken, Fields: fields},
		{AppID: demoBotAppID, Name: "Bot", AccessToken: demoBotToken, AppSecret: demoBotSecret, Fields: fields, Bot: &sim.BotConfig{HonorRequests: true, PassDelayMS: 20}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	endpoints := ""
	for i, e := range cluster.Endpoints() {
		if i > 0 {
			endpoints += ", "
		}
		endpoints += fmt.Sprintf("%q", e)
	}
	cfg := filepath.Join(t.TempDir(), "threadctl.yaml")
	err = os.WriteFile(cfg, []byte(fmt.Sprintf(`api_tokens: [%s]
graph: {base_url: %q, version: v19.0, timeout: 5s}
webhook: {verify_token: %s}
store: {backend: etcd, etcd_endpoints: [%s], etcd_prefix: /sigkill/}
retention: {history_keep: -1}
pages:
  - page_id: "%s"
    primary: bot
    ringcx_app_id: "%s"
    ringcx_app_secret: %s
    page_token: %s
    bot_app_ids: ["%s"]
    pending_timeout: 2s
`, demoAPIToken, simSrv.URL, demoVerifyToken, endpoints, demoPageID, demoRingCXAppID, demoRingCXSec, demoRingCXToken, demoBotAppID)), 0o600)
	if err != nil {
		t.Fatal(err)
	}

	a := startServe(t, t.TempDir(), cfg)
	b := startServe(t, t.TempDir(), cfg)
	fwd.set(b.addr) // Meta's webhooks reach the survivor
	psids := make([]string, 6)
	for i := range psids {
		psids[i] = fmt.Sprintf("79920000000000%02d", i)
		if _, err := s.CustomerMessage(demoPageID, psids[i], "hi"); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range psids {
		waitFor(t, 10*time.Second, func() bool {
			th, err := getThread(t, b.addr, p)
			return err == nil && th.State == "bot"
		}, func() string { return p + " did not become bot" })
	}

	// Handovers both ways through both instances; A is killed midway.
	type ack struct{ psid, event string }
	var (
		mu    sync.Mutex
		acks  []ack
		stop  = make(chan struct{})
		wg    sync.WaitGroup
		alive = map[string]bool{a.addr: true, b.addr: true}
	)
	handover := func(base, psid string, toAgent bool) {
		q := "from=bot&to=agent"
		event := "handover_to_agent"
		if !toAgent {
			q, event = "from=agent&to=bot&app_id="+demoBotAppID, "handover_to_bot"
		}
		url := fmt.Sprintf("%s/1.0/bots/handover?access_token=%s&identity_foreign_id=%s&type=messenger&%s", base, demoAPIToken, psid, q)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return // the instance died under the call: not acknowledged
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			mu.Lock()
			acks = append(acks, ack{psid, event})
			mu.Unlock()
		}
	}
	for w, p := range psids {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				base := []string{a.addr, b.addr}[(i+w)%2]
				mu.Lock()
				if !alive[base] {
					base = b.addr
				}
				mu.Unlock()
				handover(base, p, i%2 == 0)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	time.Sleep(1500 * time.Millisecond)
	mu.Lock()
	alive[a.addr] = false
	mu.Unlock()
	a.kill(t)
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(acks) < 20 {
		t.Fatalf("only %d handovers acknowledged: the load did not run", len(acks))
	}

	// After the lease TTL (5 s) the survivor has taken over whatever the
	// dead instance left: every thread agrees with Meta.
	agrees := func(p string) (bool, string) {
		th, err := getThread(t, b.addr, p)
		if err != nil {
			return false, err.Error()
		}
		owner := s.Thread(demoPageID, p).OwnerAppID
		ok := (th.State == "agent" && owner == demoRingCXAppID) || (th.State == "bot" && owner == demoBotAppID)
		return ok, fmt.Sprintf("%s: threadctl %s, Meta's owner %q", p, th.State, owner)
	}
	for _, p := range psids {
		waitFor(t, 20*time.Second, func() bool { ok, _ := agrees(p); return ok }, func() string { _, why := agrees(p); return why + "\n" + drain(b.logs) })
	}

	// Every acknowledged handover is in the history.
	want := map[ack]int{}
	for _, k := range acks {
		want[k]++
	}
	for _, p := range psids {
		th, err := getThread(t, b.addr, p)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]int{}
		for _, tr := range th.Transitions {
			if tr.Cause == "bots_api" && (tr.Outcome == "applied" || tr.Outcome == "no_change") {
				have[tr.Event]++
			}
		}
		if th.Revision > 500 {
			t.Fatalf("%s has %d revisions, more than one read shows", p, th.Revision)
		}
		for _, ev := range []string{"handover_to_agent", "handover_to_bot"} {
			if got, w := have[ev], want[ack{p, ev}]; got < w {
				t.Errorf("%s: %d %s acknowledged, %d in the history", p, w, ev, got)
			}
		}
	}
	t.Logf("%d handovers acknowledged through two instances, one SIGKILLed; all in the history; %d threads agree with Meta", len(acks), len(psids))
}

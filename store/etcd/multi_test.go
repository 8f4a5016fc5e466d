package etcd_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threadctl/threadctl/diagrams"
	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// TestSeedWorkflowsAcrossInstances plays the seed's four workflows (on a
// Handover Protocol page, as the seed draws them) against two instances,
// every API call and webhook going to the other instance than the last.
func TestSeedWorkflowsAcrossInstances(t *testing.T) {
	played := 0
	for i, w := range diagrams.Workflows {
		if w.Routing == states.ConversationRouting {
			continue
		}
		played++
		t.Run(w.Name, func(t *testing.T) {
			f := newFleet(t, 2, fleetOpts{primary: w.Primary, honorRequests: true})
			ep := diagrams.Endpoints{Threadctl: f.api, Sim: f.simURL, Token: apiToken, PageID: pageID, RingCXAppID: ringcxID, BotAppID: botID}
			trace, err := diagrams.Play(ctx, w, ep, fmt.Sprintf("78%014d", i))
			if err != nil {
				if trace != nil {
					t.Log(trace.Text())
				}
				t.Fatal(err)
			}
			f.settle()
			for _, in := range f.instances() {
				if in.obs.total() == 0 {
					t.Errorf("instance %s applied none of the workflow's events: the calls did not alternate", in.name)
				}
			}
		})
	}
	if played != 4 {
		t.Errorf("played %d seed workflows, want 4", played)
	}
}

// TestPendingDeadlineFiresOnce leaves requests for control unanswered on
// threads handed over through either instance: each deadline fires once,
// on the leader, whichever instance armed it.
func TestPendingDeadlineFiresOnce(t *testing.T) {
	f := newFleet(t, 2, fleetOpts{primary: states.PrimaryBot, pendingTimeout: 400 * time.Millisecond})
	var keys []engine.ThreadKey
	for i := range 6 {
		psid := fmt.Sprintf("7700000000000%03d", i)
		if _, err := f.sim.CustomerMessage(pageID, psid, "hi"); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, engine.ThreadKey{PageID: pageID, PSID: psid})
	}
	f.settle()
	for i, k := range keys {
		in := f.instances()[i%2]
		res, err := in.eng.Apply(ctx, engine.Input{Event: states.HandoverToAgent, Key: k, Cause: engine.CauseBotsAPI})
		if err != nil || res.To != states.Pending {
			t.Fatalf("handover on %s: %+v, %v", in.name, res, err)
		}
	}
	for _, k := range keys {
		eventually(t, 10*time.Second, func() bool {
			th, err := f.instances()[0].eng.Thread(ctx, k)
			return err == nil && th.State == states.Bot
		}, func() string { return "the request of " + k.String() + " did not expire" })
	}
	time.Sleep(500 * time.Millisecond) // a second firing would show by now
	fired := 0
	for _, in := range f.instances() {
		fired += in.obs.count(states.RequestExpired)
	}
	if fired != len(keys) {
		t.Errorf("request_expired recorded %d times for %d deadlines", fired, len(keys))
	}
	for _, k := range keys {
		n := 0
		for _, h := range f.history(k) {
			if h.Event == states.RequestExpired {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d request_expired entries, want 1", k, n)
		}
	}
}

// ack is a transition an instance acknowledged.
type ack struct {
	key   engine.ThreadKey
	rev   uint64
	event states.Event
}

// TestInstanceDeathUnderConcurrentHandovers kills one of two instances
// (its client closes without revoking its lease) while handovers run on
// both. No acknowledged transition is lost — each is in the history
// unless retention trimmed it, and a thread keeps exactly its newest
// entries — and within the lease TTL the survivor leads: it fires the
// deadlines the dead one armed, resolves the intent it left in flight and
// applies the webhook event it had accepted.
func TestInstanceDeathUnderConcurrentHandovers(t *testing.T) {
	// A thread takes dozens to a couple of hundred transitions here: keep
	// few, so that trimming on write runs under the concurrent commits.
	const keep = 20
	f := newFleet(t, 2, fleetOpts{primary: states.PrimaryBot, honorRequests: true, pendingTimeout: 300 * time.Millisecond, historyKeep: keep})
	var keys []engine.ThreadKey
	for i := range 8 {
		psid := fmt.Sprintf("7600000000000%03d", i)
		if _, err := f.sim.CustomerMessage(pageID, psid, "hi"); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, engine.ThreadKey{PageID: pageID, PSID: psid})
	}
	f.settle()
	a, b := f.instances()[0], f.instances()[1]
	// Make a the leader, so that its death moves the timers.
	eventually(t, 10*time.Second, func() bool { return leads(a) || leads(b) }, func() string { return "no leader" })
	if leads(b) {
		a, b = b, a
	}

	var (
		mu    sync.Mutex
		acks  []ack
		stop  atomic.Bool
		wg    sync.WaitGroup
		fails atomic.Int64
	)
	for w := range 6 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				in := []*instance{a, b}[(w+i)%2]
				if in.dead.Load() {
					in = b
				}
				k := keys[rand.IntN(len(keys))]
				ev, app := states.HandoverToAgent, ""
				if rand.IntN(2) == 0 {
					ev, app = states.HandoverToBot, botID
				}
				res, err := in.eng.Apply(ctx, engine.Input{Event: ev, Key: k, Cause: engine.CauseBotsAPI, AppID: app})
				if err != nil {
					if !in.dead.Load() && engine.ErrorCode(err) != engine.CodeConflict {
						fails.Add(1)
						t.Logf("%s on %s (live): %v", ev, in.name, err)
					}
					continue
				}
				if res.Outcome == engine.OutcomeApplied || res.Outcome == engine.OutcomeNoChange {
					mu.Lock()
					acks = append(acks, ack{k, res.Thread.Revision, ev})
					mu.Unlock()
				}
			}
		})
	}
	time.Sleep(1500 * time.Millisecond)

	// What the dying instance leaves: an intent of a Graph call it was
	// making, and a webhook event it accepted and had not applied.
	orphanKey := engine.ThreadKey{PageID: pageID, PSID: "7600000000000998"}
	if _, err := f.sim.CustomerMessage(pageID, orphanKey.PSID, "hi"); err != nil {
		t.Fatal(err)
	}
	f.settle()
	th, err := a.store.Thread(ctx, orphanKey)
	if err != nil {
		t.Fatal(err)
	}
	intentErr := a.store.PutIntent(ctx, engine.Intent{Key: orphanKey, Revision: th.Revision, Event: states.HandoverToAgent, Call: states.CallTake, Cause: engine.CauseBotsAPI, At: time.Now()})
	newcomer := engine.ThreadKey{PageID: pageID, PSID: "7600000000000999"}
	if _, err := a.store.Accept(ctx, []engine.Notice{{PageID: pageID, PSID: newcomer.PSID, Channel: engine.ChannelMessaging, Kind: engine.NoticeMessage, Time: time.Now(), MID: "m-orphan"}}); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	f.kill(a)
	took := make(chan time.Duration, 1)
	go func() {
		for !leads(b) && time.Since(killed) < 20*time.Second {
			time.Sleep(5 * time.Millisecond)
		}
		took <- time.Since(killed)
	}()
	time.Sleep(1500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	f.settle()

	took2 := <-took
	t.Logf("the survivor leads %v after the kill (lease TTL 2 s)", took2.Round(time.Millisecond))
	if !leads(b) || took2 > 2*time.Second+time.Second {
		t.Errorf("the survivor leads %v after the kill, want within the lease TTL (2 s, plus a second's slack)", took2)
	}
	eventually(t, 10*time.Second, func() bool {
		_, err := b.store.Thread(ctx, newcomer)
		return err == nil
	}, func() string { return "the webhook event the dead instance accepted was not applied" })
	if intentErr == nil {
		eventually(t, 10*time.Second, func() bool {
			all, _ := b.store.Intents(ctx)
			for _, in := range all {
				if in.Key == orphanKey && in.Revision == th.Revision {
					return false
				}
			}
			hs := f.history(orphanKey)
			for _, h := range hs {
				if h.Cause == engine.CauseRecovery {
					return true
				}
			}
			return false
		}, func() string { return "the dead instance's intent was not resolved" })
	}
	// Deadlines still pending fire on the survivor.
	for _, k := range keys {
		eventually(t, 10*time.Second, func() bool {
			th, err := b.eng.Thread(ctx, k)
			return err == nil && th.State != states.Pending
		}, func() string { return k.String() + " is still waiting for control" })
	}

	mu.Lock()
	defer mu.Unlock()
	// (A recheck may still commit meanwhile: a thread's revision is read
	// before and after its history.)
	head := func(k engine.ThreadKey) uint64 {
		th, err := b.store.Thread(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return th.Revision
	}
	trimmed := 0
	for _, ac := range acks {
		before := head(ac.key)
		hs, err := b.store.History(ctx, ac.key, ac.rev+1, 1)
		after := head(ac.key)
		found := err == nil && len(hs) > 0 && hs[0].Revision == ac.rev
		if ac.rev+keep <= before && found {
			t.Errorf("%s rev %d is still in the history at revision %d, keeping %d", ac.key, ac.rev, before, keep)
		}
		if ac.rev+keep <= after && !found {
			trimmed++ // writing revision r deletes revision r-keep
			continue
		}
		if err != nil || len(hs) == 0 || hs[0].Revision != ac.rev {
			t.Fatalf("acknowledged %s rev %d of %s is not in the history (%v, %v)", ac.event, ac.rev, ac.key, hs, err)
		}
		if hs[0].Event != ac.event {
			t.Errorf("%s rev %d is %s, acknowledged %s", ac.key, ac.rev, hs[0].Event, ac.event)
		}
	}
	for _, k := range keys {
		var hs []engine.HistoryEntry
		for {
			rev := head(k)
			hs = f.history(k)
			if head(k) != rev {
				continue
			}
			if want := min(rev, keep); uint64(len(hs)) != want || len(hs) > 0 && hs[len(hs)-1].Revision != rev {
				t.Errorf("%s at revision %d keeps %d history entries, want its newest %d", k, rev, len(hs), want)
			}
			break
		}
		checkRun(t, k, hs)
	}
	t.Logf("%d acknowledged transitions checked (%d of them trimmed by retention); %d failed calls on the live instance", len(acks), trimmed, fails.Load())
	if len(acks) < 20 {
		t.Errorf("only %d transitions acknowledged", len(acks))
	}
	if fails.Load() > 0 {
		t.Errorf("%d calls failed on the live instance", fails.Load())
	}
}

func leads(in *instance) bool { return in.eng.Leading() }

// checkRun checks that a thread's history is gapless and chained, from
// revision 1 or, once retention trimmed it, from its oldest entry.
func checkRun(t *testing.T, k engine.ThreadKey, hs []engine.HistoryEntry) {
	t.Helper()
	if len(hs) == 0 {
		return
	}
	prev, first := states.Idle, hs[0].Revision
	if first > 1 {
		prev = hs[0].From
	}
	for i, h := range hs {
		if h.Revision != first+uint64(i) {
			t.Errorf("%s: entry %d has revision %d", k, i, h.Revision)
			return
		}
		if h.From != prev {
			t.Errorf("%s rev %d: %s starts in %s, previous entry ended in %s", k, h.Revision, h.Event, h.From, prev)
		}
		prev = h.To
	}
}

// TestMemberStopIsInvisible stops one etcd member of three under a steady
// stream of Bots API handovers through two instances: no request fails
// beyond the leader election of the cluster (a few seconds at most), and
// none at all after it.
func TestMemberStopIsInvisible(t *testing.T) {
	f := newFleet(t, 2, fleetOpts{primary: states.PrimaryBot, honorRequests: true})
	var psids []string
	for i := range 4 {
		psid := fmt.Sprintf("7500000000000%03d", i)
		if _, err := f.sim.CustomerMessage(pageID, psid, "hi"); err != nil {
			t.Fatal(err)
		}
		psids = append(psids, psid)
	}
	f.settle()
	client := &http.Client{Timeout: 15 * time.Second}
	handover := func(psid string, i int) (int, string, error) {
		q := url.Values{"access_token": {apiToken}, "identity_foreign_id": {psid}, "type": {"messenger"}, "from": {"bot"}, "to": {"agent"}}
		if i%2 == 1 {
			q.Set("from", "agent")
			q.Set("to", "bot")
			q.Set("app_id", botID)
		}
		resp, err := client.Post(f.api+"/1.0/bots/handover?"+q.Encode(), "", nil)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	var (
		stopped  atomic.Int64 // unix nanos of the member's stop
		failures []string
		mu       sync.Mutex
		wg       sync.WaitGroup
		done     atomic.Bool
		ok       atomic.Int64
	)
	for w, psid := range psids {
		wg.Go(func() {
			for i := 0; !done.Load(); i++ {
				start := time.Now()
				code, body, err := handover(psid, i+w)
				if err == nil && code == http.StatusOK {
					ok.Add(1)
					continue
				}
				mu.Lock()
				failures = append(failures, fmt.Sprintf("%s at +%v: %d %s %v", psid, start.Sub(time.Unix(0, stopped.Load())).Round(time.Millisecond), code, body, err))
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	// The member that leads the cluster: its loss costs an election.
	victim := max(cluster.Leader(), 0)
	wasLeader := cluster.Leader() == victim
	stopped.Store(time.Now().UnixNano())
	cluster.StopMember(victim)
	t.Logf("stopped member %d (it led the cluster: %v)", victim, wasLeader)
	t.Cleanup(func() {
		if err := cluster.RestartMember(victim); err != nil {
			t.Errorf("restarting the member: %v", err)
		}
	})
	time.Sleep(4 * time.Second)
	done.Store(true)
	wg.Wait()
	t.Logf("%d handovers answered 200; %d failed: %v", ok.Load(), len(failures), failures)
	if ok.Load() < 20 {
		t.Errorf("only %d handovers succeeded", ok.Load())
	}
	// Requests may fail only while the cluster elects a new leader (the
	// stopped member may have led it): within its election timeout.
	for _, fl := range failures {
		t.Errorf("a request failed: %s", fl)
	}
}

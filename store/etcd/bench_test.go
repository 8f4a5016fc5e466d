package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
	"github.com/threadctl/threadctl/store/storetest"
)

// BenchmarkScaling measures real transitions through threadctl — signed
// pass_thread_control and take_thread_control webhooks flipping threads
// between agent and bot, POSTed over loopback, verified, applied and
// committed before the 200 — on one instance on bbolt, and on two instances
// sharing the 3-member cluster (webhooks alternating between them); next to
// the floor of SPEC.md §8 on the same cluster (a get, then a transaction
// comparing the thread key's ModRevision and putting the thread and a
// 400-byte history entry); at 1, 64 and 256 callers, in one run. Read the
// ratios: the cluster's three members share the two cores and the disk with
// the load and the instances.
func BenchmarkScaling(b *testing.B) {
	for _, c := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("bbolt-one-instance/callers=%d", c), func(b *testing.B) { benchWebhooks(b, c, 0) })
		b.Run(fmt.Sprintf("etcd-two-instances/callers=%d", c), func(b *testing.B) { benchWebhooks(b, c, 2) })
		b.Run(fmt.Sprintf("etcd-floor/callers=%d", c), func(b *testing.B) { benchFloor(b, c) })
	}
}

// noGraph is Meta's Graph API refusing every call: the benchmark's rows
// make none.
type noGraph struct{}

var errNoGraph = errors.New("the benchmark makes no Graph call")

func (noGraph) PassThreadControl(context.Context, string, string, string, string) error {
	return errNoGraph
}
func (noGraph) TakeThreadControl(context.Context, string, string, string) error    { return errNoGraph }
func (noGraph) RequestThreadControl(context.Context, string, string, string) error { return errNoGraph }
func (noGraph) ReleaseThreadControl(context.Context, string, string) error         { return errNoGraph }
func (noGraph) ExtendThreadControl(context.Context, string, string, time.Duration) error {
	return errNoGraph
}
func (noGraph) FeatureStatus(context.Context, string) (bool, bool, error) {
	return false, false, errNoGraph
}
func (noGraph) ThreadOwner(context.Context, string, string) (string, time.Time, error) {
	return "", time.Time{}, errNoGraph
}
func (noGraph) SendText(context.Context, string, string, string) (string, error) {
	return "", errNoGraph
}

// benchWebhooks serves webhooks from instances engines on the cluster (0:
// one on bbolt) and posts them from callers goroutines.
func benchWebhooks(b *testing.B, callers, instances int) {
	ctx := context.Background()
	var urls []string
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
	prefix := newPrefix()
	start := func(st engine.Store, coord engine.Coordinator) {
		eng, err := engine.New(engine.Config{Store: st, Coordinator: coord, Graph: noGraph{}, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		if err := eng.SetPage(ctx, engine.Page{ID: pageID, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID}}); err != nil {
			b.Fatal(err)
		}
		if err := eng.Start(ctx); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(eng.Close)
		srv, err := server.New(server.Config{Engine: eng, APITokens: []string{apiToken}, WebhookSecrets: []string{"ringcx-secret"}, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(ln)
		b.Cleanup(func() { srv.Shutdown(ctx) })
		urls = append(urls, "http://"+ln.Addr().String()+"/webhooks/messenger")
	}
	if instances == 0 {
		db, err := store.Open(b.TempDir(), store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		start(db, nil)
	}
	for range instances {
		st := open(b, prefix, nil)
		start(st, st)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers, MaxConnsPerHost: callers}, Timeout: 30 * time.Second}
	var stamp atomic.Int64
	stamp.Store(time.Now().UnixMilli())
	// Each caller flips its own threads (5 000 over all callers), in turn:
	// pass to RingCX (→ agent), then take by the bot (→ bot).
	const threads = 5000
	per := max(threads/callers, 1)
	flips := make([][]bool, callers)
	for w := range flips {
		flips[w] = make([]bool, per)
	}
	storetest.RunConcurrent(b, callers, "transitions/s", func(w, i int) error {
		j := i % per
		psid := 7000000000000000 + w*per + j
		ts := stamp.Add(1)
		ev := fmt.Sprintf(`"pass_thread_control":{"previous_owner_app_id":%s,"new_owner_app_id":%s}`, botID, ringcxID)
		if flips[w][j] {
			ev = fmt.Sprintf(`"take_thread_control":{"previous_owner_app_id":%s,"new_owner_app_id":%s}`, ringcxID, botID)
		}
		flips[w][j] = !flips[w][j]
		body := fmt.Appendf(nil, `{"object":"page","entry":[{"id":"%s","time":%d,"messaging":[{"sender":{"id":"%d"},"recipient":{"id":"%s"},"timestamp":%d,%s}]}]}`,
			pageID, ts, psid, pageID, ts, ev)
		sig, _ := messenger.Sign(body, "ringcx-secret")
		return storetest.PostWebhook(client, urls[i%len(urls)], body, sig)
	})
}

// benchFloor is SPEC.md §8's floor: per transition a get of the thread,
// then a transaction comparing its ModRevision and putting the thread and a
// history entry of 400 bytes each.
func benchFloor(b *testing.B, callers int) {
	st := open(b, "", nil)
	cli, prefix := st.Client(), st.Prefix()
	value := strings.Repeat("x", 400)
	ctx := context.Background()
	var revs sync.Map
	storetest.RunConcurrent(b, callers, "transitions/s", func(w, i int) error {
		k := fmt.Sprintf("%sthreads/%s/%d", prefix, pageID, 7000000000000000+w*100+i%100)
		resp, err := cli.Get(ctx, k)
		if err != nil {
			return err
		}
		var mod int64
		if len(resp.Kvs) > 0 {
			mod = resp.Kvs[0].ModRevision
		}
		n, _ := revs.LoadOrStore(k, new(atomic.Int64))
		rev := n.(*atomic.Int64).Add(1)
		t, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", mod)).Then(
			clientv3.OpPut(k, value), clientv3.OpPut(fmt.Sprintf("%s/h/%016x", k, rev), value),
		).Commit()
		if err != nil {
			return err
		}
		if !t.Succeeded {
			return fmt.Errorf("%s changed under its only writer", k)
		}
		return nil
	})
}

// TestFootprint measures what a thread costs in etcd: keys and bytes of
// values (without etcd's own per-key overhead) for threads with 10 and with
// 100 history entries (the default retention), each with its identity,
// by-state and timer index entries.
func TestFootprint(t *testing.T) {
	for _, entries := range []int{10, 100} {
		st := open(t, "", nil)
		const threads = 20
		for n := range threads {
			k := engine.ThreadKey{PageID: pageID, PSID: fmt.Sprintf("%d", 7400000000000000+n)}
			var th *engine.Thread
			for i := range entries {
				next := engine.Thread{PageID: k.PageID, PSID: k.PSID, Primary: states.PrimaryBot, CreatedAt: time.Now()}
				expect, from := uint64(0), states.Idle
				if th != nil {
					next, expect, from = *th, th.Revision, th.State
				}
				next.Revision = expect + 1
				now := time.Now()
				next.State, next.Owner = []states.State{states.Agent, states.Bot}[i%2], []string{ringcxID, botID}[i%2]
				next.LastActivity, next.UpdatedAt, next.ControlExpires = now, now, now.Add(24*time.Hour)
				next.Seen = append(next.Seen, uint64(now.UnixNano()))
				if len(next.Seen) > 16 {
					next.Seen = next.Seen[1:]
				}
				h := engine.HistoryEntry{Revision: next.Revision, At: now, Event: states.ControlPassed, Cause: engine.CauseWebhook, From: from, To: next.State,
					Owner: next.Owner, Primary: states.PrimaryBot, Table: "bot", Outcome: engine.OutcomeApplied, MetaTime: now}
				if err := st.Commit(ctx, &engine.Commit{Thread: &next, Expect: expect, Prev: th, History: []engine.HistoryEntry{h}, KeepHistory: 100}); err != nil {
					t.Fatal(err)
				}
				th = &next
			}
		}
		resp, err := st.Client().Get(ctx, st.Prefix(), clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		keys, keyBytes, valueBytes := 0, 0, 0
		var thread, history int
		for _, kv := range resp.Kvs {
			if strings.HasPrefix(string(kv.Key), st.Prefix()+"election/") {
				continue
			}
			keys++
			keyBytes += len(kv.Key)
			valueBytes += len(kv.Value)
			switch {
			case strings.HasPrefix(string(kv.Key), st.Prefix()+"threads/"):
				thread = len(kv.Value)
			case strings.HasPrefix(string(kv.Key), st.Prefix()+"history/"):
				history = len(kv.Value)
			}
		}
		t.Logf("%d history entries a thread: %.1f keys, %d key bytes, %d value bytes a thread (thread record %d B, history entry %d B)",
			entries, float64(keys)/threads, keyBytes/threads, valueBytes/threads, thread, history)
		if want := entries + 4; keys/threads > want {
			t.Errorf("%d keys a thread, want at most %d (thread, identity, state, timer, history)", keys/threads, want)
		}
	}
}

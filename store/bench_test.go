package store

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store/storetest"
)

// noGraph fails every call: the benchmark's events make none.
type noGraph struct{}

var errNoGraph = errors.New("benchmark makes no Graph calls")

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

const benchPage = "100000000000001"

// BenchmarkDurable compares durable engine events (a customer message on a
// bot-owned thread: one thread record, one history entry, one commit) with
// raw bbolt commits of the same size, one db.Update per write and db.Batch,
// at 1, 16 and 256 concurrent callers, in one run.
func BenchmarkDurable(b *testing.B) {
	threadBytes, historyBytes := recordSizes(b)
	for _, c := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("engine/callers=%d", c), func(b *testing.B) { benchEngine(b, c) })
		b.Run(fmt.Sprintf("bbolt-update/callers=%d", c), func(b *testing.B) {
			benchRaw(b, c, threadBytes, historyBytes, (*bolt.DB).Update)
		})
		b.Run(fmt.Sprintf("bbolt-batch/callers=%d", c), func(b *testing.B) {
			benchRaw(b, c, threadBytes, historyBytes, (*bolt.DB).Batch)
		})
	}
}

// newBenchEngine opens a store in a temporary directory and starts an
// engine on it with the benchmark's page; both close when the benchmark
// ends. report adds how many commits shared a bbolt transaction, and its
// duration, to the benchmark's results.
func newBenchEngine(b *testing.B) (eng *engine.Engine, report func()) {
	var txs, commits, txNanos atomic.Int64
	s, err := Open(b.TempDir(), Options{OnCommit: func(d time.Duration, n int) {
		txs.Add(1)
		commits.Add(int64(n))
		txNanos.Add(int64(d))
	}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	eng, err = engine.New(engine.Config{Store: s, Graph: noGraph{}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := eng.SetPage(ctx, engine.Page{ID: benchPage, Primary: states.PrimaryBot, RingCXAppID: "200000000000001", BotAppIDs: []string{"300000000000001"}}); err != nil {
		b.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(eng.Close)
	return eng, func() {
		n := float64(max(txs.Load(), 1))
		b.ReportMetric(float64(commits.Load())/n, "commits/tx")
		b.ReportMetric(float64(txNanos.Load())/1e6/n, "ms/tx")
	}
}

func benchEngine(b *testing.B, callers int) {
	eng, report := newBenchEngine(b)
	defer report()
	ctx := context.Background()
	storetest.RunConcurrent(b, callers, "events/s", func(w, i int) error {
		_, err := eng.Apply(ctx, engine.Input{
			Event: states.CustomerMessage, Cause: engine.CauseWebhook, Create: true, Channel: engine.ChannelStandby,
			Key:      engine.ThreadKey{PageID: benchPage, PSID: fmt.Sprintf("%d", 7000000000000000+w)},
			DedupKey: fmt.Sprintf("mid:%d", i),
		})
		return err
	})
}

// recordSizes measures what one benchmark event writes.
func recordSizes(b *testing.B) (thread, history int) {
	now := time.Now()
	t := engine.Thread{V: 1, PageID: benchPage, PSID: "7000000000000000", State: states.Bot, Owner: "300000000000001", Primary: states.PrimaryBot, Revision: 42,
		LastActivity: now, ControlExpires: now.Add(24 * time.Hour), Seen: make([]uint64, seenWindowForBench), CreatedAt: now, UpdatedAt: now}
	for i := range t.Seen {
		t.Seen[i] = uint64(i) * 0x9e3779b97f4a7c15
	}
	h := engine.HistoryEntry{V: 1, Revision: 42, At: now, Event: states.CustomerMessage, Cause: engine.CauseWebhook, From: states.Bot, To: states.Bot, Owner: "300000000000001", Primary: states.PrimaryBot, Outcome: engine.OutcomeNoChange, MetaTime: now}
	tb, _ := json.Marshal(t)
	hb, _ := json.Marshal(h)
	return len(tb), len(hb)
}

const seenWindowForBench = 16

func benchRaw(b *testing.B, callers, threadBytes, historyBytes int, commit func(*bolt.DB, func(*bolt.Tx) error) error) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.MaxBatchDelay = 2 * time.Millisecond
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket([]byte("threads")); err != nil {
			return err
		}
		_, err := tx.CreateBucket([]byte("history"))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	tv := make([]byte, threadBytes)
	hv := make([]byte, historyBytes)
	rand.Read(tv)
	rand.Read(hv)
	storetest.RunConcurrent(b, callers, "events/s", func(w, i int) error {
		return commit(db, func(tx *bolt.Tx) error {
			if err := tx.Bucket([]byte("threads")).Put(fmt.Appendf(nil, "%s\x00%d", benchPage, w), tv); err != nil {
				return err
			}
			return tx.Bucket([]byte("history")).Put(fmt.Appendf(nil, "%d\x00%016x", w, i), hv)
		})
	})
}

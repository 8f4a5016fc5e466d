package engine_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
)

// TestBackupUnderLoad takes an online backup while customers write and bots
// hand threads to agents and back, then starts a second engine on the
// backup: its store passes the check, and once it has reconciled the
// restored threads with Meta, every thread agrees with the simulator.
func TestBackupUnderLoad(t *testing.T) {
	h := newHarness(t, harnessOpts{primary: states.PrimaryBot, honorRequests: true})
	const threads = 6
	psids := make([]string, threads)
	for i := range psids {
		psids[i] = fmt.Sprintf("73000000000000%02d", i)
		h.customer(psids[i], "hello")
	}
	var (
		wg   sync.WaitGroup
		stop atomic.Bool
	)
	for _, p := range psids {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				switch i % 3 {
				case 0:
					h.sim.CustomerMessage(pageID, p, "again")
				case 1:
					h.eng.Apply(ctx, engine.Input{Event: states.HandoverToAgent, Key: key(p), Cause: engine.CauseBotsAPI})
				case 2:
					h.eng.Apply(ctx, engine.Input{Event: states.HandoverToBot, Key: key(p), Cause: engine.CauseBotsAPI, AppID: botID})
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	backup := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	n, err := h.store.Backup(ctx, f)
	f.Close()
	if err != nil || n == 0 {
		t.Fatalf("Backup: %d bytes, %v", n, err)
	}
	time.Sleep(200 * time.Millisecond) // Meta and the service move on
	stop.Store(true)
	wg.Wait()
	h.settle()

	if problems, err := store.CheckFile(backup); err != nil || len(problems) > 0 {
		t.Fatalf("the backup fails its check: %v %v", problems, err)
	}
	if err := store.MarkRestored(backup); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Rename(backup, filepath.Join(dir, store.FileName)); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	eng, err := engine.New(engine.Config{Store: db, Graph: h.client("ringcx-page-token", "ringcx-secret")})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	agrees := func(p string) (bool, string) {
		th, err := eng.Thread(ctx, key(p))
		if err != nil {
			return false, err.Error()
		}
		owner := h.sim.Thread(pageID, p).OwnerAppID
		want := map[string]states.Observed{"": states.ObservedNone, ringcxID: states.ObservedRingCX}[owner]
		if want == "" {
			want = states.ObservedOther
		}
		return states.Holder(th.State) == want, fmt.Sprintf("%s: restored %s, Meta's owner %q", p, th.State, owner)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range psids {
		for {
			ok, msg := agrees(p)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				hs, _ := eng.History(ctx, key(p), 0, 12)
				for _, e := range hs {
					t.Logf("%d %s %s %s(%s) %s→%s %s meta %s %v", e.Revision, e.At.Format("05.000000"), e.Cause, e.Event, e.Observed, e.From, e.To, e.Outcome, e.MetaTime.Format("05.000"), e.Calls)
				}
				t.Fatalf("after the restore: %s", msg)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	h.eventually(func() bool { r, _ := db.Restored(ctx); return !r }, func() string { return "the restore mark was not cleared" })
	if problems, err := db.Check(); err != nil || len(problems) > 0 {
		t.Errorf("check after the restore: %v %v", problems, err)
	}
}

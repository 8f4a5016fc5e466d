package engine_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// validRun checks that a thread's history is a run of its machine: gapless
// revisions from 1, each entry starting where the previous one ended, every
// applied or unchanged entry a row of the table of its primary, and every
// ignored or failed entry leaving the state as it was.
func validRun(name string, hs []engine.HistoryEntry, final engine.Thread) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	prev := states.Idle
	for i, e := range hs {
		if e.Revision != uint64(i+1) {
			add("%s: entry %d has revision %d", name, i, e.Revision)
			return problems
		}
		if e.From != prev {
			add("%s rev %d: %s starts in %s, previous entry ended in %s", name, e.Revision, e.Event, e.From, prev)
		}
		switch e.Outcome {
		case engine.OutcomeApplied, engine.OutcomeNoChange:
			table, err := e.TableOf()
			if err != nil {
				add("%s rev %d: %v", name, e.Revision, err)
				break
			}
			r, ok := states.Lookup(table, e.Event, e.Observed, e.From)
			if !ok {
				add("%s rev %d: %s from %s is not in the %s table", name, e.Revision, e.Event, e.From, e.Table)
			} else if r.Dst(e.From) != e.To {
				add("%s rev %d: %s from %s went to %s, table says %s", name, e.Revision, e.Event, e.From, e.To, r.Dst(e.From))
			}
		case engine.OutcomeIgnored, engine.OutcomeFailed:
			if e.To != e.From {
				add("%s rev %d: %s %s changed the state %s → %s", name, e.Revision, e.Event, e.Outcome, e.From, e.To)
			}
		default:
			add("%s rev %d: unknown outcome %q", name, e.Revision, e.Outcome)
		}
		prev = e.To
	}
	if final.Revision != uint64(len(hs)) || (len(hs) > 0 && final.State != prev) {
		add("%s: thread at revision %d in %s, history has %d entries ending in %s", name, final.Revision, final.State, len(hs), prev)
	}
	return problems
}

// TestConcurrentEventsKeepValidRuns fires events from many goroutines at a
// few threads, with the simulator's reference bot answering requests and
// webhooks arriving concurrently.
func TestConcurrentEventsKeepValidRuns(t *testing.T) {
	concurrentEventsKeepValidRuns(t, nil)
}

// TestConcurrentEventsKeepValidRunsOnEtcd is TestConcurrentEventsKeepValidRuns
// on the etcd store, on a real 3-member cluster started in-process for it.
func TestConcurrentEventsKeepValidRunsOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	concurrentEventsKeepValidRuns(t, etcdStores(t)())
}

// concurrentEventsKeepValidRuns is TestConcurrentEventsKeepValidRuns on the
// store openStore opens (nil: bbolt).
func concurrentEventsKeepValidRuns(t *testing.T, openStore openStoreFunc) {
	// Every history entry is kept, so that the whole run is checked.
	h := newHarness(t, harnessOpts{
		primary: states.PrimaryBot, honorRequests: true, pendingTimeout: 50 * time.Millisecond, historyKeep: -1,
		openStore: openStore,
	})
	psids := []string{"7200000000000001", "7200000000000002", "7200000000000003"}
	for _, p := range psids {
		if _, err := h.sim.CustomerMessage(pageID, p, "hi"); err != nil {
			t.Fatal(err)
		}
	}
	h.settle()
	const workers, perWorker = 24, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				p := psids[rand.IntN(len(psids))]
				k := key(p)
				switch rand.IntN(6) {
				case 0:
					h.sim.CustomerMessage(pageID, p, fmt.Sprintf("w%d m%d", w, i))
				case 1:
					h.eng.Apply(ctx, engine.Input{Event: states.HandoverToAgent, Key: k, Cause: engine.CauseBotsAPI})
				case 2:
					h.eng.Apply(ctx, engine.Input{Event: states.HandoverToBot, Key: k, Cause: engine.CauseBotsAPI, AppID: botID})
				case 3:
					h.eng.OpenIntervention(ctx, k)
				case 4:
					if th, err := h.eng.Thread(ctx, k); err == nil && th.Intervention != "" {
						h.eng.CloseIntervention(ctx, th.Intervention)
					}
				case 5:
					h.eng.CreateContent(ctx, k, "agent says hi")
				}
			}
		}()
	}
	wg.Wait()
	h.settle()
	time.Sleep(100 * time.Millisecond) // let pending deadlines fire
	h.settle()
	total := 0
	for _, p := range psids {
		// A late commit (a deadline, a webhook Meta sent late) may land
		// between the reads: the thread is read before and after its
		// history, and both again if it moved.
		var hs []engine.HistoryEntry
		var th engine.Thread
		for {
			th = h.thread(p)
			hs = h.history(p)
			if h.thread(p).Revision == th.Revision {
				break
			}
		}
		total += len(hs)
		for _, problem := range validRun(p, hs, th) {
			t.Error(problem)
		}
	}
	t.Logf("%d history entries over %d threads", total, len(psids))
	if total < workers*perWorker/4 {
		t.Errorf("only %d entries recorded", total)
	}
}

func TestValidRunFindsBadHistories(t *testing.T) {
	ok := []engine.HistoryEntry{
		{Revision: 1, Event: states.CustomerMessage, Primary: states.PrimaryBot, From: states.Idle, To: states.Bot, Outcome: engine.OutcomeApplied},
		{Revision: 2, Event: states.HandoverToAgent, Primary: states.PrimaryBot, From: states.Bot, To: states.Pending, Outcome: engine.OutcomeApplied},
	}
	final := engine.Thread{Revision: 2, State: states.Pending}
	if p := validRun("ok", ok, final); len(p) > 0 {
		t.Fatalf("valid run refused: %v", p)
	}
	bad := map[string]func([]engine.HistoryEntry) ([]engine.HistoryEntry, engine.Thread){
		"gap": func(h []engine.HistoryEntry) ([]engine.HistoryEntry, engine.Thread) {
			h[1].Revision = 3
			return h, final
		},
		"not in table": func(h []engine.HistoryEntry) ([]engine.HistoryEntry, engine.Thread) {
			h[1].To = states.Agent
			return h, final
		},
		"broken chain": func(h []engine.HistoryEntry) ([]engine.HistoryEntry, engine.Thread) {
			h[1].From = states.Agent
			return h, final
		},
		"ignored moved": func(h []engine.HistoryEntry) ([]engine.HistoryEntry, engine.Thread) {
			h[1].Outcome = engine.OutcomeIgnored
			return h, final
		},
		"thread elsewhere": func(h []engine.HistoryEntry) ([]engine.HistoryEntry, engine.Thread) {
			return h, engine.Thread{Revision: 2, State: states.Agent}
		},
	}
	for name, breakIt := range bad {
		t.Run(name, func(t *testing.T) {
			h, f := breakIt(append([]engine.HistoryEntry(nil), ok...))
			if p := validRun(name, h, f); len(p) == 0 {
				t.Errorf("validRun found nothing wrong")
			}
		})
	}
}

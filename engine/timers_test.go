package engine

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine/fakeclock"
)

// TestSchedulerWindow checks that the scheduler keeps only the timers due
// within its window in memory, reads the next ones from the index as time
// passes, fires each at its due time, and lets a commit's newer timer win
// over what the index had.
func TestSchedulerWindow(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	clock := fakeclock.New(t0)
	var mu sync.Mutex
	index := map[timerID]Timer{} // the store's index
	fired := map[ThreadKey]time.Time{}
	loads := 0
	load := func(after, before time.Time, limit int) ([]Timer, error) {
		mu.Lock()
		defer mu.Unlock()
		loads++
		var out []Timer
		for _, tm := range index {
			if tm.Due.After(after) && !tm.Due.After(before) {
				out = append(out, tm)
			}
		}
		slices.SortFunc(out, func(a, b Timer) int { return a.Due.Compare(b.Due) })
		if len(out) > limit {
			out = out[:limit]
		}
		return out, nil
	}
	s := newScheduler(clock, func(tm Timer) {
		mu.Lock()
		fired[tm.Key] = clock.Now()
		mu.Unlock()
	}, load, 10*time.Minute, 3, func(err error) { t.Error(err) })
	arm := func(psid string, due time.Duration) Timer {
		tm := Timer{Kind: TimerControl, Key: ThreadKey{PageID: "1", PSID: psid}, Due: t0.Add(due)}
		mu.Lock()
		index[timerID{tm.Key, tm.Kind}] = tm
		mu.Unlock()
		s.set(tm)
		return tm
	}
	go s.run()
	defer s.close()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for i, deadline := 0, time.Now().Add(5*time.Second); !ok(); i++ {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
			if i%20 == 19 {
				// A real clock flows; this one jumps. A scheduler that read
				// the time just before a jump and armed its wait just after
				// waits from the new time: wake it, as a commit would, so it
				// reads the time again.
				s.poke()
			}
		}
	}
	waitFor("the first window", func() bool { mu.Lock(); defer mu.Unlock(); return loads > 0 })

	for i, due := range []time.Duration{time.Minute, 2 * time.Hour, 3 * time.Hour, 3*time.Hour + time.Minute, 3*time.Hour + 2*time.Minute, 3*time.Hour + 3*time.Minute, 24 * time.Hour} {
		arm(string(rune('a'+i)), due)
	}
	if n := s.size(); n != 1 {
		t.Errorf("%d timers in memory, want only the one due within the window", n)
	}
	// A timer moved later by a commit: the index has the new due time.
	moved := arm("a", 5*time.Hour)
	if n := s.size(); n != 0 {
		t.Errorf("%d timers in memory after the only one moved past the window", n)
	}
	for _, step := range []time.Duration{2 * time.Hour, time.Hour, 2 * time.Hour, 19 * time.Hour} {
		clock.Advance(step)
		now := clock.Now()
		waitFor("timers due by "+now.Sub(t0).String(), func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, tm := range index {
				if !tm.Due.After(now) && fired[tm.Key].IsZero() {
					return false
				}
			}
			return true
		})
		if n := s.size(); n > 3 {
			t.Errorf("%d timers in memory, more than the maximum of 3", n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, tm := range index {
		at := fired[tm.Key]
		if at.IsZero() || at.Before(tm.Due) {
			t.Errorf("timer of %s due at +%s fired at %v", tm.Key.PSID, tm.Due.Sub(t0), at)
		}
	}
	if at := fired[moved.Key]; at.Before(moved.Due) {
		t.Errorf("the moved timer fired at +%s, before its new due time", at.Sub(t0))
	}
}

package engine

import (
	"container/heap"
	"sync"
	"time"
)

// scheduler holds the timers due soon in memory (one per thread and kind, in
// a heap by due time) and calls fire for each when it is due. The durable
// copy of every timer is the store's timer index, ordered by due time: the
// scheduler keeps only those due up to its horizon — a window of the next
// minutes, or of the next maxTimers — and reads the next window from the
// index as it drains. Start-up reads the first window only; a timer moved
// past the horizon costs no memory until its window comes.
type scheduler struct {
	clock  Clock
	fire   func(Timer)
	load   func(after, before time.Time, limit int) ([]Timer, error)
	window time.Duration
	max    int
	onErr  func(error)

	mu      sync.Mutex
	items   map[timerID]*timerItem
	h       timerHeap
	horizon time.Time // timers due up to it are in memory; later ones only in the index
	retryAt time.Time // after a failed refill, when to try again
	wakeAt  time.Time // when run will look at the heap again; zero: not waiting on a time
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

type timerID struct {
	key  ThreadKey
	kind TimerKind
}

type timerItem struct {
	Timer
	index int
}

type timerHeap []*timerItem

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].Due.Before(h[j].Due) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *timerHeap) Push(x any)        { it := x.(*timerItem); it.index = len(*h); *h = append(*h, it) }
func (h *timerHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.index = -1
	return it
}

func newScheduler(clock Clock, fire func(Timer), load func(after, before time.Time, limit int) ([]Timer, error), window time.Duration, max int, onErr func(error)) *scheduler {
	return &scheduler{
		clock: clock, fire: fire, load: load, window: window, max: max, onErr: onErr,
		items: map[timerID]*timerItem{},
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
}

// set arms (or moves) the thread's timer of t.Kind to t.Due. A timer due
// past the horizon is left to the index (and dropped from memory).
func (s *scheduler) set(t Timer) {
	s.mu.Lock()
	id := timerID{t.Key, t.Kind}
	if t.Due.After(s.horizon) {
		s.removeLocked(id)
		s.mu.Unlock()
		return
	}
	if it, ok := s.items[id]; ok {
		it.Due = t.Due
		heap.Fix(&s.h, it.index)
	} else {
		it := &timerItem{Timer: t}
		s.items[id] = it
		heap.Push(&s.h, it)
	}
	// Wake run only if it would otherwise look too late: most moves are
	// later (activity extends the control window) and need no wake-up.
	early := s.wakeAt.IsZero() || t.Due.Before(s.wakeAt)
	s.mu.Unlock()
	if early {
		s.poke()
	}
}

// cancel disarms the thread's timer of a kind, if armed.
func (s *scheduler) cancel(k ThreadKey, kind TimerKind) {
	s.mu.Lock()
	s.removeLocked(timerID{k, kind})
	s.mu.Unlock()
}

func (s *scheduler) removeLocked(id timerID) {
	if it, ok := s.items[id]; ok {
		heap.Remove(&s.h, it.index)
		delete(s.items, id)
	}
}

// refill moves the horizon a window ahead of now and loads the timers due in
// between from the index. Timers a commit armed meanwhile win over what the
// index had (it may be older). With more than max timers in the window, the
// horizon stops at the last one loaded.
func (s *scheduler) refill(now time.Time) {
	s.mu.Lock()
	from, to := s.horizon, now.Add(s.window)
	if !to.After(from) {
		s.mu.Unlock()
		return
	}
	s.horizon = to // commits arm timers up to it from now on
	s.mu.Unlock()
	ts, err := s.load(from, to, s.max)
	if err != nil {
		s.mu.Lock()
		s.horizon, s.retryAt = from, now.Add(time.Second)
		s.mu.Unlock()
		s.onErr(err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(ts) == s.max {
		s.horizon = ts[len(ts)-1].Due
	}
	for _, t := range ts {
		id := timerID{t.Key, t.Kind}
		if _, armed := s.items[id]; armed || t.Due.After(s.horizon) {
			continue
		}
		it := &timerItem{Timer: t}
		s.items[id] = it
		heap.Push(&s.h, it)
	}
}

// timerKinds are every kind of timer a thread can have.
var timerKinds = []TimerKind{TimerRequest, TimerControl, TimerExtend, TimerRecheck}

// sync arms exactly the timers of a thread record, at their deadlines.
func (s *scheduler) sync(t *Thread) {
	armed := map[TimerKind]bool{}
	for _, tm := range t.deadlines() {
		s.set(tm)
		armed[tm.Kind] = true
	}
	for _, k := range timerKinds {
		if !armed[k] {
			s.cancel(t.Key(), k)
		}
	}
}

// reset forgets the timers in memory and reads the index again from its
// start: for an instance that becomes the leader, which fires the timers
// other instances armed.
func (s *scheduler) reset() {
	s.mu.Lock()
	s.items = map[timerID]*timerItem{}
	s.h = nil
	s.horizon, s.retryAt = time.Time{}, time.Time{}
	s.mu.Unlock()
	s.poke()
}

func (s *scheduler) refillAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maxTime(s.horizon.Add(-s.window/2), s.retryAt)
}

// size is how many timers are in memory.
func (s *scheduler) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *scheduler) run() {
	defer close(s.done)
	for {
		// The next window is read when half of this one has passed.
		if now := s.clock.Now(); !now.Before(s.refillAt()) {
			s.refill(now)
		}
		s.mu.Lock()
		now := s.clock.Now()
		var due []Timer
		for len(s.h) > 0 && !s.h[0].Due.After(now) {
			it := heap.Pop(&s.h).(*timerItem)
			delete(s.items, timerID{it.Key, it.Kind})
			due = append(due, it.Timer)
		}
		s.wakeAt = maxTime(s.horizon.Add(-s.window/2), s.retryAt)
		if len(s.h) > 0 && s.h[0].Due.Before(s.wakeAt) {
			s.wakeAt = s.h[0].Due
		}
		wait := s.clock.After(s.wakeAt.Sub(now))
		s.mu.Unlock()

		for _, t := range due {
			s.fire(t)
		}
		select {
		case <-s.stop:
			return
		case <-s.wake:
		case <-wait:
		}
	}
}

func (s *scheduler) close() {
	close(s.stop)
	<-s.done
}

package engine

import (
	"container/heap"
	"sync"
	"time"
)

// scheduler holds the armed timers in memory (one per thread and kind, in a
// heap by due time) and calls fire for each when it is due. The durable copy
// is the store's timer index; the scheduler is rebuilt from it at start-up.
type scheduler struct {
	clock Clock
	fire  func(Timer)

	mu     sync.Mutex
	items  map[timerID]*timerItem
	h      timerHeap
	wakeAt time.Time // when run will look at the heap again; zero: not waiting on a time
	wake   chan struct{}
	stop   chan struct{}
	done   chan struct{}
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

func newScheduler(clock Clock, fire func(Timer)) *scheduler {
	return &scheduler{
		clock: clock, fire: fire,
		items: map[timerID]*timerItem{},
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
}

// set arms (or moves) the thread's timer of t.Kind to t.Due.
func (s *scheduler) set(t Timer) {
	s.mu.Lock()
	id := timerID{t.Key, t.Kind}
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
	if it, ok := s.items[timerID{k, kind}]; ok {
		heap.Remove(&s.h, it.index)
		delete(s.items, timerID{k, kind})
	}
	s.mu.Unlock()
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

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *scheduler) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		now := s.clock.Now()
		var due []Timer
		for len(s.h) > 0 && !s.h[0].Due.After(now) {
			it := heap.Pop(&s.h).(*timerItem)
			delete(s.items, timerID{it.Key, it.Kind})
			due = append(due, it.Timer)
		}
		var wait <-chan time.Time
		s.wakeAt = time.Time{}
		if len(s.h) > 0 {
			s.wakeAt = s.h[0].Due
			wait = s.clock.After(s.h[0].Due.Sub(now))
		}
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

package engine

import "sync"

// locks serialises work per thread: events on one thread run one at a time,
// different threads in parallel. Entries live only while someone holds or
// waits for them.
type locks struct {
	mu sync.Mutex
	m  map[ThreadKey]*lockEntry
}

type lockEntry struct {
	mu   sync.Mutex
	refs int
}

// tryLock takes the thread's lock if nobody holds or waits for it.
func (l *locks) tryLock(k ThreadKey) (unlock func(), ok bool) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[ThreadKey]*lockEntry{}
	}
	if l.m[k] != nil {
		l.mu.Unlock()
		return nil, false
	}
	e := &lockEntry{refs: 1}
	e.mu.Lock()
	l.m[k] = e
	l.mu.Unlock()
	return l.unlocker(k, e), true
}

func (l *locks) unlocker(k ThreadKey, e *lockEntry) func() {
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(l.m, k)
		}
		l.mu.Unlock()
	}
}

func (l *locks) lock(k ThreadKey) (unlock func()) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[ThreadKey]*lockEntry{}
	}
	e := l.m[k]
	if e == nil {
		e = &lockEntry{}
		l.m[k] = e
	}
	e.refs++
	l.mu.Unlock()

	e.mu.Lock()
	return l.unlocker(k, e)
}

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

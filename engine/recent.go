package engine

import (
	"sync"
	"time"
)

// recentCalls remembers when threadctl's last Graph call on each thread
// (thread-control calls and thread_owner) answered — Meta may apply a call
// at any moment until then, so that is the latest moment its effect can
// carry — for one to two minutes: long enough to tell a webhook event that
// Meta sent before that moment — delivered late, or waiting behind the
// thread's work — from one that follows it. Older calls are forgotten, so
// memory follows the call rate, not the number of threads.
type recentCalls struct {
	mu        sync.Mutex
	cur, prev map[ThreadKey]time.Time
	since     time.Time // when cur was started
}

// recentCallsFor is how long a call is remembered at least.
const recentCallsFor = time.Minute

// metaTimeResolution is the resolution of Meta's webhook timestamps
// (milliseconds): an event stamped within it of a call may follow the call.
const metaTimeResolution = time.Millisecond

// note records a call on thread k answered at at.
func (r *recentCalls) note(k ThreadKey, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur == nil || at.Sub(r.since) >= recentCallsFor {
		r.prev, r.cur, r.since = r.cur, map[ThreadKey]time.Time{}, at
	}
	if at.After(r.cur[k]) {
		r.cur[k] = at
	}
}

// last returns the latest moment noted for a call on thread k (zero:
// none).
func (r *recentCalls) last(k ThreadKey) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maxTime(r.cur[k], r.prev[k])
}

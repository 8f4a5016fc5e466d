package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/threadctl/threadctl/states"
)

// Store errors.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned by a commit whose thread changed since it was
	// read: its revision is no longer the expected one.
	ErrConflict = errors.New("the thread changed since it was read")
	// ErrAmbiguous is returned for an identity found on more than one page.
	ErrAmbiguous = errors.New("identity is known on several pages")
	// ErrBadCursor is returned for a list cursor the store did not make.
	ErrBadCursor = errors.New("invalid list cursor")
)

// Store is the engine's storage, in domain terms. The engine serialises work
// per thread; Store makes each Commit atomic and durable before it returns,
// and refuses one whose expected revision is stale, so that several engine
// instances can share a store (with a Coordinator). Reads see every commit
// that has returned.
//
// In a store shared by several instances, the work in flight — intents,
// accepted events, queued contents — belongs to the instance that made it:
// Intents, Accepted and QueuedThreads return this instance's (and what
// Coordinator.Orphans handed it), never another live instance's.
type Store interface {
	Pages(ctx context.Context) ([]Page, error)
	PutPage(ctx context.Context, p Page) error

	Thread(ctx context.Context, key ThreadKey) (Thread, error)
	// FindIdentity returns the thread of a customer (identity_foreign_id).
	FindIdentity(ctx context.Context, psid string) (ThreadKey, error)
	Commit(ctx context.Context, c *Commit) error

	// PutIntent makes a Graph call durable before it is made; it fails with
	// ErrConflict unless the thread is still at intent.Revision.
	PutIntent(ctx context.Context, in Intent) error
	Intents(ctx context.Context) ([]Intent, error)
	// TimersBetween returns up to limit durable timers due after after and
	// at or before before, earliest first.
	TimersBetween(ctx context.Context, after, before time.Time, limit int) ([]Timer, error)

	// History returns up to limit entries with revisions below before (0: the
	// newest), newest first.
	History(ctx context.Context, key ThreadKey, before uint64, limit int) ([]HistoryEntry, error)
	ListThreads(ctx context.Context, f ListFilter) (threads []Thread, next string, err error)
	StateCounts(ctx context.Context) (map[states.State]int, error)
	// Queue returns the contents awaiting synchronisation on a thread, oldest first.
	Queue(ctx context.Context, key ThreadKey) ([]Content, error)
	// QueuedThreads returns the threads that have contents queued.
	QueuedThreads(ctx context.Context) ([]ThreadKey, error)
	Content(ctx context.Context, id string) (Content, error)
	// ThreadView reads a thread, its queue (as Queue) and up to limit of
	// its history entries (as History) as of one moment: no commit falls
	// between the three reads.
	ThreadView(ctx context.Context, key ThreadKey, before uint64, limit int) (ThreadView, error)
	Intervention(ctx context.Context, id string) (Intervention, error)

	// Accept makes webhook events durable before they are applied, and
	// returns the sequence number of each, in order.
	Accept(ctx context.Context, events []Notice) ([]uint64, error)
	// Accepted returns the events accepted and not yet applied (consumed
	// by a Commit), oldest first.
	Accepted(ctx context.Context) ([]Accepted, error)

	// PruneHistory reads at most budget history entries from cursor on
	// ("" : the first) and deletes those beyond the newest keep of their
	// thread (keep 0: no limit) or written before olderThan (zero: no
	// limit), always keeping each thread's newest entry. It returns where
	// to go on ("" : the end was reached) and how many it deleted.
	PruneHistory(ctx context.Context, cursor string, keep int, olderThan time.Time, budget int) (next string, pruned int, err error)
	// PruneRecords reads at most budget records of kind (RecordContents
	// or RecordInterventions) from cursor on, oldest first, and deletes the
	// synced or failed contents, or closed interventions, created before
	// olderThan. It returns where to go on ("" : no older record is left)
	// and how many it deleted.
	PruneRecords(ctx context.Context, kind, cursor string, olderThan time.Time, budget int) (next string, pruned int, err error)

	// Restored reports whether the store was restored from a backup and
	// its threads not yet reconciled with Meta; Reconciled clears it.
	Restored(ctx context.Context) (bool, error)
	Reconciled(ctx context.Context) error
}

// Kinds of records PruneRecords deletes.
const (
	RecordContents      = "contents"
	RecordInterventions = "interventions"
)

// Accepted is a webhook event accepted durably and not yet applied.
type Accepted struct {
	V      int       `json:"v"`
	Seq    uint64    `json:"seq"`
	Notice Notice    `json:"notice"`
	At     time.Time `json:"at"`
}

// Commit is what one event (or one content synchronisation) changes,
// committed atomically.
type Commit struct {
	// Thread is the new thread record; nil when the thread does not change.
	// Its Revision must be Expect+len(History), and History the entries
	// Expect+1 … Thread.Revision. Expect 0 creates the thread.
	Thread  *Thread
	Expect  uint64
	History []HistoryEntry
	// Prev is the record read at revision Expect, if the caller has it: the
	// store then need not decode the stored one to update its indexes.
	Prev *Thread
	// Key is the thread whose queue changes when Thread is nil.
	Key ThreadKey

	ResolveIntent bool     // delete the thread's outstanding intent
	Consume       []uint64 // accepted webhook events this commit applies
	// KeepHistory, when positive, keeps only the thread's newest
	// KeepHistory history entries: the entry KeepHistory revisions before
	// each new one is deleted with it.
	KeepHistory   int
	Contents      []Content      // created or updated
	Enqueue       []string       // content ids appended to the thread's queue
	Dequeue       []string       // content ids removed from the queue
	Interventions []Intervention // created or updated
}

// Valid reports whether c keeps the rules every store enforces, whatever its
// key layout: history and intents change only with their thread, a thread
// only with history entries that run on from Expect to its revision and end
// in its state, and Prev, when given, is the record at Expect. Stores add
// their own rules on keys and ids.
func (c *Commit) Valid() error {
	if c.Thread == nil {
		if len(c.History) > 0 || c.ResolveIntent {
			return fmt.Errorf("history and intents change only with their thread")
		}
		return nil
	}
	if _, err := states.ParseState(string(c.Thread.State)); err != nil {
		return err
	}
	if len(c.History) == 0 {
		return fmt.Errorf("a thread changes only with a history entry")
	}
	if c.Thread.Revision != c.Expect+uint64(len(c.History)) {
		return fmt.Errorf("thread revision %d is not %d + %d history entries", c.Thread.Revision, c.Expect, len(c.History))
	}
	for i, h := range c.History {
		if h.Revision != c.Expect+uint64(i)+1 {
			return fmt.Errorf("history entry %d has revision %d, want %d", i, h.Revision, c.Expect+uint64(i)+1)
		}
	}
	if last := c.History[len(c.History)-1]; last.To != c.Thread.State {
		return fmt.Errorf("last history entry ends in %s, thread is %s", last.To, c.Thread.State)
	}
	if c.Prev != nil && (c.Prev.Revision != c.Expect || c.Prev.Key() != c.Thread.Key()) {
		return fmt.Errorf("Prev is revision %d of %s, not %d of %s", c.Prev.Revision, c.Prev.Key(), c.Expect, c.Thread.Key())
	}
	return nil
}

// ListFilter selects threads for listing; empty fields match all.
type ListFilter struct {
	State  states.State
	PageID string
	After  string // the cursor returned by the previous page
	Limit  int
}

// Clock is the engine's time source; tests inject a fake one.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// ThreadView is a thread with its queued contents and some of its history,
// read as of one moment (Store.ThreadView).
type ThreadView struct {
	Thread  Thread
	Queue   []Content      // oldest first
	History []HistoryEntry // newest first
}

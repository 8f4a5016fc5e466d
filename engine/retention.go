package engine

import (
	"context"
	"time"
)

// Retention: each commit keeps a thread's newest HistoryKeep history
// entries (the store deletes the one that falls out), and a background
// pruner catches up — entries older than HistoryMaxAge, threads written
// before HistoryKeep was lowered — and removes synced or failed contents
// and closed interventions older than Retention. It works in bounded
// steps, so that it never holds the store for long.

// pruneBudget is how many records one step of the pruner reads.
const pruneBudget = 5000

// pruner runs a pass every PruneInterval until the engine closes.
func (e *Engine) pruner(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.clock.After(e.cfg.PruneInterval):
		}
		if !e.isLeader() {
			continue // the leader prunes the shared store
		}
		if err := e.Prune(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("pruning failed; trying again at the next pass", "err", err)
		}
	}
}

// Prune runs one pass of the pruner: over the whole history, then over
// the contents and interventions, a bounded step at a time.
func (e *Engine) Prune(ctx context.Context) error {
	now := e.clock.Now()
	var olderThan time.Time
	if e.cfg.HistoryMaxAge > 0 {
		olderThan = now.Add(-e.cfg.HistoryMaxAge)
	}
	history, contents, interventions := 0, 0, 0
	defer func() { e.obs.Pruned(history, contents, interventions) }()
	if e.cfg.HistoryKeep > 0 || !olderThan.IsZero() {
		for cursor := ""; ; {
			next, n, err := e.store.PruneHistory(ctx, cursor, e.cfg.HistoryKeep, olderThan, pruneBudget)
			history += n
			if err != nil {
				return storeError(err, "pruning history")
			}
			if next == "" || ctx.Err() != nil {
				break
			}
			cursor = next
		}
	}
	if e.cfg.Retention > 0 {
		for _, kind := range []string{RecordContents, RecordInterventions} {
			for cursor := ""; ; {
				next, n, err := e.store.PruneRecords(ctx, kind, cursor, now.Add(-e.cfg.Retention), pruneBudget)
				if kind == RecordContents {
					contents += n
				} else {
					interventions += n
				}
				if err != nil {
					return storeError(err, "pruning "+kind)
				}
				if next == "" || ctx.Err() != nil {
					break
				}
				cursor = next
			}
		}
	}
	if history+contents+interventions > 0 {
		e.log.Info("pruned", "history_entries", history, "contents", contents, "interventions", interventions)
	}
	return nil
}

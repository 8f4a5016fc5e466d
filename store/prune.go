package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/threadctl/threadctl/engine"
)

// PruneHistory reads at most budget history entries from cursor on and
// deletes those beyond the newest keep of their thread, or written before
// olderThan; each thread's newest entry is kept. The entries are read
// first, then deleted in one commit: an entry once too old stays so.
func (s *DB) PruneHistory(ctx context.Context, cursor string, keep int, olderThan time.Time, budget int) (string, int, error) {
	from, err := decodeCursor(cursor)
	if err != nil {
		return "", 0, err
	}
	var drop [][]byte
	next := ""
	err = s.read(func(v *view) error {
		n := 0
		var thread []byte
		var latest uint64
		var err error
		v.ascend(bHistory, nil, from, func(k, raw []byte) bool {
			if n == budget {
				next = base64.RawURLEncoding.EncodeToString(k)
				return false
			}
			n++
			if len(k) < 9 {
				err = fmt.Errorf("history key too short: %q", k)
				return false
			}
			tk, rev := k[:len(k)-9], binary.BigEndian.Uint64(k[len(k)-8:])
			if !bytes.Equal(tk, thread) {
				thread, latest = slices.Clone(tk), 0
				if t, terr := getThread(v, parseThreadKey(tk)); terr == nil {
					latest = t.Revision
				}
			}
			switch {
			case rev >= latest:
				// The newest entry (or one of a thread not found) stays.
			case keep > 0 && rev+uint64(keep) <= latest:
				drop = append(drop, slices.Clone(k))
			case !olderThan.IsZero():
				var h engine.HistoryEntry
				if err = decodeHistory(raw, &h); err != nil {
					return false
				}
				if h.At.Before(olderThan) {
					drop = append(drop, slices.Clone(k))
				}
			}
			return true
		})
		return err
	})
	if err != nil {
		return "", 0, err
	}
	return next, len(drop), s.deleteAll(ctx, bHistory, drop)
}

// PruneRecords reads at most budget contents or interventions from cursor
// on, oldest first (their ids begin with their creation time), and deletes
// the synced or failed contents, or closed interventions, created before
// olderThan.
func (s *DB) PruneRecords(ctx context.Context, kind, cursor string, olderThan time.Time, budget int) (string, int, error) {
	b := map[string]bucketID{engine.RecordContents: bContents, engine.RecordInterventions: bInterventions}
	bucket, ok := b[kind]
	if !ok {
		return "", 0, fmt.Errorf("store: unknown kind of record %q", kind)
	}
	from, err := decodeCursor(cursor)
	if err != nil {
		return "", 0, err
	}
	// Ids are 8 hex digits of the creation time in seconds, then random.
	cutoff := []byte(hex.EncodeToString(binary.BigEndian.AppendUint32(nil, uint32(olderThan.Unix()))))
	var drop [][]byte
	next := ""
	err = s.read(func(v *view) error {
		n := 0
		var err error
		v.ascend(bucket, nil, from, func(k, raw []byte) bool {
			if bytes.Compare(k, cutoff) >= 0 {
				return false // created since: nothing older is left
			}
			if n == budget {
				next = base64.RawURLEncoding.EncodeToString(k)
				return false
			}
			n++
			done := false
			switch bucket {
			case bContents:
				var ct engine.Content
				err = decode(raw, &ct, func() int { return ct.V }, "content")
				done = ct.Status == engine.SyncSynced || ct.Status == engine.SyncFailed
			default:
				var iv engine.Intervention
				err = decode(raw, &iv, func() int { return iv.V }, "intervention")
				done = iv.Status == engine.InterventionClosed
			}
			if err != nil {
				return false
			}
			if done {
				drop = append(drop, slices.Clone(k))
			}
			return true
		})
		return err
	})
	if err != nil {
		return "", 0, err
	}
	return next, len(drop), s.deleteAll(ctx, bucket, drop)
}

func decodeCursor(cursor string) ([]byte, error) {
	if cursor == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return nil, fmt.Errorf("%w: %q", engine.ErrBadCursor, cursor)
	}
	return b, nil
}

// deleteAll deletes keys of bucket b in one commit.
func (s *DB) deleteAll(ctx context.Context, b bucketID, keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	return s.update(ctx, noCheck, func(w *rw) error {
		for _, k := range keys {
			w.del(b, k)
		}
		return nil
	})
}

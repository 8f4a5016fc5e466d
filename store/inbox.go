package store

import (
	"context"
	"encoding/binary"
	"time"

	"github.com/threadctl/threadctl/engine"
)

// Accept makes webhook events durable before they are applied (in the inbox
// bucket, under sequence numbers), in one commit.
func (s *DB) Accept(ctx context.Context, events []engine.Notice) ([]uint64, error) {
	now := time.Now()
	var seqs []uint64
	err := s.update(ctx, noCheck, func(w *rw) error {
		seqs = seqs[:0]
		for _, n := range events {
			seq := nextSeq(w, bInbox)
			a := engine.Accepted{V: engine.FormatVersion, Seq: seq, Notice: n, At: now}
			if err := putJSON(w, bInbox, binary.BigEndian.AppendUint64(nil, seq), a); err != nil {
				return err
			}
			seqs = append(seqs, seq)
		}
		return nil
	})
	return seqs, err
}

// Accepted returns the accepted events not yet applied, oldest first.
func (s *DB) Accepted(ctx context.Context) ([]engine.Accepted, error) {
	var out []engine.Accepted
	err := s.read(func(v *view) error {
		return forEach(v, bInbox, nil, func(_, raw []byte) error {
			var a engine.Accepted
			if err := decode(raw, &a, func() int { return a.V }, "accepted webhook event"); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

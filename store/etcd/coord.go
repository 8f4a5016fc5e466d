package etcd

import (
	"context"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/threadctl/threadctl/engine"
)

var _ engine.Coordinator = (*Store)(nil)

// Leader campaigns in the election under the prefix with this instance's
// session, and reports when it wins (true) and when its session — its
// lease — ends or ctx does (false); it then campaigns again with the next
// session. On ctx's end a leader resigns, so that another leads at once.
func (s *Store) Leader(ctx context.Context) <-chan bool {
	ch := make(chan bool)
	send := func(v bool) bool {
		select {
		case ch <- v:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer close(ch)
		for ctx.Err() == nil {
			sess := s.session()
			el := concurrency.NewElection(sess, s.key("election"))
			cctx, cancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-sess.Done():
				case <-cctx.Done():
				}
				cancel()
			}()
			err := el.Campaign(cctx, s.ID())
			if err != nil {
				cancel()
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			if !send(true) {
				cancel()
				s.resign(el)
				return
			}
			select {
			case <-sess.Done():
			case <-ctx.Done():
				s.resign(el)
			}
			cancel()
			// Let go of a leadership whose lease is gone (or ending).
			if !send(false) {
				return
			}
		}
	}()
	return ch
}

func (s *Store) resign(el *concurrency.Election) {
	if s.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	el.Resign(ctx)
}

// Timers watches the timer index and delivers each timer put from now on.
func (s *Store) Timers(ctx context.Context) <-chan engine.Timer {
	ch := make(chan engine.Timer, 256)
	prefix := s.key("timers") + "/"
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithFilterDelete())
	go func() {
		defer close(ch)
		for resp := range wch {
			if resp.Err() != nil {
				s.log.Warn("watching the timer index failed; reloading it", "err", resp.Err())
				return
			}
			for _, ev := range resp.Events {
				t, err := parseTimer(strings.TrimPrefix(string(ev.Kv.Key), prefix))
				if err != nil {
					s.log.Warn("a timer key that names no timer", "key", string(ev.Kv.Key))
					continue
				}
				select {
				case ch <- t:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return ch
}

// TakeoverInterval is how often the leader looks for orphans.
func (s *Store) TakeoverInterval() time.Duration { return s.opts.TakeoverInterval }

// Orphans claims for this instance the intents, accepted webhook events and
// queues that no live instance claims (their lease expired), each in a
// transaction that fails if another instance claimed it first.
func (s *Store) Orphans(ctx context.Context) (engine.Orphans, error) {
	var o engine.Orphans
	intents, err := s.allIntents(ctx)
	if err != nil {
		return o, err
	}
	if len(intents) > 0 {
		_, any, err := s.claimed(ctx, "intents")
		if err != nil {
			return o, err
		}
		for _, in := range intents {
			if !any[tk(in.Key)] && s.claim(ctx, "intents", tk(in.Key)) {
				o.Intents = append(o.Intents, in)
			}
		}
	}
	accepted, err := s.allAccepted(ctx)
	if err != nil {
		return o, err
	}
	if len(accepted) > 0 {
		_, any, err := s.claimed(ctx, "inbox")
		if err != nil {
			return o, err
		}
		for _, a := range accepted {
			if !any[hex16(a.Seq)] && s.claim(ctx, "inbox", hex16(a.Seq)) {
				o.Accepted = append(o.Accepted, a)
			}
		}
	}
	queued, err := s.queuedThreads(ctx)
	if err != nil {
		return o, err
	}
	if len(queued) > 0 {
		_, any, err := s.claimed(ctx, "queue")
		if err != nil {
			return o, err
		}
		for _, k := range queued {
			if !any[tk(k)] && s.claim(ctx, "queue", tk(k)) {
				o.Queued = append(o.Queued, k)
			}
		}
	}
	return o, nil
}

// claim puts claims/<kind>/<rest> under this instance's lease if no one
// holds it.
func (s *Store) claim(ctx context.Context, kind, rest string) bool {
	lease, me := s.lease()
	k := s.key("claims", kind, rest)
	c, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(c).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, me, clientv3.WithLease(lease))).Commit()
	if err != nil {
		s.log.Warn("claiming a dead instance's work failed", "key", k, "err", err)
		return false
	}
	return resp.Succeeded
}

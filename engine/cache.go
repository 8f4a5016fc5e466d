package engine

import (
	"hash/maphash"
	"sync"
)

// threadCache keeps the latest committed record of recently used threads, so
// that an event does not read and decode its thread from the store. It is
// only read and written by holders of the thread's lock, which makes a hit
// the record the store has; a commit refused as a conflict (another writer
// of a shared store) drops the entry.
type threadCache struct {
	seed   maphash.Seed
	shards [16]cacheShard
	max    int // per shard
}

type cacheShard struct {
	mu sync.Mutex
	m  map[ThreadKey]Thread
}

// newThreadCache keeps up to size records; none when size is not positive.
func newThreadCache(size int) *threadCache {
	c := &threadCache{seed: maphash.MakeSeed(), max: max(size/16, 0)}
	if size > 0 {
		c.max = max(size/16, 1)
	}
	for i := range c.shards {
		c.shards[i].m = map[ThreadKey]Thread{}
	}
	return c
}

func (c *threadCache) shard(k ThreadKey) *cacheShard {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(k.PageID)
	h.WriteString(k.PSID)
	return &c.shards[h.Sum64()%uint64(len(c.shards))]
}

func (c *threadCache) get(k ThreadKey) (Thread, bool) {
	s := c.shard(k)
	s.mu.Lock()
	t, ok := s.m[k]
	s.mu.Unlock()
	return t, ok
}

func (c *threadCache) put(t Thread) {
	if c.max == 0 {
		return
	}
	k := t.Key()
	s := c.shard(k)
	s.mu.Lock()
	if _, ok := s.m[k]; !ok && len(s.m) >= c.max {
		for old := range s.m { // an arbitrary entry makes room
			delete(s.m, old)
			break
		}
	}
	s.m[k] = t
	s.mu.Unlock()
}

func (c *threadCache) drop(k ThreadKey) {
	s := c.shard(k)
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

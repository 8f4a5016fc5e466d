package wal

import (
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// benchRecordSize is the size of one record in the benchmarks: about one
// threadctl event.
const benchRecordSize = 400

var benchCallers = []int{1, 16, 64, 256}

// BenchmarkAppend appends 400-byte records from 1, 16, 64 and 256 concurrent
// callers, one record per call, to the WAL and, for comparison in the same
// run, to raw bbolt: db.Update per record for one caller, db.Batch for
// concurrent callers (random 16-byte keys in one bucket, the store's bbolt
// options, MaxBatchDelay 2 ms as in the store's raw benchmark). It reports
// records/s and fdatasyncs per record (bbolt: two per transaction).
func BenchmarkAppend(b *testing.B) {
	for _, c := range benchCallers {
		b.Run(fmt.Sprintf("wal/callers=%d", c), func(b *testing.B) { benchWAL(b, c, Options{}) })
		b.Run(fmt.Sprintf("bbolt/callers=%d", c), func(b *testing.B) { benchBolt(b, c) })
	}
}

// BenchmarkPrealloc measures what preallocating segments buys: with none,
// every append grows the file, so its fdatasync must also persist the new
// size. The three modes run interleaved, in blocks of appends, so that the
// load other tenants put on a shared disk falls on all of them alike; each
// op is one append to each log, and the metrics are each mode's time per
// append.
func BenchmarkPrealloc(b *testing.B) {
	modes := []Prealloc{PreallocFallocate, PreallocZeros, PreallocNone}
	for _, c := range []int{1, 64} {
		b.Run(fmt.Sprintf("callers=%d", c), func(b *testing.B) {
			logs := make([]*Log, len(modes))
			for i, mode := range modes {
				l, err := Open(b.TempDir(), Options{Prealloc: mode})
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				for l.pipe.made.Load() < 2 {
					time.Sleep(time.Millisecond)
				}
				logs[i] = l
			}
			rec := make([]byte, benchRecordSize)
			rand.Read(rec)
			spent := make([]time.Duration, len(modes))
			b.ResetTimer()
			for done := 0; done < b.N; {
				n := min(20*c, b.N-done)
				for i, l := range logs {
					start := time.Now()
					var next atomic.Int64
					var wg sync.WaitGroup
					for range c {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for next.Add(1) <= int64(n) {
								if _, err := l.Append(rec); err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					spent[i] += time.Since(start)
				}
				done += n
			}
			b.StopTimer()
			for i, mode := range modes {
				b.ReportMetric(float64(spent[i].Nanoseconds())/1e3/float64(b.N), "µs/append-"+mode.String())
			}
		})
	}
}

// runCallers runs op b.N times from callers goroutines and reports records/s.
func runCallers(b *testing.B, callers int, op func(caller int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(c); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
}

func benchWAL(b *testing.B, callers int, opts Options) {
	l, err := Open(b.TempDir(), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	// Measure the steady state: the next segment is ready (preparing it
	// with zeros writes the whole segment).
	for l.pipe.made.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	rec := make([]byte, benchRecordSize)
	rand.Read(rec)
	runCallers(b, callers, func(int) error {
		_, err := l.Append(rec)
		return err
	})
	st := l.Stats()
	b.ReportMetric(float64(st.Syncs)/float64(b.N), "syncs/record")
}

func benchBolt(b *testing.B, callers int) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.MaxBatchDelay = 2 * time.Millisecond
	bucket := []byte("events")
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(bucket)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	val := make([]byte, benchRecordSize)
	rand.Read(val)
	var txs atomic.Int64
	var lastTx atomic.Int64
	put := func(tx *bolt.Tx) error {
		if id := int64(tx.ID()); lastTx.Swap(id) != id {
			txs.Add(1)
		}
		key := make([]byte, 16)
		rand.Read(key)
		return tx.Bucket(bucket).Put(key, val)
	}
	commit := db.Batch
	if callers == 1 {
		commit = db.Update
	}
	runCallers(b, callers, func(int) error { return commit(put) })
	b.ReportMetric(2*float64(txs.Load())/float64(b.N), "syncs/record")
}

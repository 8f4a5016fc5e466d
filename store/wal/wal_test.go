package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// payload is the deterministic content of test record n: its length varies
// from 0 to 300 bytes, so frames need every amount of padding.
func payload(n int) []byte {
	if n%7 == 0 {
		return nil
	}
	b := fmt.Appendf(nil, "rec-%d:", n)
	for len(b) < (n*37)%300 {
		b = append(b, byte('a'+n%26))
	}
	return b
}

func mustOpen(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

type entry struct {
	index uint64
	rec   []byte
}

func readAll(t testing.TB, l *Log, from uint64) []entry {
	t.Helper()
	var out []entry
	if err := l.ReadFrom(from, func(i uint64, rec []byte) error {
		out = append(out, entry{i, bytes.Clone(rec)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// appendN appends records payload(1..n) one Append each (every fifth Append
// carries three records) and checks the indexes returned.
func appendN(t testing.TB, l *Log, from, to int) {
	t.Helper()
	for n := from; n <= to; {
		recs := [][]byte{payload(n)}
		if n%5 == 0 && n+2 <= to {
			recs = append(recs, payload(n+1), payload(n+2))
		}
		last, err := l.Append(recs...)
		if err != nil {
			t.Fatal(err)
		}
		n += len(recs)
		if last != uint64(n-1) {
			t.Fatalf("Append returned %d, want %d", last, n-1)
		}
	}
}

// checkRecords checks that the log holds exactly payload(from..to).
func checkRecords(t testing.TB, l *Log, from, to int) {
	t.Helper()
	got := readAll(t, l, uint64(from))
	if len(got) != to-from+1 {
		t.Fatalf("replayed %d records from %d, want %d", len(got), from, to-from+1)
	}
	for i, e := range got {
		if e.index != uint64(from+i) || !bytes.Equal(e.rec, payload(from+i)) {
			t.Fatalf("record #%d: index %d %q, want %d %q", i, e.index, e.rec, from+i, payload(from+i))
		}
	}
}

func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	segs, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range segs {
		out = append(out, filepath.Join(dir, s.name))
	}
	return out
}

// frameOffsets returns the offset of every frame of the segment at path.
func frameOffsets(t testing.TB, path string) []int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off := segHeaderSize; off+frameHeaderSize <= len(b); {
		w := binary.LittleEndian.Uint32(b[off:])
		if w == 0 {
			break
		}
		offs = append(offs, int64(off))
		off += frameSize(int(w &^ lenFlag))
	}
	return offs
}

func TestRoundTripAcrossRotations(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4096, NoSync: true}
	l := mustOpen(t, dir, opts)
	if l.FirstIndex() != 1 || l.LastIndex() != 0 {
		t.Fatalf("empty log: first %d last %d", l.FirstIndex(), l.LastIndex())
	}
	appendN(t, l, 1, 600)
	checkRecords(t, l, 1, 600)
	checkRecords(t, l, 321, 600)
	if st := l.Stats(); st.Rotations < 10 || st.Records != 600 || st.Syncs != 0 {
		t.Fatalf("stats %+v: want ≥ 10 rotations, 600 records, no syncs", st)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}

	files := segmentFiles(t, dir)
	if len(files) < 10 {
		t.Fatalf("%d segments", len(files))
	}
	for _, f := range files {
		if st, _ := os.Stat(f); st.Size() != 4096 {
			t.Fatalf("%s has %d bytes, want the preallocated 4096", f, st.Size())
		}
	}

	l = mustOpen(t, dir, opts)
	if r := l.Report(); len(r.Problems) != 0 || r.FirstIndex != 1 || r.LastIndex != 600 || r.Records != 600 || r.Segments != len(files) {
		t.Fatalf("report after a clean close: %v", r)
	}
	checkRecords(t, l, 1, 600)
	appendN(t, l, 601, 700)
	l.Close()
	l = mustOpen(t, dir, opts)
	checkRecords(t, l, 1, 700)
	l.Close()
}

func TestFirstIndexOption(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, Options{FirstIndex: 1000, NoSync: true})
	if l.FirstIndex() != 1000 || l.LastIndex() != 999 {
		t.Fatalf("first %d last %d", l.FirstIndex(), l.LastIndex())
	}
	if last, err := l.Append([]byte("a"), []byte("b")); err != nil || last != 1001 {
		t.Fatalf("Append: %d %v", last, err)
	}
	if err := l.ReadFrom(999, func(uint64, []byte) error { return nil }); !errors.Is(err, ErrReleased) {
		t.Fatalf("ReadFrom before the first index: %v", err)
	}
	l.Close()
	if _, err := os.Stat(filepath.Join(dir, segName(1000))); err != nil {
		t.Fatal(err)
	}
	// The option only applies to a new log.
	l = mustOpen(t, dir, Options{FirstIndex: 5})
	defer l.Close()
	if got := readAll(t, l, 1000); len(got) != 2 || got[1].index != 1001 || string(got[1].rec) != "b" {
		t.Fatalf("replay: %v", got)
	}
}

func TestConcurrentAppendersGroupCommit(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 64 << 10} // real fdatasyncs, a few rotations
	l := mustOpen(t, dir, opts)
	const goroutines, perG = 32, 40
	type ack struct {
		g, seq, n int
		last      uint64
	}
	acks := make([][]ack, goroutines)
	var wg sync.WaitGroup
	stopRead := make(chan struct{})
	readErr := make(chan error, 1)
	go func() { // a reader replaying while appends go on
		defer close(readErr)
		for {
			select {
			case <-stopRead:
				return
			default:
			}
			want := uint64(1)
			if err := l.ReadFrom(1, func(i uint64, rec []byte) error {
				if i != want {
					return fmt.Errorf("replay gave %d, want %d", i, want)
				}
				want++
				return nil
			}); err != nil {
				readErr <- err
				return
			}
		}
	}()
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range perG {
				n := 1 + (g+seq)%3 // 1 to 3 records per Append
				recs := make([][]byte, n)
				for i := range recs {
					recs[i] = fmt.Appendf(nil, "g%d-s%d-r%d-%s", g, seq, i, strings.Repeat("x", (g*seq)%200))
				}
				last, err := l.Append(recs...)
				if err != nil {
					t.Error(err)
					return
				}
				acks[g] = append(acks[g], ack{g, seq, n, last})
			}
		}()
	}
	wg.Wait()
	close(stopRead)
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	const appends = goroutines * perG
	t.Logf("%d appends, %d records: %d writes, %d fdatasyncs, %d rotations", st.Appends, st.Records, st.Writes, st.Syncs, st.Rotations)
	if st.Appends != appends || st.Syncs != st.Writes {
		t.Fatalf("stats %+v", st)
	}
	if st.Syncs >= appends {
		t.Fatalf("%d fdatasyncs for %d appends: no group commit", st.Syncs, appends)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = mustOpen(t, dir, opts)
	defer l.Close()
	got := map[uint64]string{}
	for _, e := range readAll(t, l, 1) {
		got[e.index] = string(e.rec)
	}
	total := 0
	for g := range goroutines {
		var prev uint64
		for _, a := range acks[g] {
			if a.last <= prev {
				t.Fatalf("goroutine %d: Append %d got last index %d after %d", g, a.seq, a.last, prev)
			}
			prev = a.last
			for i := range a.n {
				idx := a.last - uint64(a.n-1-i)
				want := fmt.Sprintf("g%d-s%d-r%d-%s", g, a.seq, i, strings.Repeat("x", (g*a.seq)%200))
				if got[idx] != want {
					t.Fatalf("record %d is %q, want %q", idx, got[idx], want)
				}
				total++
			}
		}
	}
	if len(got) != total || l.LastIndex() != uint64(total) {
		t.Fatalf("replayed %d records, last index %d; acknowledged %d", len(got), l.LastIndex(), total)
	}
}

// writeLog makes a log of records payload(1..n) in dir and closes it.
func writeLog(t *testing.T, dir string, opts Options, n int) {
	t.Helper()
	l := mustOpen(t, dir, opts)
	appendN(t, l, 1, n)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// openLogged opens dir with a logger whose output it returns.
func openLogged(t *testing.T, dir string, opts Options) (*Log, *bytes.Buffer, error) {
	var buf bytes.Buffer
	opts.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	l, err := Open(dir, opts)
	return l, &buf, err
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestTornTailTruncatedMidRecord(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 1 << 20, NoSync: true}
	writeLog(t, dir, opts, 20)
	seg := segmentFiles(t, dir)[0]
	offs := frameOffsets(t, seg)
	if len(offs) != 20 {
		t.Fatalf("%d frames", len(offs))
	}
	cut := offs[19] + 12 // the header and 4 bytes of record 20's payload
	if err := os.Truncate(seg, cut); err != nil {
		t.Fatal(err)
	}

	l, logged, err := openLogged(t, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("torn tail: record 20 at offset %d of %s runs past the end of the data (length %d, only 4 bytes left); dropped it and everything after it",
		offs[19], filepath.Base(seg), len(payload(20)))
	r := l.Report()
	if len(r.Problems) != 1 || r.Problems[0].String() != want || !r.Problems[0].Dropped || r.Problems[0].Index != 20 || r.Problems[0].Offset != offs[19] {
		t.Fatalf("report:\n%v\nwant the problem:\n%s", r, want)
	}
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "torn tail: record 20 at offset") {
		t.Fatalf("logged: %s", logged)
	}
	if l.LastIndex() != 19 {
		t.Fatalf("last index %d, want 19", l.LastIndex())
	}
	if st, _ := os.Stat(seg); st.Size() != opts.SegmentSize {
		t.Fatalf("segment has %d bytes after the repair, want it preallocated again", st.Size())
	}
	appendN(t, l, 20, 25)
	checkRecords(t, l, 1, 25)
	l.Close()
	l, logged, err = openLogged(t, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(l.Report().Problems) != 0 || logged.Len() != 0 {
		t.Fatalf("second open: %v %s", l.Report(), logged)
	}
	checkRecords(t, l, 1, 25)
}

func TestTornTailBadCRC(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4096, NoSync: true}
	writeLog(t, dir, opts, 100) // several segments: only the last one's tail is torn
	segs := segmentFiles(t, dir)
	seg := segs[len(segs)-1]
	offs := frameOffsets(t, seg)
	lastIdx := 100
	if len(payload(lastIdx)) == 0 {
		t.Fatal("record 100 must have a payload")
	}
	flipByte(t, seg, offs[len(offs)-1]+frameHeaderSize+1)

	l, logged, err := openLogged(t, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("torn tail: record 100 at offset %d of %s fails its CRC; dropped it and everything after it", offs[len(offs)-1], filepath.Base(seg))
	if p := l.Report().Problems; len(p) != 1 || p[0].String() != want {
		t.Fatalf("problems %v, want %s", p, want)
	}
	if !strings.Contains(logged.String(), "fails its CRC") {
		t.Fatalf("logged %s", logged)
	}
	if l.LastIndex() != 99 {
		t.Fatalf("last %d", l.LastIndex())
	}
	appendN(t, l, 100, 110)
	checkRecords(t, l, 1, 110)
	l.Close()
}

func TestCorruptRecordInTheMiddle(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 1 << 20, NoSync: true}
	writeLog(t, dir, opts, 20)
	seg := segmentFiles(t, dir)[0]
	offs := frameOffsets(t, seg)
	flipByte(t, seg, offs[9]+frameHeaderSize+2) // record 10
	before, _ := os.ReadFile(seg)

	_, err := Open(dir, opts)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open: %v, want ErrCorrupt", err)
	}
	for _, s := range []string{fmt.Sprintf("record 10 at offset %d of %s fails its CRC", offs[9], filepath.Base(seg)), "good record 11 follows", "not a torn tail"} {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("error %q does not say %q", err, s)
		}
	}
	if after, _ := os.ReadFile(seg); !bytes.Equal(before, after) {
		t.Fatal("a refused Open changed the segment")
	}
	// Check says the same.
	r, err := Check(dir)
	if !errors.Is(err, ErrCorrupt) || r.OK() || len(r.Problems) != 1 || r.Problems[0].Tail {
		t.Fatalf("Check: %v\n%v", err, r)
	}
}

func TestCorruptNonLastSegment(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4096, NoSync: true}
	writeLog(t, dir, opts, 100)
	segs := segmentFiles(t, dir)
	offs := frameOffsets(t, segs[1])
	// The last record of the second segment: the end of its segment, but
	// not of the log.
	off := offs[len(offs)-1]
	flipByte(t, segs[1], off+4)
	_, err := Open(dir, opts)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("at offset %d of %s fails its CRC", off, filepath.Base(segs[1]))) {
		t.Fatalf("Open: %v", err)
	}
}

func TestMissingSegmentIsAGap(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4096, NoSync: true}
	writeLog(t, dir, opts, 100)
	segs := segmentFiles(t, dir)
	if err := os.Remove(segs[2]); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, opts)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "gap: segment "+filepath.Base(segs[1])) {
		t.Fatalf("Open: %v", err)
	}
}

func TestPreallocatedZerosAreTheEnd(t *testing.T) {
	for _, mode := range []Prealloc{PreallocFallocate, PreallocZeros, PreallocNone} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentSize: 8192, Prealloc: mode}
			l := mustOpen(t, dir, opts)
			appendN(t, l, 1, 30)
			// No Close: as after a crash with nothing torn.
			st, _ := os.Stat(segmentFiles(t, dir)[0])
			if mode != PreallocNone && st.Size() != 8192 || mode == PreallocNone && st.Size() == 8192 {
				t.Fatalf("segment size %d with %s", st.Size(), mode)
			}
			r, err := Check(dir)
			if err != nil || len(r.Problems) != 0 || r.LastIndex != 30 {
				t.Fatalf("Check: %v %v", err, r)
			}
			l.pipe.close()
			l.active.Close()
			l.lock.Close()
			l2 := mustOpen(t, dir, opts)
			defer l2.Close()
			if len(l2.Report().Problems) != 0 {
				t.Fatalf("%v", l2.Report())
			}
			checkRecords(t, l2, 1, 30)
		})
	}
}

// A power failure during a write's fdatasync can leave any subset of its
// sectors on disk: a hole followed by good records is a torn tail.
func TestTornTailHole(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 1 << 20, NoSync: true}
	writeLog(t, dir, opts, 20)
	seg := segmentFiles(t, dir)[0]
	offs := frameOffsets(t, seg)
	f, _ := os.OpenFile(seg, os.O_RDWR, 0)
	f.WriteAt(make([]byte, offs[16]-offs[14]), offs[14]) // records 15 and 16 never written
	f.Close()
	l, _, err := openLogged(t, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	p := l.Report().Problems
	if len(p) != 1 || !p[0].Dropped || p[0].Index != 15 || !strings.Contains(p[0].String(), fmt.Sprintf("record 15 at offset %d of %s is missing (its header is zero) yet a good-looking record 17 follows at offset %d", offs[14], filepath.Base(seg), offs[16])) {
		t.Fatalf("problems %v", p)
	}
	if l.LastIndex() != 14 {
		t.Fatalf("last %d", l.LastIndex())
	}
	appendN(t, l, 15, 16)
	checkRecords(t, l, 1, 16)
	l.Close()
	// Nothing of the old records 17..20 is left to be mistaken for data.
	l = mustOpen(t, dir, opts)
	defer l.Close()
	if len(l.Report().Problems) != 0 {
		t.Fatalf("%v", l.Report())
	}
}

func TestGarbageAfterTheEndIsZeroed(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 1 << 20, NoSync: true}
	writeLog(t, dir, opts, 20)
	seg := segmentFiles(t, dir)[0]
	r, _ := Check(dir)
	end := r.DataBytes
	f, _ := os.OpenFile(seg, os.O_RDWR, 0)
	f.WriteAt(bytes.Repeat([]byte{0x5a}, 100), end+4096)
	f.Close()
	r, err := Check(dir)
	if err != nil || len(r.Problems) != 1 || !r.Problems[0].Tail {
		t.Fatalf("Check: %v %v", err, r)
	}
	l := mustOpen(t, dir, opts)
	if p := l.Report().Problems; len(p) != 1 || !strings.Contains(p[0].String(), fmt.Sprintf("non-zero bytes at offset %d of %s after its last record (20)", end, filepath.Base(seg))) {
		t.Fatalf("%v", p)
	}
	l.Close()
	if r, err := Check(dir); err != nil || len(r.Problems) != 0 {
		t.Fatalf("Check after Open: %v %v", err, r)
	}
}

func TestBrokenAfterFailedSync(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	syncs := 0
	opts := Options{syncHook: func() error {
		mu.Lock()
		defer mu.Unlock()
		syncs++
		if syncs == 3 {
			return errors.New("EIO (injected)")
		}
		return nil
	}}
	l := mustOpen(t, dir, opts)
	for i := 1; i <= 2; i++ {
		if _, err := l.Append([]byte("ok")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Append([]byte("fails")); err == nil || !strings.Contains(err.Error(), "EIO (injected)") {
		t.Fatalf("Append with a failing sync: %v", err)
	}
	for range 2 {
		if _, err := l.Append([]byte("after")); !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "EIO (injected)") {
			t.Fatalf("Append after a failed sync: %v", err)
		}
	}
	if l.LastIndex() != 2 {
		t.Fatalf("last durable %d", l.LastIndex())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = mustOpen(t, dir, Options{})
	defer l.Close()
	// The failed record was written, so it may be there: whatever is there
	// is intact, and appends go on after it.
	if last, err := l.Append([]byte("new")); err != nil || last != l.LastIndex() || last < 3 {
		t.Fatalf("Append after reopening: %d %v", last, err)
	}
}

func TestReleaseBefore(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4096, NoSync: true}
	l := mustOpen(t, dir, opts)
	defer l.Close()
	appendN(t, l, 1, 300)
	segs, _ := listSegments(dir)
	if len(segs) < 5 {
		t.Fatalf("%d segments", len(segs))
	}
	if err := l.ReleaseBefore(segs[2].first); err != nil { // exactly segments 0 and 1
		t.Fatal(err)
	}
	if l.FirstIndex() != segs[2].first {
		t.Fatalf("first %d, want %d", l.FirstIndex(), segs[2].first)
	}
	if err := l.ReleaseBefore(segs[3].first - 1); err != nil { // segment 2 has a record ≥ the index
		t.Fatal(err)
	}
	left, _ := listSegments(dir)
	if len(left) != len(segs)-2 || left[0] != segs[2] {
		t.Fatalf("segments left %v of %v", left, segs)
	}
	checkRecords(t, l, int(segs[2].first), 300)
	if err := l.ReadFrom(segs[2].first-1, func(uint64, []byte) error { return nil }); !errors.Is(err, ErrReleased) {
		t.Fatalf("ReadFrom a released record: %v", err)
	}
	// Never the segment being written.
	if err := l.ReleaseBefore(1 << 60); err != nil {
		t.Fatal(err)
	}
	left, _ = listSegments(dir)
	if len(left) != 1 || left[0] != segs[len(segs)-1] || l.FirstIndex() != left[0].first {
		t.Fatalf("left %v", left)
	}
	checkRecords(t, l, int(left[0].first), 300)
	appendN(t, l, 301, 320)
	checkRecords(t, l, int(left[0].first), 320)
}

func dirBytes(t testing.TB, dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if info, err := e.Info(); err == nil {
			n += info.Size()
		}
	}
	return n
}

func TestDiskBoundedUnderAppendAndRelease(t *testing.T) {
	dir := t.TempDir()
	const segSize = 8192
	l := mustOpen(t, dir, Options{SegmentSize: segSize, NoSync: true})
	defer l.Close()
	var peak int64
	for i := 0; i < 5000; i++ {
		last, err := l.Append(bytes.Repeat([]byte{'r'}, 100))
		if err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 && last > 100 {
			if err := l.ReleaseBefore(last - 100); err != nil { // keep ~100 records
				t.Fatal(err)
			}
			peak = max(peak, dirBytes(t, dir))
		}
	}
	// ~100 records of 112 bytes span at most 3 segments, plus the one being
	// written and the one prepared.
	if st := l.Stats(); st.Rotations < 50 || peak > 5*segSize {
		t.Fatalf("%d rotations; peak %d bytes on disk, want ≤ %d", st.Rotations, peak, 5*segSize)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, Options{SegmentSize: 4096, NoSync: true}, 200)
	r, err := Check(dir)
	if err != nil || !r.OK() || r.FirstIndex != 1 || r.LastIndex != 200 || r.Records != 200 || r.Segments < 5 || r.Bytes != int64(r.Segments)*4096 || r.DataBytes >= r.Bytes {
		t.Fatalf("Check a good log: %v\n%v", err, r)
	}
	if !strings.Contains(r.String(), "records 1..200") {
		t.Fatalf("%s", r)
	}

	segs := segmentFiles(t, dir)
	last := segs[len(segs)-1]
	offs := frameOffsets(t, last)
	flipByte(t, last, offs[len(offs)-1]+frameHeaderSize+3)
	before, _ := os.ReadFile(last)
	r, err = Check(dir)
	if err != nil || !r.OK() || len(r.Problems) != 1 || !r.Problems[0].Tail || r.LastIndex != 199 ||
		!strings.Contains(r.String(), "fails its CRC; the next Open drops it and everything after it") {
		t.Fatalf("Check a torn tail: %v\n%v", err, r)
	}
	if after, _ := os.ReadFile(last); !bytes.Equal(before, after) {
		t.Fatal("Check changed the segment")
	}

	offs = frameOffsets(t, segs[1])
	flipByte(t, segs[1], offs[2]+frameHeaderSize)
	r, err = Check(dir)
	if !errors.Is(err, ErrCorrupt) || r.OK() || len(r.Problems) != 2 {
		t.Fatalf("Check a corrupt log: %v\n%v", err, r)
	}
	t.Logf("%v\n%v", err, r)

	if _, err := Check(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("Check of a missing directory")
	}
}

func TestCloseWaitsForAppends(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, Options{SegmentSize: 16384})
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[uint64]string{}
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				rec := fmt.Sprintf("g%d-%d", g, i)
				last, err := l.Append([]byte(rec))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[last] = rec
				mu.Unlock()
			}
		}()
	}
	for l.LastIndex() < 200 {
		_, _ = l.Append([]byte("main"))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	l = mustOpen(t, dir, Options{SegmentSize: 16384})
	defer l.Close()
	got := map[uint64]string{}
	for _, e := range readAll(t, l, 1) {
		got[e.index] = string(e.rec)
	}
	for idx, rec := range acked {
		if got[idx] != rec {
			t.Fatalf("acknowledged record %d %q replays as %q", idx, rec, got[idx])
		}
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, Options{NoSync: true})
	defer l.Close()
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second Open: %v", err)
	}
}

package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store/storetest"
	"github.com/threadctl/threadctl/store/wal"
)

// SPEC.md §5: a torn or corrupt tail record of the log is dropped, never
// applied; anything else wrong with the log is refused. These tests damage
// the log a real process left behind (it exited without Close, so nothing
// was checkpointed to bbolt and every commit lives only in the log) and
// open the store on it.

// tailPSIDs are the threads the tail child commits to, in turn.
var tailPSIDs = []string{"7200000000000001", "7200000000000002", "7200000000000003"}

const (
	// tailSegments is how many segments the child's log reaches; it then
	// commits tailLast more, into the last one.
	tailSegments    = 4
	tailLast        = 3
	tailSegmentSize = 8 << 10
)

// tailOpts are the child's and the parent's store options: nothing is
// checkpointed on a timer or by size, so the log holds every commit.
func tailOpts(logger *slog.Logger) Options {
	return Options{CheckpointInterval: time.Hour, CheckpointSize: 1 << 30, SegmentSize: tailSegmentSize, Logger: logger}
}

// tailOwner is the owner commit i sets, so that each revision is told apart.
func tailOwner(i int) string { return fmt.Sprintf("app-%03d", i) }

// TestTailChild is the process TestTornAndCorruptTail runs: it commits
// transitions, one log record each, until its log has tailSegments
// segments and tailLast records in the last, printing "ack <psid>
// <revision> <state> <log index> <i>" after each, and exits without
// closing the store.
func TestTailChild(t *testing.T) {
	dir := os.Getenv("THREADCTL_TAIL_CHILD")
	if dir == "" {
		t.Skip("the child process of TestTornAndCorruptTail")
	}
	s, err := Open(dir, tailOpts(nil))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	prev := map[string]*engine.Thread{}
	last := 0 // commits since the log reached tailSegments segments
	for i := 0; last < tailLast; i++ {
		if i == 10000 {
			fmt.Println("error: the log did not grow")
			os.Exit(2)
		}
		if segs, _ := filepath.Glob(filepath.Join(dir, LogDir, "*.wal")); len(segs) >= tailSegments {
			last++
		}
		psid := tailPSIDs[i%len(tailPSIDs)]
		st := []states.State{states.Bot, states.Agent}[i/len(tailPSIDs)%2]
		th := storetest.Step(t, s, prev[psid], engine.ThreadKey{PageID: "100", PSID: psid}, st, func(th *engine.Thread) { th.Owner = tailOwner(i) })
		prev[psid] = th
		fmt.Fprintf(out, "ack %s %d %s %d %d\n", psid, th.Revision, th.State, s.log.LastIndex(), i)
	}
	out.Flush()
	os.Exit(0) // no Close: no checkpoint
}

// tailAck is one commit the child acknowledged.
type tailAck struct {
	key   engine.ThreadKey
	rev   uint64
	state states.State
	index uint64
	i     int
}

// runTailChild runs TestTailChild on dir and returns its acknowledgements.
func runTailChild(t *testing.T, dir string) []tailAck {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTailChild$")
	cmd.Env = append(os.Environ(), "THREADCTL_TAIL_CHILD="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tail child: %v\n%s", err, out)
	}
	var acks []tailAck
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 6 || f[0] != "ack" {
			t.Fatalf("tail child said %q", line)
		}
		rev, _ := strconv.ParseUint(f[2], 10, 64)
		index, _ := strconv.ParseUint(f[4], 10, 64)
		i, _ := strconv.Atoi(f[5])
		acks = append(acks, tailAck{key: engine.ThreadKey{PageID: "100", PSID: f[1]}, rev: rev, state: states.State(f[3]), index: index, i: i})
	}
	if len(acks) < 2*tailSegments {
		t.Fatalf("tail child acknowledged %d commits", len(acks))
	}
	for j, a := range acks {
		if a.index != uint64(j+1) {
			t.Fatalf("commit %d went to log record %d: want one record per commit, from 1", j, a.index)
		}
	}
	return acks
}

// walFrame is a record's frame in a segment (store/wal's documented format:
// an 8-byte header, then frames of a uint32 length word with bit 31 set, a
// uint32 CRC, and the payload padded to 8 bytes).
type walFrame struct {
	off   int64 // of the frame header
	n     int   // payload bytes
	index uint64
}

func (f walFrame) payload() int64 { return f.off + 8 }

// walSegment is a segment file and its frames.
type walSegment struct {
	name   string
	frames []walFrame
}

// readSegments lists dir's log segments, oldest first, with their frames.
func readSegments(t *testing.T, dir string) []walSegment {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, LogDir, "*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	var segs []walSegment
	for _, path := range names {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(path)
		first, err := strconv.ParseUint(strings.TrimSuffix(name, ".wal"), 16, 64)
		if err != nil {
			t.Fatalf("segment name %s: %v", name, err)
		}
		sg := walSegment{name: name}
		for off := int64(8); off+8 <= int64(len(b)); {
			w := binary.LittleEndian.Uint32(b[off:])
			if w == 0 {
				break
			}
			n := int(w &^ (1 << 31))
			sg.frames = append(sg.frames, walFrame{off: off, n: n, index: first + uint64(len(sg.frames))})
			off += 8 + int64((n+7)&^7)
		}
		segs = append(segs, sg)
	}
	return segs
}

// copyDir copies a data directory (bbolt file and log) to a new one.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return to
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer safe for the store's goroutines to log to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestTornAndCorruptTail damages the log a crashed process left and opens
// the store on it. A torn tail (the last write cut short, or its last
// record failing its CRC) is dropped with a log line that says where and
// what; the records before it replay, nothing of the dropped ones is
// applied, and commits go on at the dropped records' indexes. Damage with
// good records after it is refused, and nothing is dropped.
func TestTornAndCorruptTail(t *testing.T) {
	base := t.TempDir()
	acks := runTailChild(t, base)
	segs := readSegments(t, base)
	if len(segs) != tailSegments {
		t.Fatalf("the child's log has %d segments, want %d", len(segs), tailSegments)
	}
	nframes := 0
	for _, sg := range segs {
		nframes += len(sg.frames)
	}
	if nframes != len(acks) {
		t.Fatalf("the log's segments hold %d frames, want %d", nframes, len(acks))
	}
	last := segs[len(segs)-1]
	if len(last.frames) < 2 {
		t.Fatalf("the last segment holds %d records; the test wants 2 or more", len(last.frames))
	}
	lastFrame := last.frames[len(last.frames)-1]
	prevFrame := last.frames[len(last.frames)-2]

	tails := []struct {
		name    string
		damage  func(t *testing.T, seg string)
		dropped int // records lost at the end
		at      walFrame
		what    string
	}{
		{"last record cut short", func(t *testing.T, seg string) {
			if err := os.Truncate(seg, lastFrame.payload()+int64(lastFrame.n/2)); err != nil {
				t.Fatal(err)
			}
		}, 1, lastFrame, "runs past the end of the data"},
		{"last record fails its CRC", func(t *testing.T, seg string) {
			flipByte(t, seg, lastFrame.payload()+int64(lastFrame.n/2))
		}, 1, lastFrame, "fails its CRC"},
		{"last write cut short in its first record", func(t *testing.T, seg string) {
			// A write of two records cut in the first: both go.
			if err := os.Truncate(seg, prevFrame.payload()+int64(prevFrame.n/3)); err != nil {
				t.Fatal(err)
			}
		}, 2, prevFrame, "runs past the end of the data"},
	}
	for _, tc := range tails {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, base)
			tc.damage(t, filepath.Join(dir, LogDir, last.name))

			// Offline, the damage reads as a torn tail, not corruption.
			problems, notes, _, err := CheckLog(dir, Options{})
			if err != nil || len(problems) != 0 || len(notes) != 1 || !strings.Contains(notes[0], "torn tail") {
				t.Fatalf("CheckLog of the damaged log = %q, notes %q, %v; want one torn tail noted, no problem and no error", problems, notes, err)
			}

			var logged syncBuffer
			s, err := Open(dir, tailOpts(slog.New(slog.NewTextHandler(&logged, nil))))
			if err != nil {
				t.Fatalf("Open on a torn tail: %v", err)
			}
			closed := false
			defer func() {
				if !closed {
					s.Close()
				}
			}()
			// One clear line: what, where, and that it was dropped.
			want := []string{"level=WARN", "torn tail", fmt.Sprintf("record %d at offset %d of %s", tc.at.index, tc.at.off, last.name), tc.what, "dropped it and everything after it",
				"segment=" + last.name, fmt.Sprintf("offset=%d", tc.at.off), fmt.Sprintf("index=%d", tc.at.index)}
			var line string
			for _, l := range strings.Split(logged.String(), "\n") {
				if strings.Contains(l, "torn tail") {
					line = l
				}
			}
			t.Logf("logged: %s", line)
			for _, w := range want {
				if !strings.Contains(line, w) {
					t.Errorf("the torn tail's log line lacks %q:\n%s", w, logged.String())
				}
			}

			kept, lost := acks[:len(acks)-tc.dropped], acks[len(acks)-tc.dropped:]
			if got, want := s.log.LastIndex(), kept[len(kept)-1].index; got != want {
				t.Errorf("log's last index after the repair = %d, want %d", got, want)
			}
			checkTail(t, s, kept, lost)

			// The repair is durable: the next Open finds nothing to drop.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if problems, _, _, err := CheckLog(dir, Options{}); err != nil || len(problems) > 0 {
				t.Errorf("CheckLog after the repair: %q, %v", problems, err)
			}
			var logged2 syncBuffer
			s, err = Open(dir, tailOpts(slog.New(slog.NewTextHandler(&logged2, nil))))
			if err != nil {
				t.Fatalf("Open after the repair: %v", err)
			}
			if strings.Contains(logged2.String(), "torn tail") {
				t.Errorf("the second Open found a torn tail again:\n%s", logged2.String())
			}
			checkTail(t, s, kept, lost)

			// Commits go on at the dropped records' indexes.
			next := lost[0]
			th, err := s.Thread(ctx, next.key)
			if err != nil {
				t.Fatal(err)
			}
			redo := storetest.Step(t, s, &th, next.key, states.Idle, func(th *engine.Thread) { th.Owner = "" })
			if redo.Revision != next.rev {
				t.Errorf("the commit after the repair has revision %d, want %d (the dropped one's)", redo.Revision, next.rev)
			}
			if got := s.log.LastIndex(); got != next.index {
				t.Errorf("the commit after the repair went to log record %d, want %d", got, next.index)
			}
			storetest.Step(t, s, redo, next.key, states.Bot, func(th *engine.Thread) { th.Owner = "app-after" })
			if got := s.log.LastIndex(); got != next.index+1 {
				t.Errorf("the second commit after the repair went to log record %d, want %d", got, next.index+1)
			}
			closed = true
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if problems, _, _, err := CheckLog(dir, Options{}); err != nil || len(problems) > 0 {
				t.Errorf("CheckLog after the new commits: %q, %v", problems, err)
			}
			s, err = Open(dir, tailOpts(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := s.Thread(ctx, next.key)
			if err != nil || got.Revision != next.rev+1 || got.State != states.Bot || got.Owner != "app-after" {
				t.Errorf("after reopening: %s = rev %d %s owner %q, %v; want rev %d bot owner app-after", next.key.PSID, got.Revision, got.State, got.Owner, err, next.rev+1)
			}
			if hs, _ := s.History(ctx, next.key, next.rev+1, 1); len(hs) != 1 || hs[0].To != states.Idle {
				t.Errorf("history %d after reopening = %+v, want the redone idle commit", next.rev, hs)
			}
			if p, err := s.Check(); err != nil || len(p) > 0 {
				t.Errorf("Check after reopening: %v %v", p, err)
			}
		})
	}

	corrupt := []struct {
		name string
		seg  walSegment
		at   walFrame
	}{
		{"a record in the middle of the last segment", last, prevFrame},
		{"a record of an earlier segment", segs[0], segs[0].frames[len(segs[0].frames)/2]},
	}
	for _, tc := range corrupt {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, base)
			seg := filepath.Join(dir, LogDir, tc.seg.name)
			flipByte(t, seg, tc.at.payload()+int64(tc.at.n/2))
			before := logFiles(t, dir)

			_, err := Open(dir, tailOpts(nil))
			if err == nil {
				t.Fatal("Open accepted a log corrupt in the middle")
			}
			for _, w := range []string{"not a torn tail", fmt.Sprintf("record %d at offset %d of %s", tc.at.index, tc.at.off, tc.seg.name)} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Open's error lacks %q: %v", w, err)
				}
			}
			t.Logf("Open: %v", err)
			if !errors.Is(err, wal.ErrCorrupt) {
				t.Errorf("Open's error %v does not wrap wal.ErrCorrupt", err)
			}
			if after := logFiles(t, dir); !maps.Equal(before, after) {
				t.Error("Open changed the log it refused")
			}
			if _, _, _, err := CheckLog(dir, Options{}); !errors.Is(err, wal.ErrCorrupt) {
				t.Errorf("CheckLog = %v, want wal.ErrCorrupt", err)
			}
		})
	}
}

// logFiles is the content of dir's log segments, by name.
func logFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	names, _ := filepath.Glob(filepath.Join(dir, LogDir, "*.wal"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		m[filepath.Base(n)] = string(b)
	}
	return m
}

// checkTail checks that the store holds exactly the kept commits: every
// one in its thread's history and each thread at its last kept revision,
// with nothing of the lost commits; and that Check finds nothing wrong.
func checkTail(t *testing.T, s *DB, kept, lost []tailAck) {
	t.Helper()
	lastKept := map[engine.ThreadKey]tailAck{}
	for _, a := range kept {
		lastKept[a.key] = a
		hs, err := s.History(ctx, a.key, a.rev+1, 1)
		if err != nil || len(hs) != 1 || hs[0].Revision != a.rev || hs[0].To != a.state {
			t.Errorf("commit %d (%s rev %d → %s) is not in the history: %+v, %v", a.i, a.key.PSID, a.rev, a.state, hs, err)
		}
	}
	for _, a := range lost {
		if hs, _ := s.History(ctx, a.key, 0, 1); len(hs) > 0 && hs[0].Revision >= a.rev {
			t.Errorf("dropped commit %d (%s rev %d) is in the history: %+v", a.i, a.key.PSID, a.rev, hs[0])
		}
	}
	for k, a := range lastKept {
		th, err := s.Thread(ctx, k)
		if err != nil || th.Revision != a.rev || th.State != a.state || th.Owner != tailOwner(a.i) {
			t.Errorf("thread %s = rev %d %s owner %q, %v; want rev %d %s owner %s (commit %d)", k.PSID, th.Revision, th.State, th.Owner, err, a.rev, a.state, tailOwner(a.i), a.i)
		}
	}
	if p, err := s.Check(); err != nil || len(p) > 0 {
		t.Errorf("Check: %v %v", p, err)
	}
}

// TestLogDiskStaysBounded commits a steady load until it has logged 10
// times the bound on the log's size, and checks throughout that the log directory holds a bounded
// number of segments and bytes: checkpoints release what bbolt holds.
func TestLogDiskStaysBounded(t *testing.T) {
	const (
		segSize = 64 << 10
		// The segment being written, and those a checkpoint has yet to
		// release: typically one, two when a checkpoint is slow (a busy
		// disk), and a spare.
		maxSegs    = 4
		maxBytes   = (maxSegs + 1) * segSize // and the next segment, prepared in the background
		writers    = 8
		threadsPer = 16
		// target is how much the load logs, many times the bound.
		target = 10 * maxBytes
	)
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentSize: segSize, CheckpointInterval: 2 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var (
		mu               sync.Mutex
		peakSegs, nSamps int
		peakBytes        int64
	)
	sample := func() {
		ents, err := os.ReadDir(filepath.Join(dir, LogDir))
		if err != nil {
			t.Error(err)
			return
		}
		segs, bytes := 0, int64(0)
		for _, e := range ents {
			info, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if strings.HasSuffix(e.Name(), ".wal") {
				segs++
			}
			bytes += info.Size()
		}
		mu.Lock()
		peakSegs, peakBytes = max(peakSegs, segs), max(peakBytes, bytes)
		nSamps++
		mu.Unlock()
	}
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				sample()
			}
		}
	}()

	start := time.Now()
	var wg sync.WaitGroup
	var commits atomic.Int64
	for g := range writers {
		wg.Go(func() {
			threads := make([]*engine.Thread, threadsPer)
			for i := 0; s.log.Stats().Bytes < target; i++ {
				j := i % threadsPer
				k := engine.ThreadKey{PageID: "100", PSID: fmt.Sprintf("73%02d%012d", g, j)}
				next := engine.Thread{PageID: k.PageID, PSID: k.PSID, Primary: states.PrimaryBot, CreatedAt: t0}
				if prev := threads[j]; prev != nil {
					next = *prev
				}
				next.Revision++
				next.State = []states.State{states.Bot, states.Agent}[next.Revision%2]
				next.Owner = fmt.Sprintf("app-%d", i)
				h := engine.HistoryEntry{Revision: next.Revision, At: t0, Event: states.CustomerMessage, To: next.State, Outcome: engine.OutcomeApplied, Reason: strings.Repeat("r", 200)}
				if err := s.Commit(ctx, &engine.Commit{Thread: &next, Expect: next.Revision - 1, History: []engine.HistoryEntry{h}}); err != nil {
					t.Errorf("commit %d of writer %d: %v", i, g, err)
					return
				}
				threads[j] = &next
				commits.Add(1)
				if i%50 == 0 {
					sample()
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	sample()

	st := s.log.Stats()
	t.Logf("%d commits in %v: %d bytes logged in %d records, %d rotations; peak %d segments, %d bytes in the log directory (%d samples)",
		commits.Load(), time.Since(start).Round(time.Millisecond), st.Bytes, st.Records, st.Rotations, peakSegs, peakBytes, nSamps)
	if peakSegs > maxSegs {
		t.Errorf("the log held %d segments at its peak, want at most %d", peakSegs, maxSegs)
	}
	if peakBytes > maxBytes {
		t.Errorf("the log directory held %d bytes at its peak, want at most %d", peakBytes, maxBytes)
	}
	if st.Rotations < target/segSize/2 {
		t.Errorf("%d bytes logged with %d new segments, want at least %d", st.Bytes, st.Rotations, target/segSize/2)
	}
	if p, err := s.Check(); err != nil || len(p) > 0 {
		t.Errorf("Check: %v %v", p, err)
	}
}

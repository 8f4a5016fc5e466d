package engine_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
)

// The crash child: with THREADCTL_CRASH_CHILD=<data dir>|<sim url> the test
// binary applies random events forever and prints "ack <psid> <revision>
// <event>" after each Apply that returned success, and "rotated <n>" when
// its log has started its n-th new segment; the parent kills it.
func TestMain(m *testing.M) {
	if spec := os.Getenv("THREADCTL_CRASH_CHILD"); spec != "" {
		dir, simURL, _ := strings.Cut(spec, "|")
		crashChild(dir, simURL)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var crashPSIDs = []string{"7100000000000001", "7100000000000002", "7100000000000003", "7100000000000004", "7100000000000005"}

// crashStoreOptions are the store's options in the crash test, child and
// parent: small log segments and checkpoints every 2 ms, so that kills land
// while a checkpoint is written to bbolt and around the log's rotations.
func crashStoreOptions(logger *slog.Logger) store.Options {
	return store.Options{SegmentSize: 16 << 10, CheckpointInterval: 2 * time.Millisecond, Logger: logger}
}

func crashEngine(dir, simURL string) (*store.DB, *engine.Engine, error) {
	db, err := store.Open(dir, crashStoreOptions(nil))
	if err != nil {
		return nil, nil, err
	}
	graph := &messenger.Client{BaseURL: simURL, Backoff: time.Millisecond, Credentials: func(string) (messenger.Credentials, bool) {
		return messenger.Credentials{AccessToken: "ringcx-page-token", AppSecret: "ringcx-secret"}, true
	}}
	eng, err := engine.New(engine.Config{Store: db, Graph: graph, PendingTimeout: 30 * time.Millisecond, RetryDelay: 20 * time.Millisecond})
	if err != nil {
		return nil, nil, err
	}
	if err := eng.SetPage(context.Background(), engine.Page{ID: pageID, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID}}); err != nil {
		return nil, nil, err
	}
	if err := eng.Start(context.Background()); err != nil {
		return nil, nil, err
	}
	return db, eng, nil
}

func crashChild(dir, simURL string) {
	_, eng, err := crashEngine(dir, simURL)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(out, "ready")
	out.Flush()
	ctx := context.Background()
	rotations, newest := 0, newestSegment(dir)
	for i := 0; ; i++ {
		psid := crashPSIDs[rand.IntN(len(crashPSIDs))]
		k := engine.ThreadKey{PageID: pageID, PSID: psid}
		var (
			ev  states.Event
			res engine.Result
			err error
		)
		switch rand.IntN(7) {
		case 0, 1:
			ev = states.CustomerMessage
			res, err = eng.Apply(ctx, engine.Input{Event: ev, Key: k, Cause: engine.CauseWebhook, Create: true, DedupKey: fmt.Sprintf("mid:%d:%d", os.Getpid(), i), Channel: engine.ChannelStandby})
		case 2:
			ev = states.HandoverToAgent
			res, err = eng.Apply(ctx, engine.Input{Event: ev, Key: k, Cause: engine.CauseBotsAPI})
		case 3:
			ev = states.HandoverToBot
			res, err = eng.Apply(ctx, engine.Input{Event: ev, Key: k, Cause: engine.CauseBotsAPI, AppID: botID})
		case 4:
			ev = states.AgentEngage
			_, res, err = eng.OpenIntervention(ctx, k)
		case 5:
			ev = states.AgentEngage
			_, err = eng.CreateContent(ctx, k, "hello "+strconv.Itoa(i))
			res.Outcome = "content"
		case 6:
			ev = states.InterventionClosed
			if th, terr := eng.Thread(ctx, k); terr == nil && th.Intervention != "" {
				_, res, err = eng.CloseIntervention(ctx, th.Intervention)
			} else {
				continue
			}
		}
		if err != nil || res.Outcome == "content" || res.Outcome == "" {
			continue
		}
		fmt.Fprintf(out, "ack %s %d %s\n", psid, res.Thread.Revision, ev)
		if seg := newestSegment(dir); seg != newest {
			newest = seg
			rotations++
			fmt.Fprintf(out, "rotated %d\n", rotations)
		}
		out.Flush()
	}
}

// newestSegment is the name of the newest segment of the log in the data
// directory dir (they are named by their first record, in fixed-width hex).
func newestSegment(dir string) string {
	segs, _ := filepath.Glob(filepath.Join(dir, store.LogDir, "*.wal"))
	if len(segs) == 0 {
		return ""
	}
	return filepath.Base(slices.Max(segs))
}

type ack struct {
	psid  string
	rev   uint64
	event states.Event
}

// TestCrashRecovery kills a child process applying events with SIGKILL at
// random moments, many times; every third kill comes right after the
// child's log started a new segment (while the next one is prepared, and
// before a checkpoint releases the old one). The child checkpoints every
// 2 ms, so kills also land while a checkpoint is written. After every kill
// the log must pass CheckLog (a torn tail is allowed: Open drops it), the
// store Check, every acknowledged event must be in its thread's history,
// and an engine started on the file must resolve what the crash left in
// flight.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer hook.Close()
	s := sim.New(sim.Options{RetryDelays: []time.Duration{}})
	defer s.Close()
	simSrv := httptest.NewServer(s.Handler())
	defer simSrv.Close()
	err := s.PutPage(sim.PageConfig{PageID: pageID, Mode: "hop_v2", PrimaryAppID: botID, Apps: []sim.AppConfig{
		{AppID: ringcxID, Name: "RingCX", AccessToken: "ringcx-page-token", AppSecret: "ringcx-secret", CallbackURL: hook.URL, Fields: []string{"messages", "messaging_handovers", "standby"}},
		{AppID: botID, Name: "Bot", AccessToken: "bot-page-token", AppSecret: "bot-secret", Fields: []string{"messages", "messaging_handovers", "standby"}, Bot: &sim.BotConfig{HonorRequests: true, Reply: "echo"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const rounds = 21
	var (
		total, inFlight int
		// What the kills hit, inferred from the files.
		rotations    int    // new segments the children started
		afterRotate  int    // kills right after a new segment started
		multiSeg     int    // kills that left more than one segment: one not yet released
		unckpt       int    // kills that left logged records bbolt did not hold
		unckptRecs   int    // those records, replayed by the next Open
		tornTails    int    // kills that cut a log write short
		firstLogLast uint64 // the log's last index after the first kill
		logLast      uint64
	)
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "THREADCTL_CRASH_CHILD="+dir+"|"+simSrv.URL)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acks := make(chan ack, 1024)
		ready := make(chan struct{})
		rotated := make(chan int, 1024)
		go func() {
			defer close(acks)
			sc := bufio.NewScanner(stdout)
			if !sc.Scan() || sc.Text() != "ready" {
				t.Errorf("round %d: the child did not start: %s", round, sc.Text())
				return
			}
			close(ready)
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				switch {
				case len(f) == 4 && f[0] == "ack":
					rev, _ := strconv.ParseUint(f[2], 10, 64)
					acks <- ack{psid: f[1], rev: rev, event: states.Event(f[3])}
				case len(f) == 2 && f[0] == "rotated":
					n, _ := strconv.Atoi(f[1])
					rotated <- n
				default:
					t.Errorf("child: %s", sc.Text())
				}
			}
		}()
		select {
		case <-ready:
		case <-acks: // closed: the child said something else first
			cmd.Process.Kill()
			t.FailNow()
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("round %d: the child did not start", round)
		}
		var n int
		if round%3 == 2 {
			select {
			case n = <-rotated:
				afterRotate++
			case <-time.After(2 * time.Second):
				t.Logf("round %d: the child started no new segment in 2 s; killed anyway", round)
			}
		} else {
			time.Sleep(time.Duration(rand.IntN(250)) * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		var got []ack
		for a := range acks {
			got = append(got, a)
		}
		cmd.Wait()
		close(rotated)
		for r := range rotated {
			n = r
		}
		rotations += n
		total += len(got)

		// Offline, before anything opens the directory: the log is sound.
		segs, _ := filepath.Glob(filepath.Join(dir, store.LogDir, "*.wal"))
		if len(segs) > 1 {
			multiSeg++
		}
		problems, notes, rep, err := store.CheckLog(dir, store.Options{})
		if err != nil {
			t.Fatalf("round %d: CheckLog after SIGKILL: %v", round, err)
		}
		for _, p := range problems {
			t.Fatalf("round %d: CheckLog after SIGKILL: %s", round, p)
		}
		for _, n := range notes {
			if !strings.HasPrefix(n, "log: torn tail") {
				t.Fatalf("round %d: CheckLog after SIGKILL notes %s", round, n)
			}
			tornTails++
			t.Logf("round %d: %s", round, n)
		}
		if round == 0 {
			firstLogLast = rep.LastIndex
		}
		logLast = rep.LastIndex

		var logged syncBuffer
		db, err := store.Open(dir, crashStoreOptions(slog.New(slog.NewTextHandler(&logged, nil))))
		if err != nil {
			t.Fatalf("round %d: reopening after SIGKILL: %v", round, err)
		}
		if m := replayedRE.FindStringSubmatch(logged.String()); m != nil {
			k, _ := strconv.Atoi(m[1])
			unckpt++
			unckptRecs += k
		}
		if problems, err := db.Check(); err != nil || len(problems) > 0 {
			t.Fatalf("round %d: check after SIGKILL: %v %v", round, problems, err)
		}
		for _, a := range got {
			hs, err := db.History(context.Background(), engine.ThreadKey{PageID: pageID, PSID: a.psid}, a.rev+1, 1)
			if err != nil || len(hs) == 0 || hs[0].Revision != a.rev {
				t.Fatalf("round %d: acknowledged %s rev %d of %s is not in the history (%v, %v)", round, a.event, a.rev, a.psid, hs, err)
			}
			if e := hs[0]; e.Event != a.event && e.Event != states.OwnerObserved {
				t.Errorf("round %d: %s rev %d is %s, acknowledged %s", round, a.psid, a.rev, e.Event, a.event)
			}
		}
		crashed, _ := db.Intents(context.Background())
		inFlight += len(crashed)
		db.Close()
		// Recovery on restart: intents are resolved, and the file stays valid.
		db, eng, err := crashEngine(dir, simSrv.URL)
		if err != nil {
			t.Fatalf("round %d: restart: %v", round, err)
		}
		eng.Close()
		// Every intent the crash left is resolved. (Work the restart began
		// and Close interrupted may leave new ones, for the next start.)
		left, _ := db.Intents(context.Background())
		for _, in := range crashed {
			if slices.ContainsFunc(left, func(l engine.Intent) bool { return l.Key == in.Key && l.Revision == in.Revision }) {
				t.Errorf("round %d: the intent of %s at revision %d (%s) is left after recovery", round, in.Key, in.Revision, in.Call)
			}
		}
		if problems, err := db.Check(); err != nil || len(problems) > 0 {
			t.Fatalf("round %d: check after recovery: %v %v", round, problems, err)
		}
		db.Close()
	}
	t.Logf("%d rounds, %d acknowledged events checked, %d Graph calls in flight at a kill resolved on restart", rounds, total, inFlight)
	t.Logf("the log: records %d…%d over the rounds, %d new segments started; %d kills right after one started, %d left a segment not yet released, %d cut a write short",
		firstLogLast, logLast, rotations, afterRotate, multiSeg, tornTails)
	t.Logf("checkpoints: %d of %d kills left logged records bbolt did not hold (%d records in all, replayed on reopening)", unckpt, rounds, unckptRecs)
	if total == 0 {
		t.Error("the child acknowledged nothing")
	}
	if rotations == 0 || afterRotate == 0 {
		t.Errorf("no kill came near a rotation (%d new segments, %d kills right after one): the test does not do what it says", rotations, afterRotate)
	}
	if unckpt == 0 {
		t.Error("no kill left records to replay: the test does not exercise the checkpoint")
	}
}

// replayedRE finds, in what store.Open logged, how many log records it
// replayed past bbolt's checkpoint.
var replayedRE = regexp.MustCompile(`msg="replayed the log past the checkpoint" records=(\d+)`)

// syncBuffer is a bytes.Buffer the store's goroutines may log to.
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

package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// TestScale is issue #14's scale driver (make scale). SPEC.md §5: one node
// must stay flat as threads grow — restart time and memory after a restart
// must not grow with the number of threads. For a small store (SCALE_SMALL,
// 20 000 threads) and a large one (SCALE_THREADS, 1 000 000), in one run, it
//
//   - loads the threads through the engine (Receive, as the webhook handler
//     calls it, with a Graph fake that is never called): each thread gets
//     the load generator's pass_thread_control to RingCX, then take and
//     pass alternately, SCALE_EVENTS events in all (3: three history
//     entries; the thread ends with an agent and a 24 h control timer);
//   - closes the engine and the store, evicts the data files from the page
//     cache (posix_fadvise, these files only) and starts the built binary,
//     `threadctl serve` with its demo defaults, on the data directory:
//     restart time is until /readyz answers 200; memory is
//     /proc/<pid>/status right then, and what the start read from storage
//     /proc/<pid>/io;
//   - times GET /debug/threads?state=agent&limit=50;
//   - then, small and large in turn SCALE_ROUNDS times (the machine's speed
//     drifts), restarts the binary warm and measures durable webhooks
//     through HTTP with the load generator (-mode webhook, SCALE_CALLERS
//     callers for SCALE_DURATION over all the threads);
//   - restarts it with a short prune interval and times the retention
//     pruner's first pass (SCALE_PRUNE=0: not);
//   - reports the files' size, per thread and per history entry, and bbolt's
//     own accounting of each bucket, whatever the records' encoding.
//
// It prints one table with the ratios the issue sets targets for. It runs
// only when SCALE_THREADS is set; all of it listens on loopback, and the
// data (under SCALE_DIR, default the temporary directory) is removed unless
// SCALE_KEEP is set. SCALE_PROFILE=dir saves the binary's heap profile
// after ready and its CPU profile during the first webhooks of each size.
func TestScale(t *testing.T) {
	if os.Getenv("SCALE_THREADS") == "" {
		t.Skip("scale driver: set SCALE_THREADS (make scale)")
	}
	cfg := scaleConfig{
		small:    envInt(t, "SCALE_SMALL", 20_000),
		large:    envInt(t, "SCALE_THREADS", 1_000_000),
		events:   envInt(t, "SCALE_EVENTS", 3),
		callers:  envInt(t, "SCALE_CALLERS", 64),
		duration: envDuration(t, "SCALE_DURATION", 10*time.Second),
		maxDisk:  envFloat(t, "SCALE_DISK_FRACTION", 0.4),
		rounds:   envInt(t, "SCALE_ROUNDS", 2),
		prune:    os.Getenv("SCALE_PRUNE") != "0",
		profile:  os.Getenv("SCALE_PROFILE"),
	}
	cfg.bin = scaleBinary(t)
	cfg.loadgen = scaleLoadgen(t)
	parent := os.Getenv("SCALE_DIR")
	if parent == "" {
		parent = os.TempDir()
	}
	root, err := os.MkdirTemp(parent, "threadctl-scale-")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("SCALE_KEEP") == "" {
		t.Cleanup(func() { os.RemoveAll(root) })
	}
	if cfg.profile != "" {
		if err := os.MkdirAll(cfg.profile, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	t.Logf("machine: %d CPUs; data under %s", cpuCount(), root)
	smallDir, largeDir := filepath.Join(root, "small"), filepath.Join(root, "large")
	small := loadAndRestart(t, cfg, smallDir, cfg.small)
	// The large store must fit: estimated from the small one's file bytes
	// per thread (which overstate a large store's) and its log (a segment,
	// whatever the size), it may take at most maxDisk of the free space.
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		t.Fatal(err)
	}
	free := float64(st.Bavail) * float64(st.Bsize)
	need := 1.1*float64(small.dbBytes)/float64(small.threads)*float64(cfg.large) + float64(small.logBytes)
	t.Logf("large store: about %.1f GB expected, %.1f GB free", need/1e9, free/1e9)
	if need > cfg.maxDisk*free {
		t.Fatalf("%d threads would need about %.1f GB, over %.0f %% of the %.1f GB free: not run", cfg.large, need/1e9, 100*cfg.maxDisk, free/1e9)
	}
	large := loadAndRestart(t, cfg, largeDir, cfg.large)

	// Webhooks, small and large in turn: the machine's speed drifts (its
	// disk, and on a shared machine its other work), so each size is run
	// rounds times and the ratio is of the means.
	for round := range cfg.rounds {
		for _, r := range []*scaleResult{small, large} {
			dir := map[*scaleResult]string{small: smallDir, large: largeDir}[r]
			t.Logf("== webhooks on %d threads, round %d", r.threads, round+1)
			p := startServe(t, cfg, dir, nil)
			if round == 0 {
				r.warm = p.start
			}
			r.warmReady = append(r.warmReady, p.start.ready)
			prof := ""
			if cfg.profile != "" && round == 0 {
				prof = filepath.Join(cfg.profile, fmt.Sprintf("cpu-webhooks-%d.pprof", r.threads))
			}
			r.webhook = append(r.webhook, runLoadgen(t, cfg, p, r.threads, prof))
			r.rssAfterLoad = readMem(t, p.cmd.Process.Pid)
			r.stopAfter = p.stop(t)
		}
	}
	for _, r := range []*scaleResult{small, large} {
		dir := map[*scaleResult]string{small: smallDir, large: largeDir}[r]
		if cfg.prune {
			t.Logf("== the pruner on %d threads", r.threads)
			r.prune = measurePrune(t, cfg, dir)
			r.warmReady = append(r.warmReady, r.prune.ready)
		}
		r.buckets = bucketStats(t, filepath.Join(dir, FileName))
		r.historyEntries = r.buckets["history"].keys
		if got := r.buckets["threads"].keys; got < r.threads {
			t.Errorf("%d threads in the file after the run, want at least %d", got, r.threads)
		}
	}
	printScale(os.Stdout, cfg, small, large)
}

type scaleConfig struct {
	small, large, events, callers int
	rounds                        int // webhook runs of each size
	duration                      time.Duration
	maxDisk                       float64
	bin, loadgen                  string
	prune                         bool   // measure the retention pruner's first pass
	profile                       string // a directory for the binary's profiles
}

// scaleResult is what one size measured.
type scaleResult struct {
	threads, events int
	load            time.Duration

	dbBytes, logBytes int64 // after the load and a clean shutdown
	buckets           map[string]bucketUse
	historyEntries    int

	cold, warm   startResult
	warmReady    []time.Duration // every warm restart's
	listFirst    time.Duration
	listMedian   time.Duration
	webhook      []loadgenResult // one per round
	rssAfterLoad procMem
	stopAfter    time.Duration
	prune        *pruneResult
}

func (r *scaleResult) bytesPerThread() float64 {
	return float64(r.dbBytes+r.logBytes) / float64(r.threads)
}

// webhookRate is the mean of the load generator's runs.
func (r *scaleResult) webhookRate() float64 {
	sum := 0.0
	for _, w := range r.webhook {
		sum += w.rate
	}
	return sum / float64(len(r.webhook))
}

type bucketUse struct {
	keys  int
	bytes int64 // of the pages allocated to the bucket
}

// startResult is one start of the binary, until /readyz answered 200.
type startResult struct {
	ready  time.Duration
	mem    procMem // right after ready
	readIO int64   // bytes the process caused to be read from storage
	majflt int64   // major page faults (bbolt's mmap read from storage)
	cpu    time.Duration
}

type procMem struct{ rss, anon, file, hwm int64 } // bytes

type loadgenResult struct {
	rate     float64
	pressure float64 // the machine's CPU pressure meanwhile: % of time some task waited for a CPU
	ok, errs int
	p50, p99 time.Duration
	written  int64 // bytes the server caused to be written to storage meanwhile
	// bytes the data directory's disk wrote meanwhile (/proc/diskstats:
	// everyone's, the file system's journal included); -1 when unknown
	device int64
}

// pruneResult is the retention pruner's first pass over the whole store.
type pruneResult struct {
	ready   time.Duration // the start's, warm
	pass    time.Duration // from an interval after ready to the pass's end
	cpu     time.Duration // the process's CPU time meanwhile
	readIO  int64
	mem     procMem // after the pass
	timeout bool
}

// loadAndRestart loads n threads into dir, restarts the binary on it cold
// and lists threads.
func loadAndRestart(t *testing.T, cfg scaleConfig, dir string, n int) *scaleResult {
	t.Logf("== %d threads", n)
	r := &scaleResult{threads: n, events: n * cfg.events}
	start := time.Now()
	loadScale(t, dir, n, cfg.events)
	r.load = time.Since(start)
	t.Logf("loaded %d threads (%d events) in %v: %.0f events/s", n, r.events, r.load.Round(time.Second), float64(r.events)/r.load.Seconds())
	r.dbBytes, r.logBytes = dataSizes(t, dir)

	// A cold restart: the data files out of the page cache.
	evict(t, dir)
	p := startServe(t, cfg, dir, nil)
	defer p.stop(t)
	r.cold = p.start
	if cfg.profile != "" {
		saveProfile(t, p.addr, "heap", filepath.Join(cfg.profile, fmt.Sprintf("heap-after-ready-%d.pprof", n)))
	}
	var listed int
	r.listFirst, listed = listAgents(t, p.addr)
	if listed != 50 {
		t.Errorf("the list of agent threads has %d threads, want 50", listed)
	}
	var lists []time.Duration
	for range 5 {
		d, _ := listAgents(t, p.addr)
		lists = append(lists, d)
	}
	slices.Sort(lists)
	r.listMedian = lists[len(lists)/2]
	return r
}

// measurePrune starts the binary with a short prune interval and waits for
// the pruner's first pass over the store (at most 15 minutes).
func measurePrune(t *testing.T, cfg scaleConfig, dir string) *pruneResult {
	const interval = 2 * time.Second
	conf := dir + "-prune.yaml"
	if err := os.WriteFile(conf, fmt.Appendf(nil, "retention: {prune_interval: %v}\n", interval), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, cfg, dir, []string{"--config", conf})
	defer p.stop(t)
	r := &pruneResult{ready: p.start.ready}
	readyAt := time.Now()
	pid := p.cmd.Process.Pid
	_, cpu0 := readStat(pid)
	io0 := readIOBytes(pid)
	for deadline := readyAt.Add(15 * time.Minute); ; {
		if last := metric(t, p.addr, "threadctl_prune_last_run_timestamp_seconds"); last > 0 {
			r.pass = time.Unix(0, int64(last*1e9)).Sub(readyAt.Add(interval))
			break
		}
		if time.Now().After(deadline) {
			r.timeout, r.pass = true, time.Since(readyAt)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, cpu1 := readStat(pid)
	r.cpu = cpu1 - cpu0
	r.readIO = readIOBytes(pid) - io0
	r.mem = readMem(t, pid)
	t.Logf("  first prune pass: %v, cpu %v, read %s, rss %s (anon %s, file %s)", r.pass.Round(time.Millisecond), r.cpu,
		mb(r.readIO), mb(r.mem.rss), mb(r.mem.anon), mb(r.mem.file))
	return r
}

// ---- loading

// scaleGraph is Meta's Graph API, which the loading never calls: the events
// it sends (pass and take webhooks) make no call.
type scaleGraph struct{}

var errScaleGraph = errors.New("scale loading makes no Graph calls")

func (scaleGraph) PassThreadControl(context.Context, string, string, string, string) error {
	return errScaleGraph
}
func (scaleGraph) TakeThreadControl(context.Context, string, string, string) error {
	return errScaleGraph
}
func (scaleGraph) RequestThreadControl(context.Context, string, string, string) error {
	return errScaleGraph
}
func (scaleGraph) ReleaseThreadControl(context.Context, string, string) error { return errScaleGraph }
func (scaleGraph) ExtendThreadControl(context.Context, string, string, time.Duration) error {
	return errScaleGraph
}
func (scaleGraph) ThreadOwner(context.Context, string, string) (string, time.Time, error) {
	return "", time.Time{}, errScaleGraph
}
func (scaleGraph) SendText(context.Context, string, string, string) (string, error) {
	return "", errScaleGraph
}
func (scaleGraph) FeatureStatus(context.Context, string) (bool, bool, error) {
	return false, false, errScaleGraph
}

// The demo page of `threadctl serve` (SPEC.md §7), which the binary is
// started with, and the load generator's thread ids.
const (
	scalePage   = "100000000000001"
	scaleRingCX = "200000000000001"
	scaleBot    = "300000000000001"
)

func scalePSID(i int) string { return fmt.Sprintf("77%014d", i) }

// loadScale creates n threads in dir through the engine, events webhook
// events each, and checks the state counts the store keeps.
func loadScale(t *testing.T, dir string, n, events int) {
	ctx := context.Background()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The pruner is left out of the loading (a pass reads the whole,
	// growing history); the measured binary runs it as usual.
	eng, err := engine.New(engine.Config{Store: s, Graph: scaleGraph{}, PruneInterval: 1000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	page := engine.Page{ID: scalePage, Primary: states.PrimaryBot, RingCXAppID: scaleRingCX, BotAppIDs: []string{scaleBot},
		PendingTimeout: 60 * time.Second, Routing: states.HandoverProtocol}
	if err := eng.SetPage(ctx, page); err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Workers each send webhooks of chunk threads, a thread's events in
	// order in one call; the calls' commits share the log's syncs.
	const workers, chunk = 8, 64
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	var progressMu sync.Mutex
	progress := time.Now()
	for range workers {
		wg.Go(func() {
			notices := make([]engine.Notice, 0, chunk*events)
			for failed.Load() == nil {
				first := int(next.Add(chunk)) - chunk
				if first >= n {
					return
				}
				base := time.Now().Truncate(time.Millisecond)
				notices = notices[:0]
				for i := first; i < min(first+chunk, n); i++ {
					for j := range events {
						nt := engine.Notice{PageID: scalePage, PSID: scalePSID(i), Channel: engine.ChannelMessaging,
							Kind: engine.NoticePass, Time: base.Add(time.Duration(j) * time.Millisecond),
							PrevOwner: scaleBot, NewOwner: scaleRingCX}
						if j%2 == 1 {
							nt.Kind, nt.PrevOwner, nt.NewOwner = engine.NoticeTake, scaleRingCX, scaleBot
						}
						notices = append(notices, nt)
					}
				}
				if err := eng.Receive(ctx, notices); err != nil {
					failed.Store(err)
					return
				}
				progressMu.Lock()
				if time.Since(progress) > time.Minute {
					progress = time.Now()
					t.Logf("  loading: %d of %d threads", min(first+chunk, n), n)
				}
				progressMu.Unlock()
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatalf("loading: %v", err)
	}
	for eng.Backlog() > 0 {
		time.Sleep(10 * time.Millisecond)
	}
	counts, err := s.StateCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eng.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, c := range counts {
		total += c
	}
	if total != n {
		t.Fatalf("state counts %v: %d threads, want %d", counts, total, n)
	}
	if events%2 == 1 && counts[states.Agent] != n {
		t.Fatalf("state counts %v: want all %d threads in %s", counts, n, states.Agent)
	}
}

// ---- the binary

// scaleBinary builds threadctl, unless SCALE_BIN names a built one.
func scaleBinary(t *testing.T) string {
	if bin := os.Getenv("SCALE_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "threadctl")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/threadctl/threadctl")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building threadctl: %v\n%s", err, out)
	}
	return bin
}

// scaleLoadgen builds the load generator (SCALE_LOADGEN: its directory, or
// a built binary; by default shared/bench/loadgen beside the repository).
func scaleLoadgen(t *testing.T) string {
	src := os.Getenv("SCALE_LOADGEN")
	if src == "" {
		for _, d := range []string{"../../shared/bench/loadgen", "../../../shared/bench/loadgen"} {
			if _, err := os.Stat(filepath.Join(d, "main.go")); err == nil {
				src = d
				break
			}
		}
	}
	if src == "" {
		t.Fatal("the load generator was not found: set SCALE_LOADGEN to its directory or binary")
	}
	if fi, err := os.Stat(src); err == nil && !fi.IsDir() {
		return src
	}
	bin := filepath.Join(t.TempDir(), "loadgen")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the load generator in %s: %v\n%s", src, err, out)
	}
	return bin
}

// serveProc is a running `threadctl serve`.
type serveProc struct {
	cmd   *exec.Cmd
	dir   string
	addr  string
	log   string
	start startResult
	done  chan error
}

// startServe starts the binary on dir, as `threadctl serve` with its demo
// defaults on loopback ports (and extra arguments), and waits for /readyz
// to answer 200.
func startServe(t *testing.T, cfg scaleConfig, dir string, extra []string) *serveProc {
	addr, simAddr := freeAddr(t), freeAddr(t)
	logPath := dir + ".log"
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := append([]string{"serve", "--addr", addr, "--data-dir", dir, "--sim-addr", simAddr, "--log-level", "warn"}, extra...)
	cmd := exec.Command(cfg.bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "THREADCTL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	p := &serveProc{cmd: cmd, dir: dir, addr: addr, log: logPath, done: make(chan error, 1)}
	client := &http.Client{Timeout: time.Second}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	for deadline := begin.Add(10 * time.Minute); ; {
		select {
		case err := <-p.done:
			t.Fatalf("threadctl serve exited before it was ready: %v\n%s", err, tail(logPath))
		default:
		}
		if resp, err := client.Get("http://" + addr + "/readyz"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			p.cmd.Process.Kill()
			t.Fatalf("threadctl serve not ready after %v\n%s", time.Since(begin), tail(logPath))
		}
		time.Sleep(2 * time.Millisecond)
	}
	p.start.ready = time.Since(begin)
	pid := cmd.Process.Pid
	p.start.mem = readMem(t, pid)
	p.start.readIO = readIOBytes(pid)
	p.start.majflt, p.start.cpu = readStat(pid)
	t.Logf("  ready in %v: rss %s (anon %s, file %s); read %s from storage, %d major faults, cpu %v",
		p.start.ready.Round(time.Millisecond), mb(p.start.mem.rss), mb(p.start.mem.anon), mb(p.start.mem.file),
		mb(p.start.readIO), p.start.majflt, p.start.cpu)
	return p
}

// stop ends the process as a service manager would (SIGTERM) and returns
// how long its shutdown took.
func (p *serveProc) stop(t *testing.T) time.Duration {
	begin := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("threadctl serve: %v\n%s", err, tail(p.log))
		}
	case <-time.After(5 * time.Minute):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("threadctl serve did not stop within 5 minutes\n%s", tail(p.log))
	}
	return time.Since(begin)
}

// listAgents times one GET /debug/threads?state=agent&limit=50 and returns
// how many threads it listed.
func listAgents(t *testing.T, addr string) (time.Duration, int) {
	req, _ := http.NewRequest("GET", "http://"+addr+"/debug/threads?state=agent&limit=50", nil)
	req.Header.Set("Authorization", "Bearer dev-token")
	begin := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Threads []json.RawMessage `json:"threads"`
	}
	err = json.NewDecoder(resp.Body).Decode(&list)
	d := time.Since(begin)
	if resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("listing threads: status %d, %v", resp.StatusCode, err)
	}
	return d, len(list.Threads)
}

var loadgenLine = regexp.MustCompile(`ok=(\d+) errors=(\d+) rate=(\d+)/s p50=(\S+) p99=(\S+)`)

// runLoadgen sends durable webhooks over all n threads, and with a profile
// path records the binary's CPU profile meanwhile.
func runLoadgen(t *testing.T, cfg scaleConfig, p *serveProc, n int, profile string) loadgenResult {
	addr := p.addr
	var wg sync.WaitGroup
	if profile != "" {
		secs := max(int(cfg.duration.Seconds())-2, 1)
		wg.Go(func() { saveProfile(t, addr, fmt.Sprintf("profile?seconds=%d", secs), profile) })
	}
	psi0 := cpuPressure()
	_, written0 := readIO(p.cmd.Process.Pid)
	device0 := deviceWritten(p.dir)
	begin := time.Now()
	out, err := exec.Command(cfg.loadgen, "-mode", "webhook", "-url", "http://"+addr,
		"-c", strconv.Itoa(cfg.callers), "-d", cfg.duration.String(), "-threads", strconv.Itoa(n)).CombinedOutput()
	wg.Wait()
	if err != nil {
		t.Fatalf("load generator: %v\n%s", err, out)
	}
	m := loadgenLine.FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("load generator said: %s", out)
	}
	var r loadgenResult
	_, written1 := readIO(p.cmd.Process.Pid)
	r.written = written1 - written0
	r.device = -1
	if device1 := deviceWritten(p.dir); device0 >= 0 && device1 >= 0 {
		r.device = device1 - device0
	}
	if psi0 >= 0 {
		r.pressure = 100 * float64(cpuPressure()-psi0) / float64(time.Since(begin).Microseconds())
	}
	r.ok, _ = strconv.Atoi(m[1])
	r.errs, _ = strconv.Atoi(m[2])
	r.rate, _ = strconv.ParseFloat(m[3], 64)
	r.p50, _ = time.ParseDuration(m[4])
	r.p99, _ = time.ParseDuration(m[5])
	t.Logf("  %s (cpu pressure %.0f %%; %s written, %.0f B an event; the disk wrote %.0f B an event)", strings.TrimSpace(string(out)), r.pressure,
		mb(r.written), float64(r.written)/float64(max(r.ok, 1)), float64(r.device)/float64(max(r.ok, 1)))
	if r.errs > 0 {
		t.Errorf("the load generator saw %d errors", r.errs)
	}
	return r
}

// saveProfile writes one of the binary's pprof profiles to path.
func saveProfile(t *testing.T, addr, profile, path string) {
	req, _ := http.NewRequest("GET", "http://"+addr+"/debug/pprof/"+profile, nil)
	req.Header.Set("Authorization", "Bearer dev-token")
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		t.Errorf("profile %s: %v", profile, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("profile %s: status %d, %v", profile, resp.StatusCode, err)
	}
}

// metric reads one unlabelled value from /metrics.
func metric(t *testing.T, addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// ---- what the files hold

func dataSizes(t *testing.T, dir string) (db, log int64) {
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	db = fi.Size()
	filepath.WalkDir(filepath.Join(dir, LogDir), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				log += fi.Size()
			}
		}
		return nil
	})
	return db, log
}

// bucketStats is bbolt's accounting of each bucket: keys, and the bytes of
// the pages they occupy.
func bucketStats(t *testing.T, path string) map[string]bucketUse {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string]bucketUse{}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			s := b.Stats()
			out[string(name)] = bucketUse{keys: s.KeyN, bytes: int64(s.BranchAlloc + s.LeafAlloc + s.InlineBucketInuse)}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// evict drops dir's files from the page cache, so that the next start reads
// them from storage as after a reboot. Other files are left alone.
func evict(t *testing.T, dir string) {
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			t.Logf("fdatasync %s: %v", path, err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			t.Logf("evicting %s from the page cache: %v", path, err)
		}
		return nil
	})
}

// ---- /proc

func readMem(t *testing.T, pid int) procMem {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var m procMem
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = kb << 10
		case "RssAnon:":
			m.anon = kb << 10
		case "RssFile:":
			m.file = kb << 10
		case "VmHWM:":
			m.hwm = kb << 10
		}
	}
	return m
}

// readIOBytes is what a process caused to be read from storage.
func readIOBytes(pid int) int64 {
	read, _ := readIO(pid)
	return read
}

// readIO is what a process caused to be read from and written to storage.
func readIO(pid int) (read, written int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "read_bytes":
			read = n
		case "write_bytes":
			written = n
		}
	}
	return read, written
}

// deviceWritten is what the disk holding dir has written since boot, from
// /proc/diskstats (sectors of 512 bytes), or -1 when that is not known.
// Unlike /proc/<pid>/io's write_bytes, which counts pages as the process
// dirties them, this is what reached the device: the journal and every
// other writer included.
func deviceWritten(dir string) int64 {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return -1
	}
	major, minor := unix.Major(st.Dev), unix.Minor(st.Dev)
	b, err := os.ReadFile("/proc/diskstats")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[0] != strconv.FormatUint(uint64(major), 10) || f[1] != strconv.FormatUint(uint64(minor), 10) {
			continue
		}
		sectors, err := strconv.ParseInt(f[9], 10, 64)
		if err != nil {
			return -1
		}
		return sectors * 512
	}
	return -1
}

// readStat returns a process's major page faults and CPU time (user and
// system).
func readStat(pid int) (majflt int64, cpu time.Duration) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 <= len(s) {
		s = s[i+2:]
	}
	// From the state (the line's 3rd field) on: majflt is the 10th,
	// utime the 12th, stime the 13th, in clock ticks of 10 ms.
	f := strings.Fields(s)
	if len(f) < 13 {
		return -1, 0
	}
	majflt, _ = strconv.ParseInt(f[9], 10, 64)
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return majflt, time.Duration(ut+st) * 10 * time.Millisecond
}

// cpuPressure is the machine's total time, in µs, during which some task
// waited for a CPU (/proc/pressure/cpu), or -1.
func cpuPressure() int64 {
	b, err := os.ReadFile("/proc/pressure/cpu")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "total="); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// ---- the table

func printScale(w io.Writer, cfg scaleConfig, s, l *scaleResult) {
	type row struct{ name, small, large, ratio, goal string }
	var rows []row
	add := func(name string, f func(r *scaleResult) string, ratio func(r *scaleResult) float64, goal string) {
		rw := row{name: name, small: f(s), goal: goal}
		if l != nil {
			rw.large = f(l)
			if ratio != nil {
				rw.ratio = fmt.Sprintf("%.2f×", ratio(l)/ratio(s))
			}
		}
		rows = append(rows, rw)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }
	ms1 := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/1e6) }
	mem := func(m procMem) string { return fmt.Sprintf("%s (%s / %s)", mb(m.rss), mb(m.anon), mb(m.file)) }

	add("threads", func(r *scaleResult) string { return strconv.Itoa(r.threads) }, nil, "")
	add("load through the engine", func(r *scaleResult) string {
		return fmt.Sprintf("%v, %.0f ev/s", r.load.Round(time.Second), float64(r.events)/r.load.Seconds())
	}, nil, "")
	add("bbolt file + log", func(r *scaleResult) string { return mb(r.dbBytes) + " + " + mb(r.logBytes) }, nil, "")
	add("  bytes per thread (file + log)", func(r *scaleResult) string {
		return fmt.Sprintf("%.0f B", r.bytesPerThread())
	}, nil, "")
	add("  bytes per thread (file)", func(r *scaleResult) string {
		return fmt.Sprintf("%.0f B", float64(r.dbBytes)/float64(r.threads))
	}, nil, "")
	add("  history entries after the run", func(r *scaleResult) string { return strconv.Itoa(r.historyEntries) }, nil, "")
	add("  history bucket per entry", func(r *scaleResult) string {
		return fmt.Sprintf("%.0f B", float64(r.buckets["history"].bytes)/float64(r.historyEntries))
	}, nil, "")
	add("restart to /readyz, cold cache", func(r *scaleResult) string { return ms(r.cold.ready) },
		func(r *scaleResult) float64 { return float64(r.cold.ready) }, "≤ 1 s, ≤ 2×")
	add("restart to /readyz, warm: median of", func(r *scaleResult) string {
		var all []string
		for _, d := range r.warmReady {
			all = append(all, fmt.Sprintf("%.0f", float64(d)/1e6))
		}
		return strings.Join(all, ", ") + " ms"
	}, func(r *scaleResult) float64 { return float64(median(r.warmReady)) }, "≤ 1 s, ≤ 2×")
	add("  read from storage (cold)", func(r *scaleResult) string {
		return fmt.Sprintf("%s, %d majflt", mb(r.cold.readIO), r.cold.majflt)
	}, nil, "")
	add("  CPU until ready (cold)", func(r *scaleResult) string { return ms(r.cold.cpu) }, nil, "")
	add("RSS after ready, cold (anon / file)", func(r *scaleResult) string { return mem(r.cold.mem) },
		func(r *scaleResult) float64 { return float64(r.cold.mem.rss) }, "≤ 1.5×")
	add("RSS after ready, warm (anon / file)", func(r *scaleResult) string { return mem(r.warm.mem) },
		func(r *scaleResult) float64 { return float64(r.warm.mem.rss) }, "≤ 1.5×")
	add("  peak RSS until ready (cold)", func(r *scaleResult) string { return mb(r.cold.mem.hwm) }, nil, "")
	add("list 50 agent threads: first / median", func(r *scaleResult) string {
		return ms1(r.listFirst) + " / " + ms1(r.listMedian)
	}, func(r *scaleResult) float64 { return float64(r.listMedian) }, "")
	add(fmt.Sprintf("webhooks/s, %d callers, %v", cfg.callers, cfg.duration), func(r *scaleResult) string {
		var rates []string
		for _, w := range r.webhook {
			rates = append(rates, fmt.Sprintf("%.0f", w.rate))
		}
		return strings.Join(rates, ", ")
	}, (*scaleResult).webhookRate, "≥ 0.8×")
	add("  p50 / p99 (first round)", func(r *scaleResult) string { return ms1(r.webhook[0].p50) + " / " + ms1(r.webhook[0].p99) }, nil, "")
	add("  written to storage per webhook", func(r *scaleResult) string {
		var all []string
		for _, w := range r.webhook {
			all = append(all, fmt.Sprintf("%.0f", float64(w.written)/float64(max(w.ok, 1))))
		}
		return strings.Join(all, ", ") + " B"
	}, func(r *scaleResult) float64 {
		var written, ok int64
		for _, w := range r.webhook {
			written, ok = written+w.written, ok+int64(w.ok)
		}
		return float64(written) / float64(ok)
	}, "")
	add("  the disk wrote per webhook (all writers)", func(r *scaleResult) string {
		var all []string
		for _, w := range r.webhook {
			if w.device < 0 {
				return "unknown"
			}
			all = append(all, fmt.Sprintf("%.0f", float64(w.device)/float64(max(w.ok, 1))))
		}
		return strings.Join(all, ", ") + " B"
	}, nil, "")
	add("  CPU pressure during each", func(r *scaleResult) string {
		var ps []string
		for _, w := range r.webhook {
			ps = append(ps, fmt.Sprintf("%.0f %%", w.pressure))
		}
		return strings.Join(ps, ", ")
	}, nil, "")
	add("RSS after the last webhooks (anon / file)", func(r *scaleResult) string { return mem(r.rssAfterLoad) }, nil, "")
	add("shutdown after the last webhooks", func(r *scaleResult) string { return ms(r.stopAfter) }, nil, "")
	if cfg.prune {
		add("first prune pass: time, CPU", func(r *scaleResult) string {
			s := fmt.Sprintf("%v, %v", r.prune.pass.Round(100*time.Millisecond), r.prune.cpu.Round(100*time.Millisecond))
			if r.prune.timeout {
				s = "> " + s
			}
			return s
		}, func(r *scaleResult) float64 { return float64(r.prune.pass) }, "")
		add("  read; RSS after it (anon / file)", func(r *scaleResult) string {
			return mb(r.prune.readIO) + "; " + mem(r.prune.mem)
		}, nil, "")
	}

	head := row{"measure", "small", "large", "large/small", "target"}
	var width [5]int
	for _, r := range append([]row{head}, rows...) {
		for i, c := range []string{r.name, r.small, r.large, r.ratio, r.goal} {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(r row) {
		var b strings.Builder
		for i, c := range []string{r.name, r.small, r.large, r.ratio, r.goal} {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	fmt.Fprintf(w, "\nthreadctl scale: %d CPUs, %d events per thread loaded\n", cpuCount(), cfg.events)
	line(head)
	for _, r := range rows {
		line(r)
	}
	fmt.Fprintln(w, "\nbbolt buckets after each store's run: keys, bytes of their pages")
	var names []string
	for name := range s.buckets {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-14s %10d %10s", name, s.buckets[name].keys, mb(s.buckets[name].bytes))
		if l != nil {
			fmt.Fprintf(w, "   %10d %10s", l.buckets[name].keys, mb(l.buckets[name].bytes))
		}
		fmt.Fprintln(w)
	}
}

// ---- small helpers

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

func cpuCount() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return -1
	}
	return set.Count()
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(v, "_", ""))
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func envFloat(t *testing.T, name string, def float64) float64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return f
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a duration", name, v)
	}
	return d
}

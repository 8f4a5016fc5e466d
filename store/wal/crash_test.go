package wal

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashRecord is the content of record i of Append seq of goroutine g in
// child round r.
func crashRecord(r, g, seq, i int) string {
	return fmt.Sprintf("r%d g%d s%d i%d %s", r, g, seq, i, strings.Repeat("z", (seq*37+i*11)%500))
}

// TestCrashChild is the process TestCrashRecovery kills: it appends from four
// goroutines, printing "A <last index> <round> <goroutine> <seq> <records>"
// after each acknowledged Append and "R <n>" after each rotation it notices.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("WAL_CRASH_DIR")
	if dir == "" {
		t.Skip("the child process of TestCrashRecovery")
	}
	time.AfterFunc(20*time.Second, func() { os.Exit(3) }) // an orphan ends
	round, _ := strconv.Atoi(os.Getenv("WAL_CRASH_ROUND"))
	l, err := Open(dir, Options{SegmentSize: 8192})
	if err != nil {
		fmt.Printf("E %v\n", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	rotations := uint64(0)
	fmt.Printf("O %d\n", l.LastIndex())
	for g := range 4 {
		go func() {
			for seq := 0; ; seq++ {
				n := 1 + seq%2
				recs := make([][]byte, n)
				for i := range recs {
					recs[i] = []byte(crashRecord(round, g, seq, i))
				}
				last, err := l.Append(recs...)
				if err != nil {
					fmt.Printf("E %v\n", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Printf("A %d %d %d %d %d\n", last, round, g, seq, n)
				if r := l.Stats().Rotations; r != rotations {
					rotations = r
					fmt.Printf("R %d\n", r)
				}
				mu.Unlock()
			}
		}()
	}
	select {}
}

// TestCrashRecovery kills a child appending to a log with SIGKILL at random
// moments, some right after a rotation, and checks after each kill that every
// acknowledged record is there, intact, and that appends go on.
func TestCrashRecovery(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	acked := map[uint64]string{}
	start := time.Now()
	for round := 0; round < 6; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), "WAL_CRASH_DIR="+dir, "WAL_CRASH_ROUND="+strconv.Itoa(round))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		// Even rounds: kill a random time after the child opened the log;
		// odd rounds: right after the child sees its second rotation.
		var timer <-chan time.Time
		afterRotations := 0
		if round%2 == 1 {
			afterRotations = 2
		}
		killed := false
		kill := func() {
			if !killed {
				cmd.Process.Kill() // SIGKILL
				killed = true
			}
		}
		var n, rots int
		giveUp := time.After(5 * time.Second)
	read:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break read
				}
				f := strings.Fields(line)
				switch f[0] {
				case "E":
					kill()
					t.Fatalf("child: %s", line)
				case "O":
					if round%2 == 0 {
						timer = time.After(time.Duration(20+rng.IntN(250)) * time.Millisecond)
					}
				case "R":
					rots++
					if afterRotations > 0 && rots >= afterRotations {
						kill()
					}
				case "A":
					v := make([]int, 4)
					var last uint64
					last, _ = strconv.ParseUint(f[1], 10, 64)
					for i := range 4 {
						v[i], _ = strconv.Atoi(f[2+i])
					}
					for i := range v[3] {
						acked[last-uint64(v[3]-1-i)] = crashRecord(v[0], v[1], v[2], i)
					}
					n++
				}
			case <-timer:
				kill()
			case <-giveUp:
				kill()
			}
		}
		cmd.Wait()

		l, err := Open(dir, Options{SegmentSize: 8192})
		if err != nil {
			t.Fatalf("round %d: Open after SIGKILL: %v", round, err)
		}
		for _, p := range l.Report().Problems {
			t.Logf("round %d: %s", round, p)
		}
		got := map[uint64]string{}
		for _, e := range readAll(t, l, l.FirstIndex()) {
			got[e.index] = string(e.rec)
		}
		for idx, rec := range acked {
			if got[idx] != rec {
				t.Fatalf("round %d: acknowledged record %d %q replays as %q", round, idx, rec, got[idx])
			}
		}
		t.Logf("round %d: killed after %d acknowledged appends and %d rotations; log has records %d..%d, %d segments",
			round, n, rots, l.FirstIndex(), l.LastIndex(), l.Report().Segments)
		if n == 0 {
			t.Errorf("round %d: the child acknowledged nothing", round)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

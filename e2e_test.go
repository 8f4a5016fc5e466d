package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/threadctl/threadctl/diagrams"
	"github.com/threadctl/threadctl/states"
)

// binary is threadctl built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "threadctl-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "threadctl")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building threadctl:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running threadctl binary.
type proc struct {
	cmd     *exec.Cmd
	dataDir string
	addr    string // http://host:port
	simURL  string
	logs    chan string
	done    chan error
}

// startBinary runs `threadctl serve` on loopback ports and waits until it
// logs where it listens.
func startBinary(t *testing.T, dataDir string, args ...string) *proc {
	t.Helper()
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--sim-addr", "127.0.0.1:0", "--data-dir", dataDir, "--log-format", "json"}, args...)
	cmd := exec.Command(binary, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, dataDir: dataDir, logs: make(chan string, 1000), done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil {
				switch rec["msg"] {
				case "threadctl serving":
					p.addr = "http://" + strings.Replace(fmt.Sprint(rec["addr"]), "[::]", "127.0.0.1", 1)
				case "messenger simulator serving":
					p.simURL = "http://" + fmt.Sprint(rec["addr"])
					close(ready)
				}
			}
			select {
			case p.logs <- line:
			default:
			}
		}
	}()
	go func() { p.done <- cmd.Wait() }()
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("threadctl exited before serving: %v\n%s", err, drain(p.logs))
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("threadctl did not start\n%s", drain(p.logs))
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

func drain(c chan string) string {
	var b strings.Builder
	for {
		select {
		case l := <-c:
			b.WriteString(l + "\n")
		default:
			return b.String()
		}
	}
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("threadctl exited with %v\n%s", err, drain(p.logs))
		}
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		t.Errorf("threadctl did not stop on SIGTERM")
	}
}

func (p *proc) endpoints() diagrams.Endpoints {
	return diagrams.Endpoints{Threadctl: p.addr, Sim: p.simURL, Token: demoAPIToken, PageID: demoPageID, RingCXAppID: demoRingCXAppID, BotAppID: demoBotAppID}
}

// TestSeedWorkflowsEndToEnd plays the four workflows of the seed's pictures
// through the built binary's HTTP APIs and the simulator's customer
// endpoint, checking after each step threadctl's state, the simulator's
// owner and what reached the customer; then stops the binary with SIGTERM
// and checks the file.
func TestSeedWorkflowsEndToEnd(t *testing.T) {
	for i, w := range diagrams.Workflows {
		t.Run(w.Name, func(t *testing.T) {
			dir := t.TempDir()
			routing, takeover := "hop", "off"
			if w.Routing == states.ConversationRouting {
				routing = "cr"
			}
			if w.Takeover {
				takeover = "on"
			}
			p := startBinary(t, dir, "--demo-primary", string(w.Primary), "--demo-routing", routing, "--demo-takeover", takeover)
			psid := fmt.Sprintf("79%014d", i)
			trace, err := diagrams.Play(context.Background(), w, p.endpoints(), psid)
			if err != nil {
				if trace != nil {
					t.Log(trace.Text())
				}
				t.Fatalf("%s: %v", w.Name, err)
			}
			checks := 0
			for _, it := range trace.Items {
				if it.Check != "" {
					checks++
				}
			}
			if checks != len(w.Steps) {
				t.Errorf("%d checks for %d steps", checks, len(w.Steps))
			}
			p.stop(t)
			out, err := exec.Command(binary, "check", "--data-dir", dir).CombinedOutput()
			if err != nil || !strings.Contains(string(out), ": ok") {
				t.Errorf("threadctl check: %v\n%s", err, out)
			}
		})
	}
}

// TestBinaryCommands covers the CLI around a running service: inspect,
// simulate and the errors of bad flags and configs.
func TestBinaryCommands(t *testing.T) {
	p := startBinary(t, t.TempDir())
	psid := "7990000000000099"
	resp, err := http.Post(p.simURL+"/_sim/pages/"+demoPageID+"/customers/"+psid+"/messages", "application/json", strings.NewReader(`{"text":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.Post(p.simURL+"/_sim/settle", "", nil)

	out, err := exec.Command(binary, "inspect", psid, "--server", p.addr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "state             bot") || !strings.Contains(string(out), "customer_message") {
		t.Errorf("inspect: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "inspect", "123", "--server", p.addr).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "404") {
		t.Errorf("inspect of an unknown identity: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "simulate", "agent-interrupts-bot").CombinedOutput()
	if err != nil || strings.Count(string(out), "✓") != 4 {
		t.Errorf("simulate: %v\n%s", err, out)
	}
	out, err = exec.Command(binary, "simulate", "nope").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bot-primary, ringcx-primary, no-primary, agent-interrupts-bot") {
		t.Errorf("simulate nope: %v\n%s", err, out)
	}

	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte("pages:\n  - page_id: \"1\"\n    primary: ed\n    ringcx_app_id: \"2\"\n    bot_app_ids: [\"3\"]\n    pending_timout: 5s\n"), 0o600)
	out, err = exec.Command(binary, "serve", "--config", cfg).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "pending_timout") {
		t.Errorf("serve with a misspelt field: %v\n%s", err, out)
	}
	os.WriteFile(cfg, []byte("pages:\n  - page_id: \"1\"\n    primary: ed\n    ringcx_app_id: \"2\"\n    bot_app_ids: [\"3\"]\n"), 0o600)
	out, err = exec.Command(binary, "serve", "--config", cfg).CombinedOutput()
	for _, want := range []string{"unknown primary \"ed\"", "page_token is required", "ringcx_app_secret is required"} {
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("serve with a bad page: want %q in %v\n%s", want, err, out)
		}
	}
	out, err = exec.Command(binary, "serve", "--addr").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "flag needs an argument") {
		t.Errorf("serve --addr: %v\n%s", err, out)
	}
	out, _ = exec.Command(binary, "serve", "-h").CombinedOutput()
	if !strings.Contains(string(out), "--demo-primary") && !strings.Contains(string(out), "-demo-primary") {
		t.Errorf("serve -h:\n%s", out)
	}
}

// TestRestartKeepsThreads stops the binary and starts it again on the same
// data directory: the thread and its history are still there.
func TestRestartKeepsThreads(t *testing.T) {
	dir := t.TempDir()
	p := startBinary(t, dir)
	w, _ := diagrams.FindWorkflow("bot-primary")
	w.Steps = w.Steps[:2] // the customer writes, the bot hands over
	if _, err := diagrams.Play(context.Background(), w, p.endpoints(), "7990000000000001"); err != nil {
		t.Fatal(err)
	}
	p.stop(t)
	p = startBinary(t, dir)
	req, _ := http.NewRequest(http.MethodGet, p.addr+"/debug/threads/7990000000000001", nil)
	req.Header.Set("Authorization", "Bearer dev-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var v struct {
		State       string `json:"state"`
		Revision    int    `json:"revision"`
		Transitions []any  `json:"transitions"`
	}
	json.Unmarshal(body, &v)
	if v.State != "agent" || v.Revision != 3 || len(v.Transitions) != 3 {
		t.Errorf("after restart: %s", body)
	}
}

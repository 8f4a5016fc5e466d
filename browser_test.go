package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/threadctl/threadctl/diagrams"
)

// chromiumPath is Debian's chromium, which the browser test drives.
const chromiumPath = "/usr/bin/chromium"

// TestBrowserDebugPage plays the start of the "agent interrupts bot" workflow
// against the built binary, then opens GET /debug/ in headless Chromium as an
// operator would: the list shows the thread in agent, a click opens the
// thread view, whose visible text and diagram are checked. A full-page
// screenshot of each page is kept in $THREADCTL_ARTIFACTS (default
// ./artifacts).
func TestBrowserDebugPage(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("THREADCTL_REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("Chromium is required (THREADCTL_REQUIRE_CHROMIUM=1) but %s is missing: apt-get install chromium", chromiumPath)
		}
		t.Skipf("%s is missing: install the Debian package chromium to run the browser test (THREADCTL_REQUIRE_CHROMIUM=1 makes this a failure)", chromiumPath)
	}
	start := time.Now()
	p := startBinary(t, t.TempDir())

	w, err := diagrams.FindWorkflow("agent-interrupts-bot")
	if err != nil {
		t.Fatal(err)
	}
	w.Steps = w.Steps[:2] // the customer writes to the bot, an agent opens an intervention
	const psid = "7990000000000042"
	// The whole test, browser included, is bounded.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if trace, err := diagrams.Play(ctx, w, p.endpoints(), psid); err != nil {
		if trace != nil {
			t.Log(trace.Text())
		}
		t.Fatal(err)
	}
	intervention := interventionOf(t, p, psid)

	dir := artifactsDir(t)
	browser := newBrowser(t, ctx)
	// The first Run starts the browser, which lives until ctx ends; each
	// step below has its own shorter timeout.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 10*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 10*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("reading the text of %s: %v", sel, err)
		}
		return strings.Join(strings.Fields(s), " ") // as one line

	}
	screenshot := func(name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(browser, 10*time.Second)
		defer cancel()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}

	// The list.
	step("opening the list", chromedp.Navigate(p.addr+"/debug/?access_token="+demoAPIToken),
		chromedp.WaitVisible(chromedp.CSS("table.threads")))
	row := text(`table.threads tbody tr`)
	for _, want := range []string{psid, demoPageID, "agent", demoRingCXAppID, "RingCX", "yes"} {
		if !strings.Contains(row, want) {
			t.Errorf("the list's row reads %q, want it to show %q", row, want)
		}
	}
	if got := text(`table.threads tbody tr .badge`); got != "agent" {
		t.Errorf("state badge = %q, want agent", got)
	}
	screenshot("debug-list.png")

	// A click opens the thread view, the token kept in the link.
	step("opening the thread", chromedp.Click(chromedp.CSS(`table.threads a[href*="`+psid+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#history")))
	url, err := chromedp.Run(browser, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(url, "/debug/threads/"+psid+"/view") || !strings.Contains(url, "access_token="+demoAPIToken) {
		t.Errorf("the thread view's address is %s, want /debug/threads/%s/view with the access token", url, psid)
	}
	if got := text("#state"); got != "agent" {
		t.Errorf("state badge = %q, want agent", got)
	}
	if got := text("#intervention"); !strings.Contains(got, intervention) {
		t.Errorf("the intervention card reads %q, want the intervention %s", got, intervention)
	}
	if got := text("#pending"); !strings.Contains(got, "None") {
		t.Errorf("the pending request card reads %q, want none (the bot passed control)", got)
	}
	history := text("#history")
	// Newest first: the bot passing control, the agent engaging (RingCX
	// requests control), the customer's message.
	last := -1
	for _, want := range []string{"control_passed", "pending-request → agent", "agent_engage", "bot → pending-request", "request_thread_control", "customer_message", "idle → bot"} {
		i := strings.Index(history, want)
		if i < 0 {
			t.Errorf("the history does not show %q:\n%s", want, history)
			continue
		}
		if i < last {
			t.Errorf("the history shows %q out of order (newest first):\n%s", want, history)
		}
		last = i
	}
	checkDiagram(t, browser)
	screenshot("debug-thread.png")

	// Back to the list, still authenticated.
	step("back to the list", chromedp.Click(chromedp.CSS(".crumbs a")), chromedp.WaitVisible(chromedp.CSS("table.threads")))
	if row := text(`table.threads tbody tr`); !strings.Contains(row, psid) {
		t.Errorf("back on the list, the row reads %q", row)
	}
	t.Logf("browser test took %v", time.Since(start).Round(time.Millisecond))
}

// checkDiagram checks that the thread view shows the state diagram with the
// agent state highlighted: Graphviz's inline SVG, or the Mermaid source when
// Graphviz is not installed.
func checkDiagram(t *testing.T, browser context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(browser, 10*time.Second)
	defer cancel()
	// The fill of each state node of the SVG, by the node's title.
	fills, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`(() => {
		const out = {};
		for (const g of document.querySelectorAll('#diagram svg g.node')) {
			const shape = g.querySelector('path, polygon, ellipse');
			out[g.querySelector('title').textContent] = shape ? shape.getAttribute('fill') : '';
		}
		return out;
	})()`))
	if err != nil {
		t.Fatalf("reading the diagram: %v", err)
	}
	if len(fills) == 0 {
		mermaid, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#diagram")))
		if err != nil {
			t.Fatalf("reading the diagram: %v", err)
		}
		if os.Getenv("THREADCTL_REQUIRE_GRAPHVIZ") == "1" {
			t.Fatalf("no SVG diagram (THREADCTL_REQUIRE_GRAPHVIZ=1):\n%s", mermaid)
		}
		if !strings.Contains(mermaid, "Graphviz") || !strings.Contains(mermaid, "class agent current") {
			t.Errorf("without Graphviz the diagram card should say so and show the Mermaid source with agent marked:\n%s", mermaid)
		}
		t.Log("Graphviz is not installed: checked the Mermaid fallback")
		return
	}
	for _, st := range []string{"idle", "bot", "agent", "pending-request"} {
		fill, ok := fills[st]
		switch {
		case !ok:
			t.Errorf("the diagram has no %s node (nodes: %v)", st, fills)
		case st == "agent" && fill != "#ffd54f":
			t.Errorf("the agent node is filled %q, want the highlight #ffd54f", fill)
		case st != "agent" && fill == "#ffd54f":
			t.Errorf("the %s node is highlighted too", st)
		}
	}
}

// newBrowser starts headless Chromium on a fresh profile, kept off the
// network but for loopback. It is stopped when the test ends.
func newBrowser(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1000),
	)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc() // waits for Chromium to exit, before t.TempDir's cleanup
	})
	return browser
}

// interventionOf reads the id of the thread's open intervention from the
// JSON debug endpoint.
func interventionOf(t *testing.T, p *proc, psid string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.addr+"/debug/threads/"+psid, nil)
	req.Header.Set("Authorization", "Bearer "+demoAPIToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		State        string `json:"state"`
		Intervention *struct {
			ID string `json:"id"`
		} `json:"intervention"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if v.Intervention == nil || v.State != "agent" {
		t.Fatalf("after the agent opened an intervention: state %s, intervention %v; want agent with one open", v.State, v.Intervention)
	}
	return v.Intervention.ID
}

// artifactsDir is where test artefacts go: $THREADCTL_ARTIFACTS, or
// artifacts/ in the repository.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("THREADCTL_ARTIFACTS")
	if dir == "" {
		dir = "artifacts"
	}
	dir, err := filepath.Abs(dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatalf("artefacts directory: %v", err)
	}
	return dir
}

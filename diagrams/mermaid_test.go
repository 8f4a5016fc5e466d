package diagrams

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/threadctl/threadctl/states"
)

const chromium = "/usr/bin/chromium"

// TestMermaidRenders has Mermaid itself (the npm package, in a headless
// Chromium) render every Mermaid diagram threadctl writes: golden tests
// compare text, only Mermaid can say the text is a diagram.
func TestMermaidRenders(t *testing.T) {
	script := filepath.Join("testdata", "mermaid", "node_modules", "mermaid", "dist", "mermaid.min.js")
	if _, err := os.Stat(script); err != nil {
		if os.Getenv("THREADCTL_REQUIRE_THIRDPARTY") == "1" {
			t.Fatalf("%s is missing: run npm ci --prefix diagrams/testdata/mermaid", script)
		}
		t.Skipf("%s is missing (npm ci --prefix diagrams/testdata/mermaid)", script)
	}
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("THREADCTL_REQUIRE_CHROMIUM") == "1" {
			t.Fatalf("%s is missing: apt-get install chromium", chromium)
		}
		t.Skipf("%s is missing", chromium)
	}
	sources := map[string]string{"highlight": Mermaid(states.HOP(states.PrimaryBot), highlight), "sequence": trace.SequenceMermaid()}
	for _, p := range states.Tables {
		sources[p.Name()] = Mermaid(p, nil)
	}
	docs, _ := filepath.Glob(filepath.Join("..", "docs", "workflows", "*.mmd"))
	for _, f := range docs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sources[filepath.Base(f)] = string(b)
	}
	if len(docs) == 0 {
		t.Error("no recorded workflow under docs/workflows")
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`<!doctype html><meta charset="utf-8"><script src="/mermaid.min.js"></script><body></body>`))
	})
	mux.HandleFunc("/mermaid.min.js", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, script) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium), chromedp.Flag("headless", true), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-quic", true), chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.UserDataDir(t.TempDir()))
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browser, chromedp.Navigate(srv.URL), chromedp.WaitReady(chromedp.CSS("body"))); err != nil {
		t.Fatalf("opening the page: %v", err)
	}
	if _, err := chromedp.Run(browser, chromedp.Evaluate[bool](`mermaid.initialize({startOnLoad: false}), true`)); err != nil {
		t.Fatalf("loading Mermaid: %v", err)
	}
	i := 0
	for name, src := range sources {
		i++
		t.Run(name, func(t *testing.T) {
			js, _ := json.Marshal(src)
			expr := `mermaid.render("d` + string(rune('a'+i%26)) + `" + Date.now(), ` + string(js) + `).then(r => r.svg.length)`
			n, err := chromedp.Run(browser, chromedp.Evaluate[int](expr, chromedp.EvalAwaitPromise))
			if err != nil {
				t.Fatalf("Mermaid refuses it: %v\n%s", err, src)
			}
			if n < 1000 {
				t.Errorf("Mermaid drew an SVG of %d bytes", n)
			}
		})
	}
}

package server_test

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/states"
)

// ---- The debug HTML page (SPEC.md §3.4): GET /debug/ and the thread view.

var (
	// html/template writes every attribute in double quotes.
	linkRE   = regexp.MustCompile(`(?:href|action)="([^"]*)"`)
	formRE   = regexp.MustCompile(`<form `)
	hiddenRE = regexp.MustCompile(`<input type="hidden" name="access_token" value="([^"]*)">`)
	// rowRE finds the thread list's rows by their link to the thread view.
	rowRE = regexp.MustCompile(`<td data-label="Identity"><a class="mono" href="/debug/threads/([^/"]+)/view`)
	revRE = regexp.MustCompile(`id="rev-(\d+)"`)
)

// checkHTML checks a debug page's status and headers, and returns its body.
func checkHTML(t *testing.T, r reply, wantStatus int) string {
	t.Helper()
	if r.status != wantStatus {
		t.Errorf("HTTP status = %d, want %d", r.status, wantStatus)
	}
	for k, want := range map[string]string{
		"Content-Type":    "text/html; charset=UTF-8",
		"Cache-Control":   "no-store",
		"Referrer-Policy": "no-referrer",
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q, want default-src 'none'", csp)
	}
	body := string(r.body)
	if !strings.HasPrefix(body, "<!doctype html>") || !strings.Contains(body, "</html>") {
		t.Errorf("body is not a whole HTML page:\n%.300s", body)
	}
	// Nothing is loaded from elsewhere and no script runs.
	for _, bad := range []string{"<script", "<link ", "<img", "<iframe", " src=", `href="http`, "url(", "@import"} {
		if strings.Contains(strings.ToLower(body), bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
	return body
}

// mainOf is the page without its head and style, for messages.
func mainOf(body string) string {
	if _, after, ok := strings.Cut(body, "<main>"); ok {
		body, _, _ = strings.Cut(after, "</main>")
	}
	return strings.TrimSpace(body)
}

// links returns the page's link and form targets, unescaped.
func links(body string) []string {
	var out []string
	for _, m := range linkRE.FindAllStringSubmatch(body, -1) {
		out = append(out, html.UnescapeString(m[1]))
	}
	return out
}

// checkToken checks that every link and form of the page carries the API
// token, or, when token is "", that none does.
func checkToken(t *testing.T, body, token string) {
	t.Helper()
	if token == "" {
		if strings.Contains(body, "access_token") {
			t.Errorf("a page opened with a Bearer token mentions access_token:\n%s", mainOf(body))
		}
		return
	}
	ls := links(body)
	if len(ls) == 0 {
		t.Fatalf("the page has no links")
	}
	for _, l := range ls {
		u, err := url.Parse(l)
		if err != nil || u.Host != "" || !strings.HasPrefix(u.Path, "/") {
			t.Errorf("link %q is not a path on this server", l)
			continue
		}
		if u.Path == "/debug/" && u.RawQuery == "" && strings.Contains(body, `action="`+l+`"`) {
			continue // a form: its hidden field carries the token
		}
		if got := u.Query().Get("access_token"); got != token {
			t.Errorf("link %q has access_token %q, want %q", l, got, token)
		}
	}
	forms, hidden := len(formRE.FindAllString(body, -1)), hiddenRE.FindAllStringSubmatch(body, -1)
	if len(hidden) != forms {
		t.Errorf("%d forms, %d with the token in a hidden field", forms, len(hidden))
	}
	for _, h := range hidden {
		if h[1] != token {
			t.Errorf("hidden access_token = %q, want %q", h[1], token)
		}
	}
}

// noRedirects answers redirects instead of following them.
func (f *fixture) noRedirects(t *testing.T, target string) *http.Response {
	t.Helper()
	c := *f.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get(f.url + target)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestDebugPageList(t *testing.T) {
	f := newFixture(t)
	var bots, agents []string
	ms := time.Now().UnixMilli()
	for range 2 {
		psid := newPSID()
		bots = append(bots, psid)
		checkSuccess(t, f.postWebhook(t, customerWebhook(psid, "m_page_"+psid, time.UnixMilli(ms)), ringcxSecret))
	}
	psid := newPSID()
	agents = append(agents, psid)
	body := fmt.Sprintf(`{"object":"page","entry":[{"id":"%s","time":%d,"messaging":[{"sender":{"id":"%s"},"recipient":{"id":"%s"},"timestamp":%d,"pass_thread_control":{"previous_owner_app_id":%s,"new_owner_app_id":%s}}]}]}`,
		pageID, ms, psid, pageID, ms, botID, ringcxID)
	checkSuccess(t, f.postWebhook(t, []byte(body), ringcxSecret))
	all := append(slices.Clone(bots), agents...)
	slices.Sort(all)
	tok := "access_token=" + apiToken

	tests := []struct {
		name      string
		target    string
		header    http.Header
		wantRows  []string
		wantToken string
		want      []string // parts of the body
	}{
		{"token in the query", "/debug/?" + tok, nil, all, apiToken,
			[]string{`<option value="" selected>all states</option>`, `<span class="badge st-agent">agent</span>`, `<span class="badge st-bot">bot</span>`, "RingCX", ">no<", "3 shown"}},
		{"Bearer token", "/debug/", bearer(apiToken), all, "", nil},
		{"state=agent", "/debug/?state=agent&" + tok, nil, agents, apiToken,
			[]string{`<option value="agent" selected>agent</option>`, "Clear filters"}},
		{"state=bot and page_id", "/debug/?state=bot&page_id=" + pageID + "&" + tok, nil, bots, apiToken,
			[]string{`<option value="` + pageID + `" selected>` + pageID + ` (primary bot)</option>`}},
		{"state=idle", "/debug/?state=idle&" + tok, nil, nil, apiToken, []string{"No threads match these filters"}},
		{"another page", "/debug/?page_id=100000000000999&" + tok, nil, nil, apiToken,
			[]string{`<option value="100000000000999" selected>100000000000999 (not configured)</option>`}},
		{"a hostile filter is escaped", "/debug/?page_id=" + url.QueryEscape(`"><script>alert(1)</script>`) + "&" + tok, nil, nil, apiToken,
			[]string{`<option value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" selected>&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt; (not configured)</option>`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := checkHTML(t, f.do(t, http.MethodGet, tc.target, tc.header, nil), http.StatusOK)
			var rows []string
			for _, m := range rowRE.FindAllStringSubmatch(body, -1) {
				rows = append(rows, m[1])
			}
			if !slices.Equal(rows, tc.wantRows) {
				t.Errorf("rows %v, want %v", rows, tc.wantRows)
			}
			checkToken(t, body, tc.wantToken)
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("the page lacks %s", w)
				}
			}
		})
	}

	t.Run("next page", func(t *testing.T) {
		var rows []string
		target := "/debug/?state=bot&limit=1&" + tok
		for pages := 0; target != "" && pages < 5; pages++ {
			body := checkHTML(t, f.do(t, http.MethodGet, target, nil, nil), http.StatusOK)
			checkToken(t, body, apiToken)
			m := rowRE.FindAllStringSubmatch(body, -1)
			if len(m) != 1 {
				t.Fatalf("page %d has %d rows, want 1", pages+1, len(m))
			}
			rows = append(rows, m[0][1])
			if pages > 0 && !strings.Contains(body, "First page") {
				t.Errorf("page %d has no link to the first page", pages+1)
			}
			target = ""
			if next := regexp.MustCompile(`<a href="([^"]*)" rel="next">`).FindStringSubmatch(body); next != nil {
				target = html.UnescapeString(next[1])
				u, _ := url.Parse(target)
				if q := u.Query(); q.Get("cursor") == "" || q.Get("state") != "bot" || q.Get("limit") != "1" {
					t.Errorf("next page link %s does not keep the filter or lacks the cursor", target)
				}
			}
		}
		if !slices.Equal(rows, bots) {
			t.Errorf("pages show %v, want %v", rows, bots)
		}
	})

	t.Run("bad filter", func(t *testing.T) {
		for _, tc := range []struct{ query, want string }{
			{"state=sleeping", `unknown state &#34;sleeping&#34;`},
			{"limit=0", `limit=&#34;0&#34; must be a number from 1 to 500`},
		} {
			body := checkHTML(t, f.do(t, http.MethodGet, "/debug/?"+tc.query+"&"+tok, nil, nil), http.StatusBadRequest)
			if !strings.Contains(body, tc.want) {
				t.Errorf("%s: the error page lacks %s:\n%s", tc.query, tc.want, mainOf(body))
			}
			checkToken(t, body, apiToken)
		}
	})

	t.Run("auth", func(t *testing.T) {
		checkEnvelope(t, f.do(t, http.MethodGet, "/debug/", nil, nil), http.StatusUnauthorized, "missing access token")
		checkEnvelope(t, f.do(t, http.MethodGet, "/debug/?access_token=nope", nil, nil), http.StatusUnauthorized, "invalid access token")
	})

	t.Run("redirects", func(t *testing.T) {
		for _, tc := range []struct {
			target     string
			wantStatus int
			wantTo     string
		}{
			{"/debug?state=bot&" + tok, http.StatusMovedPermanently, "/debug/?state=bot&" + tok},
			{"/debug/?identity=" + agents[0] + "&" + tok, http.StatusSeeOther, "/debug/threads/" + agents[0] + "/view?" + tok},
		} {
			resp := f.noRedirects(t, tc.target)
			if resp.StatusCode != tc.wantStatus || resp.Header.Get("Location") != tc.wantTo {
				t.Errorf("GET %s = %d to %q, want %d to %q", tc.target, resp.StatusCode, resp.Header.Get("Location"), tc.wantStatus, tc.wantTo)
			}
		}
	})
}

func TestDebugPageThread(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	// The reference bot's pass fails: RingCX's request stays pending and the
	// agent's reply is queued.
	f.sim.SetFault(sim.Fault{Call: "pass_thread_control", Status: 500, AppID: botID})
	iv := f.openIntervention(t, psid)
	f.waitState(t, psid, states.Pending, botID)
	const hostile = `<script>alert("owned")</script> & <b>bold</b>`
	r := f.api(t, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {psid}, "body": {hostile}})
	if r.status != http.StatusCreated {
		t.Fatalf("create content = %v", r)
	}
	ct := decode[contentJSON](t, r)
	f.settle(t)

	view := "/debug/threads/" + psid + "/view"
	tok := "access_token=" + apiToken
	body := checkHTML(t, f.do(t, http.MethodGet, view+"?"+tok, nil, nil), http.StatusOK)
	checkToken(t, body, apiToken)

	t.Run("what it shows", func(t *testing.T) {
		for _, want := range []string{
			`id="state">pending-request</span>`,
			pageID, botID, iv.ID, ct.ID, "opened",
			"request_thread_control", "agent_engage", "customer_message", "no_change",
			// the escaped hostile body
			`&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;`,
			// available events in pending-request, primary bot
			`<span class="chip">control_passed</span>`, `<span class="chip">request_expired</span>`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("the thread view lacks %s", want)
			}
		}
		if strings.Contains(body, "<b>bold") {
			t.Errorf("the content body is not escaped")
		}
		if !regexp.MustCompile(`>(59|60) s left<`).MatchString(body) {
			t.Errorf("the pending request does not show the time left of a 60 s deadline")
		}
		if got := revRE.FindAllStringSubmatch(body, -1); len(got) != 3 || got[0][1] != "3" || got[2][1] != "1" {
			t.Errorf("history entries %v, want revisions 3, 2, 1", got)
		}
	})

	t.Run("links", func(t *testing.T) {
		ls := links(body)
		for _, want := range []string{
			"/debug/?" + tok,
			"/debug/threads/" + psid + "?" + tok + "&page_id=" + pageID,
			"/diagrams/threads/" + psid + ".svg?" + tok + "&page_id=" + pageID,
		} {
			if !slices.Contains(ls, want) {
				t.Errorf("no link to %s in %v", want, ls)
			}
		}
	})

	t.Run("diagram", func(t *testing.T) {
		if _, err := exec.LookPath("dot"); err != nil {
			if os.Getenv("THREADCTL_REQUIRE_GRAPHVIZ") == "1" {
				t.Fatal("Graphviz's dot is required (THREADCTL_REQUIRE_GRAPHVIZ=1) but not installed")
			}
			t.Skip("Graphviz's dot is not installed (the Debian package graphviz)")
		}
		if strings.Contains(body, "<?xml") || strings.Contains(body, "<!DOCTYPE svg") {
			t.Errorf("the inline SVG keeps its XML prologue")
		}
		fills := map[string]string{}
		for _, m := range regexp.MustCompile(`<g id="node\d+" class="node">\s*<title>([^<]*)</title>\s*<path fill="([^"]*)"`).FindAllStringSubmatch(body, -1) {
			fills[html.UnescapeString(m[1])] = m[2]
		}
		for _, st := range states.All {
			if got, want := fills[string(st)] == "#ffd54f", st == states.Pending; got != want {
				t.Errorf("node %s filled %q; highlighted %v, want %v", st, fills[string(st)], got, want)
			}
		}
		// The two transitions that changed the state are drawn bold: the
		// newest (1) bot → pending-request, then (2) idle → bot.
		for _, want := range []string{`id="rev-2"`, `title="drawn bold on the diagram">(1)</span>`, `>(2)</span>`} {
			if !strings.Contains(body, want) {
				t.Errorf("the page lacks %s", want)
			}
		}
	})

	t.Run("without Graphviz", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir()) // no dot to be found
		body := checkHTML(t, f.do(t, http.MethodGet, view+"?"+tok, nil, nil), http.StatusOK)
		for _, want := range []string{"graphviz&#39;s dot is not installed", "<pre>", "stateDiagram-v2", "class pending_request current"} {
			if !strings.Contains(body, want) {
				t.Errorf("without Graphviz the page lacks %s", want)
			}
		}
		if strings.Contains(body, "<svg") {
			t.Errorf("without Graphviz the page has an SVG")
		}
	})

	t.Run("Bearer token", func(t *testing.T) {
		body := checkHTML(t, f.do(t, http.MethodGet, view, bearer(apiToken), nil), http.StatusOK)
		checkToken(t, body, "")
	})

	t.Run("older history", func(t *testing.T) {
		body := checkHTML(t, f.do(t, http.MethodGet, view+"?limit=1&"+tok, nil, nil), http.StatusOK)
		if got := revRE.FindAllStringSubmatch(body, -1); len(got) != 1 || got[0][1] != "3" {
			t.Fatalf("limit=1 shows %v, want revision 3", got)
		}
		older := regexp.MustCompile(`<a href="([^"]*)" rel="next">Older entries`).FindStringSubmatch(body)
		if older == nil {
			t.Fatalf("no link to older entries")
		}
		body = checkHTML(t, f.do(t, http.MethodGet, html.UnescapeString(older[1]), nil, nil), http.StatusOK)
		checkToken(t, body, apiToken)
		if got := revRE.FindAllStringSubmatch(body, -1); len(got) != 1 || got[0][1] != "2" {
			t.Errorf("the older page shows %v, want revision 2", got)
		}
		if !strings.Contains(body, "Newest entries") || !strings.Contains(body, `id="state">pending-request<`) {
			t.Errorf("the older page lacks the link to the newest entries or the thread's state")
		}
	})

	errs := []struct {
		name       string
		target     string
		wantStatus int
		want       string
	}{
		{"unknown identity", "/debug/threads/7999999999999999/view?" + tok, http.StatusNotFound, "unknown identity 7999999999999999"},
		{"hostile identity", "/debug/threads/%3Cscript%3Ealert(1)%3C%2Fscript%3E/view?" + tok, http.StatusNotFound, "unknown identity &lt;script&gt;alert(1)&lt;/script&gt;"},
		{"unknown page", view + "?page_id=100000000000999&" + tok, http.StatusNotFound, "no thread for identity " + psid + " on page 100000000000999"},
		{"limit=0", view + "?limit=0&" + tok, http.StatusBadRequest, `limit=&#34;0&#34; must be a number from 1 to 500`},
		{"before not a number", view + "?before=x&" + tok, http.StatusBadRequest, `before=&#34;x&#34; must be a revision number`},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			body := checkHTML(t, f.do(t, http.MethodGet, tc.target, nil, nil), tc.wantStatus)
			if !strings.Contains(body, tc.want) || !strings.Contains(body, fmt.Sprint(tc.wantStatus)) {
				t.Errorf("the error page lacks %d and %s:\n%s", tc.wantStatus, tc.want, mainOf(body))
			}
			checkToken(t, body, apiToken)
		})
	}
	t.Run("no token", func(t *testing.T) {
		checkEnvelope(t, f.do(t, http.MethodGet, view, nil, nil), http.StatusUnauthorized, "missing access token")
	})
}

package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
)

// ---- Requests that could mean two things (SPEC.md §3): 400, nothing
// applied.

func TestAmbiguousParameters(t *testing.T) {
	f := newFixture(t)
	onBot := newPSID() // a thread the bot owns: a handover would request control
	f.customer(t, onBot)
	onAgent := newPSID() // a thread with an open intervention and a content
	f.toAgent(t, onAgent)
	iv := f.openIntervention(t, onAgent)
	r := f.api(t, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {onAgent}, "body": {"hello"}})
	if r.status != http.StatusCreated {
		t.Fatalf("content: %v", r)
	}
	ct := decode[contentJSON](t, r)
	f.settle(t)

	token := "access_token=" + apiToken
	toAgent := "identity_foreign_id=" + onBot + "&from=bot&to=agent&type=messenger&" + token
	toBot := "identity_foreign_id=" + onAgent + "&from=agent&to=bot&type=messenger&app_id=" + botID + "&" + token
	form := "application/x-www-form-urlencoded"
	tests := []struct {
		name        string
		method      string
		target      string
		contentType string
		body        string
		psid        string // the thread that must not change
		want        string
	}{
		{"from twice", http.MethodPost, "/1.0/bots/handover?" + toAgent + "&from=agent", "", "", onBot, `query parameter "from" is given 2 times`},
		{"from twice, same value", http.MethodPost, "/1.0/bots/handover?" + toAgent + "&from=bot", "", "", onBot, `query parameter "from" is given 2 times`},
		{"to twice", http.MethodPost, "/1.0/bots/handover?" + toAgent + "&to=bot", "", "", onBot, `query parameter "to" is given 2 times`},
		{"type twice", http.MethodPost, "/1.0/bots/handover?" + toAgent + "&type=whatsapp", "", "", onBot, `query parameter "type" is given 2 times`},
		{"identity_foreign_id twice", http.MethodPost, "/1.0/bots/handover?" + toAgent + "&identity_foreign_id=" + onAgent, "", "", onBot, `query parameter "identity_foreign_id" is given 2 times`},
		{"app_id twice", http.MethodPost, "/1.0/bots/handover?" + toBot + "&app_id=" + bot2ID, "", "", onAgent, `query parameter "app_id" is given 2 times`},
		{"page_id twice", http.MethodPost, "/1.0/bots/handover?" + toAgent + "&page_id=" + pageID + "&page_id=" + otherPage, "", "", onBot, `query parameter "page_id" is given 2 times`},
		{"access_token twice", http.MethodPost, "/1.0/bots/handover?" + toAgent + "&access_token=another-token", "", "", onBot, `query parameter "access_token" is given 2 times`},
		{"access_token twice, same value", http.MethodPost, "/1.0/bots/handover?" + toAgent + "&" + token, "", "", onBot, `query parameter "access_token" is given 2 times`},
		{"an escaped name is the same name", http.MethodPost, "/1.0/bots/handover?" + toAgent + "&fr%6Fm=agent", "", "", onBot, `query parameter "from" is given 2 times`},
		{"a semicolon separator", http.MethodPost, "/1.0/bots/handover?" + toAgent + ";from=agent", "", "", onBot, "query string is malformed"},
		{"from in the query and the form body", http.MethodPost, "/1.0/bots/handover?" + toAgent, form, "from=agent", onBot, `"from" is given in the query and in the form body, with different values`},
		{"access_token in the query and the form body", http.MethodPost, "/1.0/bots/handover?" + toAgent, form, "access_token=another-token", onBot, `"access_token" is given in the query and in the form body`},
		{"from twice in the form body", http.MethodPost, "/1.0/bots/handover?" + toAgent, form, "from=bot&from=agent", onBot, `form field "from" is given 2 times`},
		{"intervention: identity_foreign_id twice", http.MethodPost, "/1.0/interventions?identity_foreign_id=" + onBot + "&identity_foreign_id=" + onAgent + "&" + token, "", "", onBot, `query parameter "identity_foreign_id" is given 2 times`},
		{"content: body twice", http.MethodPost, "/1.0/contents?identity_foreign_id=" + onBot + "&body=a&body=b&" + token, "", "", onBot, `query parameter "body" is given 2 times`},
		{"content: body in the query and the form body", http.MethodPost, "/1.0/contents?identity_foreign_id=" + onBot + "&body=a&" + token, form, "body=b", onBot, `"body" is given in the query and in the form body, with different values`},
		{"content: body twice in a multipart body", http.MethodPost, "/1.0/contents?identity_foreign_id=" + onBot + "&" + token, "multipart", "body=a&body=b", onBot, `form field "body" is given 2 times`},
		{"content: identity in the query and the form body", http.MethodPost, "/1.0/contents?identity_foreign_id=" + onBot + "&" + token, form, "identity_foreign_id=" + onAgent + "&body=b", onBot, `"identity_foreign_id" is given in the query and in the form body`},
		{"close intervention: access_token twice", http.MethodPut, "/1.0/interventions/" + iv.ID + "/close?" + token + "&access_token=x", "", "", onAgent, `query parameter "access_token" is given 2 times`},
		{"read intervention: access_token twice", http.MethodGet, "/1.0/interventions/" + iv.ID + "?" + token + "&" + token, "", "", onAgent, `query parameter "access_token" is given 2 times`},
		{"read content: access_token twice", http.MethodGet, "/1.0/contents/" + ct.ID + "?" + token + "&access_token=x", "", "", onAgent, `query parameter "access_token" is given 2 times`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.thread(t, tc.psid)
			calls := len(f.sim.Log(pageID, tc.psid))
			var hdr http.Header
			var body io.Reader
			switch tc.contentType {
			case "":
			case "multipart":
				var b bytes.Buffer
				w := multipart.NewWriter(&b)
				q, _ := url.ParseQuery(tc.body)
				for k, vs := range q {
					for _, v := range vs {
						w.WriteField(k, v)
					}
				}
				w.Close()
				hdr, body = http.Header{"Content-Type": {w.FormDataContentType()}}, &b
			default:
				hdr, body = http.Header{"Content-Type": {tc.contentType}}, strings.NewReader(tc.body)
			}
			r := f.do(t, tc.method, tc.target, hdr, body)
			msg := checkEnvelope(t, r, http.StatusBadRequest, tc.want, "nothing was applied")
			if strings.Contains(msg, apiToken) || strings.Contains(msg, "another-token") {
				t.Errorf("message %q shows a token", msg)
			}
			f.settle(t)
			after := f.thread(t, tc.psid)
			if after.Revision != before.Revision || after.State != before.State || after.Intervention != before.Intervention {
				t.Errorf("thread after the refused call: %s rev %d intervention %q, want %s rev %d intervention %q",
					after.State, after.Revision, after.Intervention, before.State, before.Revision, before.Intervention)
			}
			if n := len(f.sim.Log(pageID, tc.psid)); n != calls {
				t.Errorf("%d Graph calls or webhooks for the thread after the refused call, want none", n-calls)
			}
			q, err := f.eng.Queue(context.Background(), engine.ThreadKey{PageID: pageID, PSID: tc.psid})
			if err != nil || len(q) != 0 {
				t.Errorf("queued contents after the refused call: %d %v, want none", len(q), err)
			}
		})
	}
}

// TestUnambiguousParameters checks what is not ambiguous: a parameter in
// the query and the form body with the same value, and a repeated
// parameter outside /1.0/.
func TestUnambiguousParameters(t *testing.T) {
	f := newFixture(t)
	psid := newPSID()
	f.toAgent(t, psid)

	r := f.do(t, http.MethodPost, "/1.0/contents?identity_foreign_id="+psid+"&body=same&access_token="+apiToken,
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, strings.NewReader("body=same&identity_foreign_id="+psid))
	if r.status != http.StatusCreated {
		t.Errorf("content with the same body in the query and the form: %v, want HTTP 201", r)
	} else if got := decode[contentJSON](t, r).Body; got != "same" {
		t.Errorf("content body = %q, want %q", got, "same")
	}
	r = f.do(t, http.MethodGet, "/debug/threads?state=agent&state=bot", bearer(apiToken), nil)
	if r.status != http.StatusOK {
		t.Errorf("debug list with state twice: %v, want HTTP 200 (the rule is the /1.0/ API's)", r)
	}
	f.waitState(t, psid, states.Agent, ringcxID)
}

// ---- Request headers over 16 KB: 431 (SPEC.md §3).

// serveReal serves the fixture's server with Serve, as threadctl does, on
// a loopback port.
func serveReal(t *testing.T, srv *server.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// rawRequest sends a request of exactly the given header lines and reads
// the answer.
func rawRequest(t *testing.T, addr, requestLine string, lines []string) reply {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	b.WriteString(requestLine + "\r\n")
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: body}
}

// headerLines are the lines of a header of exactly size bytes (each line
// counted with its CRLF): Host, Connection, then padding in n headers.
func headerLines(t *testing.T, size, n int, extra ...string) []string {
	t.Helper()
	lines := append([]string{"Host: threadctl.test", "Connection: close"}, extra...)
	used := 0
	for _, l := range lines {
		used += len(l) + 2
	}
	left := size - used
	for i := range n {
		name := fmt.Sprintf("X-Pad-%04d: ", i)
		share := left / (n - i)
		v := share - len(name) - 2
		if v < 0 {
			t.Fatalf("%d headers do not fit in %d bytes", n, size)
		}
		lines = append(lines, name+strings.Repeat("a", v))
		left -= share
	}
	return lines
}

func TestHeaderLimit(t *testing.T) {
	f := newFixture(t)
	addr := serveReal(t, f.srv)
	const limit = server.MaxHeaderBytes
	tests := []struct {
		name       string
		target     string
		lines      []string
		wantStatus int
		envelope   bool // answered by threadctl in its envelope (not by net/http)
	}{
		{"exactly the limit, one big value", "/healthz", headerLines(t, limit, 1), http.StatusOK, true},
		{"exactly the limit, 1 000 small headers", "/healthz", headerLines(t, limit, 1000), http.StatusOK, true},
		{"one byte over, one big value", "/healthz", headerLines(t, limit+1, 1), http.StatusRequestHeaderFieldsTooLarge, true},
		{"one byte over, 1 000 small headers", "/healthz", headerLines(t, limit+1, 1000), http.StatusRequestHeaderFieldsTooLarge, true},
		{"1 000 small headers of 20 bytes", "/healthz", headerLines(t, 20*1000+30, 1000), http.StatusRequestHeaderFieldsTooLarge, true},
		{"over the limit on the Bots API, before the token check", "/1.0/bots/handover", headerLines(t, limit+100, 1), http.StatusRequestHeaderFieldsTooLarge, true},
		{"an unknown route", "/no/such/route", headerLines(t, limit+100, 1), http.StatusRequestHeaderFieldsTooLarge, true},
		{"far over: cut off by net/http", "/healthz", headerLines(t, 4*limit, 1), http.StatusRequestHeaderFieldsTooLarge, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rawRequest(t, addr, "GET "+tc.target+" HTTP/1.1", tc.lines)
			switch {
			case r.status != tc.wantStatus:
				t.Errorf("HTTP status = %d, want %d (%.200s)", r.status, tc.wantStatus, r.body)
			case tc.envelope && r.status != http.StatusOK:
				checkEnvelope(t, r, tc.wantStatus, fmt.Sprintf("over the limit of %d bytes", limit))
			case !tc.envelope && bytes.HasPrefix(r.body, []byte("{")):
				t.Errorf("answer %s: want net/http's own, the request should not reach the handler", r.body)
			}
		})
	}
}

// FuzzAmbiguousRequest sends the Bots API any query and form body (without
// a valid token): the answer is the ambiguity 400 exactly when a parameter
// repeats or the query and the body disagree, a 400 for a malformed query
// or body, and otherwise the token check's 401; never a 5xx.
func FuzzAmbiguousRequest(f *testing.F) {
	f.Add("from=bot&from=agent", "")
	f.Add("identity_foreign_id=1&from=bot&to=agent&type=messenger", "from=agent")
	f.Add("access_token=a&access_token=a", "")
	f.Add("a=1;b=2", "")
	f.Add("body=x", "body=x")
	f.Add("", "a=%zz")
	srv, err := server.New(server.Config{Engine: &engine.Engine{}, APITokens: []string{apiToken}})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, rawQuery, body string) {
		if strings.ContainsAny(rawQuery, " #\r\n\x00") || strings.Contains(rawQuery, apiToken) {
			t.Skip()
		}
		req, err := http.NewRequest(http.MethodPost, "/1.0/bots/handover?"+rawQuery, strings.NewReader(body))
		if err != nil {
			t.Skip()
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)

		query, qerr := url.ParseQuery(rawQuery)
		form, ferr := url.ParseQuery(body)
		wantAmbiguous := false
		for k, vs := range query {
			wantAmbiguous = wantAmbiguous || len(vs) > 1
			if fv, ok := form[k]; ok && fv[0] != vs[0] {
				wantAmbiguous = true
			}
		}
		for _, vs := range form {
			wantAmbiguous = wantAmbiguous || len(vs) > 1
		}
		gotAmbiguous := strings.Contains(w.Body.String(), "could mean two things")
		switch {
		case w.Code >= 500:
			t.Fatalf("HTTP %d %s", w.Code, w.Body)
		case qerr != nil || ferr != nil:
			if w.Code != http.StatusBadRequest {
				t.Errorf("malformed query %q or body %q: HTTP %d, want 400", rawQuery, body, w.Code)
			}
		case gotAmbiguous != wantAmbiguous:
			t.Errorf("query %q, body %q: HTTP %d %s; want ambiguous: %v", rawQuery, body, w.Code, w.Body, wantAmbiguous)
		case !wantAmbiguous && w.Code != http.StatusUnauthorized:
			t.Errorf("query %q, body %q: HTTP %d, want the token check's 401", rawQuery, body, w.Code)
		}
	})
}

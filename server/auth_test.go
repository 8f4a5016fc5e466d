package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
)

// ---- API tokens: SHA-256 forms, page scopes, global-only endpoints
// (SPEC.md §3).

const (
	page2  = "100000000000002" // a second configured page, fed by signed webhooks
	page3  = "100000000000003" // a third, with no page token
	tokenA = "token-of-page-1"
	tokenB = "token-of-page-2"
	// tokenAB acts on both pages: the same token in both pages' lists.
	tokenAB = "token-of-both-pages"
)

func sha256Token(token string) string {
	d := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(d[:])
}

func TestTokenForms(t *testing.T) {
	const hashed, plain = "hashed-token", "plain-token"
	f := newFixture(t, func(c *server.Config) {
		c.APITokens = []string{plain, sha256Token(hashed)}
		c.Tokens = []server.Token{{Secret: "sha256:" + strings.ToUpper(strings.TrimPrefix(sha256Token("upper-hex-token"), "sha256:"))}}
	})
	tests := []struct {
		name       string
		token      string
		wantStatus int
	}{
		{"a token configured as itself", plain, http.StatusOK},
		{"a token configured as its SHA-256", hashed, http.StatusOK},
		{"a token configured as its SHA-256 in upper-case hex", "upper-hex-token", http.StatusOK},
		{"the SHA-256 form itself is not the token", sha256Token(hashed), http.StatusUnauthorized},
		{"the hex of the SHA-256 is not the token", strings.TrimPrefix(sha256Token(hashed), "sha256:"), http.StatusUnauthorized},
		{"a token's prefix", plain[:5], http.StatusUnauthorized},
		{"another token", "not-a-token", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, how := range []string{"query", "bearer"} {
				var r reply
				if how == "query" {
					r = f.do(t, http.MethodGet, "/debug/threads?access_token="+url.QueryEscape(tc.token), nil, nil)
				} else {
					r = f.do(t, http.MethodGet, "/debug/threads", bearer(tc.token), nil)
				}
				if r.status != tc.wantStatus {
					t.Errorf("%s: %v, want HTTP %d", how, r, tc.wantStatus)
				}
			}
		})
	}
}

func TestTokenBadForms(t *testing.T) {
	tests := []struct {
		name   string
		tokens []string
		want   string
	}{
		{"short digest", []string{"sha256:abcd"}, "64 hex digits"},
		{"not hex", []string{"sha256:" + strings.Repeat("zz", 32)}, "64 hex digits"},
		{"empty", []string{""}, "empty"},
		{"blank", []string{"  "}, "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := server.New(server.Config{Engine: &engine.Engine{}, APITokens: tc.tokens})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want one containing %q", err, tc.want)
			}
			if err := server.CheckToken(tc.tokens[0]); err == nil {
				t.Errorf("CheckToken = nil, want an error")
			}
			if d := strings.TrimPrefix(tc.tokens[0], "sha256:"); len(d) > 2 && strings.Contains(err.Error(), d) {
				t.Errorf("New error = %v, it quotes the token", err)
			}
		})
	}
}

func TestTokenGlobalRequired(t *testing.T) {
	f := newFixture(t, func(c *server.Config) {
		c.Tokens = []server.Token{{Secret: tokenA, Pages: []string{pageID}}}
		c.Extra = func(g server.Router) {
			g.GET("/ops/backup", func(c echo.Context) error { return c.String(http.StatusOK, "backup") })
		}
	})
	tests := []struct {
		name       string
		header     http.Header
		wantStatus int
		want       string
	}{
		{"global token", bearer(apiToken), http.StatusOK, ""},
		{"page token", bearer(tokenA), http.StatusForbidden, "needs a global API token"},
		{"no token", nil, http.StatusUnauthorized, "missing access token"},
		{"wrong token", bearer("nope"), http.StatusUnauthorized, "invalid access token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodGet, "/ops/backup", tc.header, nil)
			if tc.wantStatus == http.StatusOK {
				if r.status != http.StatusOK || string(r.body) != "backup" {
					t.Errorf("answer = %v, want HTTP 200 backup", r)
				}
				return
			}
			checkEnvelope(t, r, tc.wantStatus, tc.want)
		})
	}
}

// scopedFixture has two pages: the demo page (on the simulator) with
// tokenA, and page2 with tokenB; apiToken is global.
func scopedFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t, func(c *server.Config) {
		c.Tokens = []server.Token{
			{Secret: tokenA, Pages: []string{pageID}},
			{Secret: sha256Token(tokenB), Pages: []string{page2}},
			{Secret: tokenAB, Pages: []string{pageID}},
			{Secret: tokenAB, Pages: []string{page2}},
		}
	})
	for _, p := range []string{page2, page3} {
		if err := f.eng.SetPage(context.Background(), engine.Page{ID: p, Primary: states.PrimaryBot, RingCXAppID: ringcxID, BotAppIDs: []string{botID}}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// standby makes a customer write on pages through a signed webhook (a
// standby message: the thread goes to the primary bot, no Graph call).
func (f *fixture) standby(t *testing.T, psid string, pages ...string) {
	t.Helper()
	ms := time.Now().UnixMilli()
	var entries []string
	for _, p := range pages {
		entries = append(entries, fmt.Sprintf(`{"id":"%[1]s","time":%[3]d,"standby":[{"sender":{"id":"%[2]s"},"recipient":{"id":"%[1]s"},"timestamp":%[3]d,"message":{"mid":"m_%[2]s_%[1]s","text":"hi"}}]}`, p, psid, ms))
	}
	checkSuccess(t, f.postWebhook(t, []byte(`{"object":"page","entry":[`+strings.Join(entries, ",")+`]}`), ringcxSecret))
}

// TestPageTokenOtherPage asks, with page2's token, about a thread of the
// demo page, its intervention and its content: every answer must be the
// one for an identity or id that does not exist, and nothing is applied.
func TestPageTokenOtherPage(t *testing.T) {
	f := scopedFixture(t)
	psid := newPSID()
	f.toAgent(t, psid)
	iv := f.openIntervention(t, psid)
	r := f.api(t, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {psid}, "body": {"hello"}})
	if r.status != http.StatusCreated {
		t.Fatalf("content: %v", r)
	}
	ct := decode[contentJSON](t, r)
	f.settle(t)
	unknownPSID, unknownID := newPSID(), "0123456789abcdef0123"

	tests := []struct {
		name   string
		method string
		// path and query of the request, given the identity or id asked about
		path  func(id string) string
		query func(id string) url.Values
		known string // the other page's identity or id
		// unknown is an identity or id that does not exist
		unknown string
	}{
		{"Bots API to agent", http.MethodPost, fixed("/1.0/bots/handover"), func(id string) url.Values { return handoverQuery(id, "bot", "agent", "") }, psid, unknownPSID},
		{"Bots API to bot", http.MethodPost, fixed("/1.0/bots/handover"), func(id string) url.Values { return handoverQuery(id, "agent", "bot", botID) }, psid, unknownPSID},
		{"Bots API with the other page_id", http.MethodPost, fixed("/1.0/bots/handover"), func(id string) url.Values {
			q := handoverQuery(id, "agent", "bot", botID)
			q.Set("page_id", pageID)
			return q
		}, psid, unknownPSID},
		{"open intervention", http.MethodPost, fixed("/1.0/interventions"), identityQuery, psid, unknownPSID},
		{"create content", http.MethodPost, fixed("/1.0/contents"), func(id string) url.Values {
			return url.Values{"identity_foreign_id": {id}, "body": {"probe"}}
		}, psid, unknownPSID},
		{"read intervention", http.MethodGet, func(id string) string { return "/1.0/interventions/" + id }, noQuery, iv.ID, unknownID},
		{"close intervention", http.MethodPut, func(id string) string { return "/1.0/interventions/" + id + "/close" }, noQuery, iv.ID, unknownID},
		{"read content", http.MethodGet, func(id string) string { return "/1.0/contents/" + id }, noQuery, ct.ID, unknownID},
		{"debug thread", http.MethodGet, func(id string) string { return "/debug/threads/" + id }, noQuery, psid, unknownPSID},
		{"debug thread with the other page_id", http.MethodGet, func(id string) string { return "/debug/threads/" + id }, func(string) url.Values {
			return url.Values{"page_id": {pageID}}
		}, psid, unknownPSID},
		{"debug thread view", http.MethodGet, func(id string) string { return "/debug/threads/" + id + "/view" }, noQuery, psid, unknownPSID},
		{"thread diagram", http.MethodGet, func(id string) string { return "/diagrams/threads/" + id + ".mmd" }, noQuery, psid, unknownPSID},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := f.thread(t, psid)
			calls := len(f.sim.Log(pageID, psid))
			ask := func(id string) reply {
				q := tc.query(id)
				q.Set("access_token", tokenB)
				return f.do(t, tc.method, tc.path(id)+"?"+q.Encode(), nil, nil)
			}
			got, want := ask(tc.known), ask(tc.unknown)
			if got.status != http.StatusNotFound {
				t.Errorf("HTTP status = %d, want 404 (%v)", got.status, got)
			}
			gotBody := normalise(got.body)
			wantBody := strings.ReplaceAll(normalise(want.body), tc.unknown, tc.known)
			if got.status != want.status || gotBody != wantBody {
				t.Errorf("answer about the other page's %s:\n%d %s\nwant the answer about an unknown one:\n%d %s", tc.known, got.status, gotBody, want.status, wantBody)
			}
			f.settle(t)
			after := f.thread(t, psid)
			if after.Revision != before.Revision || after.State != before.State || after.Intervention != before.Intervention {
				t.Errorf("thread after the refused call: %s rev %d, want %s rev %d", after.State, after.Revision, before.State, before.Revision)
			}
			if n := len(f.sim.Log(pageID, psid)); n != calls {
				t.Errorf("%d Graph calls or webhooks for the thread after the refused call, want none", n-calls)
			}
		})
	}
	// The same calls with the thread's own page token work.
	if r := f.do(t, http.MethodGet, "/1.0/interventions/"+iv.ID, bearer(tokenA), nil); r.status != http.StatusOK {
		t.Errorf("page token on its own intervention: %v", r)
	}
	if r := f.do(t, http.MethodGet, "/1.0/contents/"+ct.ID, bearer(tokenA), nil); r.status != http.StatusOK {
		t.Errorf("page token on its own content: %v", r)
	}
	if r := f.do(t, http.MethodGet, "/debug/threads/"+psid+"/view", bearer(tokenA), nil); r.status != http.StatusOK {
		t.Errorf("page token on its own thread view: %v", r)
	}
}

func fixed(path string) func(string) string { return func(string) string { return path } }
func identityQuery(id string) url.Values    { return url.Values{"identity_foreign_id": {id}} }
func noQuery(string) url.Values             { return url.Values{} }

// normalise drops what differs between two answers for reasons other than
// the identity asked about: the debug page's clock.
func normalise(body []byte) string {
	b := string(bytes.TrimSpace(body))
	if strings.HasPrefix(b, "<!doctype html>") {
		return mainOf(b)
	}
	return b
}

// TestPageTokenOwnPage checks that a page token acts on its own page's
// threads: the Bots API applies, and an identity known on two pages is its
// page's, not ambiguous.
func TestPageTokenOwnPage(t *testing.T) {
	f := scopedFixture(t)
	psid := newPSID()
	f.customer(t, psid)
	if r := f.do(t, http.MethodPost, "/1.0/bots/handover?"+handoverQuery(psid, "bot", "agent", "").Encode(), bearer(tokenA), nil); !checkSuccess(t, r) {
		return
	}
	f.waitState(t, psid, states.Agent, ringcxID)

	both := newPSID()
	f.standby(t, both, pageID, page2)
	tests := []struct {
		name       string
		header     http.Header
		wantStatus int
		wantPage   string
	}{
		{"global token: ambiguous", bearer(apiToken), http.StatusBadRequest, ""},
		{"token of both pages: ambiguous", bearer(tokenAB), http.StatusBadRequest, ""},
		{"page token of the demo page", bearer(tokenA), http.StatusOK, pageID},
		{"page token of page 2 (configured as SHA-256)", bearer(tokenB), http.StatusOK, page2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, http.MethodGet, "/debug/threads/"+both, tc.header, nil)
			if tc.wantStatus != http.StatusOK {
				checkEnvelope(t, r, tc.wantStatus, "exists on several pages")
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("answer = %v, want 200", r)
			}
			if got := decode[threadJSON](t, r).PageID; got != tc.wantPage {
				t.Errorf("page_id = %s, want %s", got, tc.wantPage)
			}
		})
	}
}

// TestPageTokenLists checks that the thread lists, JSON and HTML, show a
// page token its pages' threads only.
func TestPageTokenLists(t *testing.T) {
	f := scopedFixture(t)
	onA, onB, onBoth, on3 := newPSID(), newPSID(), newPSID(), newPSID()
	f.standby(t, onA, pageID)
	f.standby(t, onB, page2)
	f.standby(t, onBoth, pageID, page2, page3)
	f.standby(t, on3, page3)
	all := []string{pageID + "/" + onA, pageID + "/" + onBoth, page2 + "/" + onB, page2 + "/" + onBoth}
	everything := append(slices.Clone(all), page3+"/"+onBoth, page3+"/"+on3)

	tests := []struct {
		name  string
		token string
		query url.Values
		want  []string // page/psid
	}{
		{"global token", apiToken, nil, everything},
		{"global token, page 2", apiToken, url.Values{"page_id": {page2}}, all[2:]},
		{"demo page token", tokenA, nil, all[:2]},
		{"demo page token, state bot", tokenA, url.Values{"state": {"bot"}}, all[:2]},
		{"demo page token asking for page 2", tokenA, url.Values{"page_id": {page2}}, nil},
		{"page 2 token", tokenB, nil, all[2:]},
		{"page 2 token, one a page", tokenB, url.Values{"limit": {"1"}}, all[2:]},
		{"page 2 token asking for the demo page", tokenB, url.Values{"page_id": {pageID}}, nil},
		{"token of both pages", tokenAB, nil, all},
		{"token of both pages, one a page", tokenAB, url.Values{"limit": {"1"}}, all},
		{"token of both pages, page 2", tokenAB, url.Values{"page_id": {page2}}, all[2:]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			q := clone(tc.query)
			for range 10 {
				r := f.do(t, http.MethodGet, "/debug/threads?"+q.Encode(), bearer(tc.token), nil)
				if r.status != http.StatusOK {
					t.Fatalf("list: %v", r)
				}
				list := decode[threadListJSON](t, r)
				for _, th := range list.Threads {
					got = append(got, th.PageID+"/"+th.IdentityForeignID)
				}
				if list.NextCursor == "" {
					break
				}
				q.Set("cursor", list.NextCursor)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("threads = %v, want %v", got, tc.want)
			}

			// The HTML list: the same rows, and only the token's pages to
			// filter on.
			hq := clone(tc.query)
			hq.Set("limit", "200")
			body := checkHTML(t, f.do(t, http.MethodGet, "/debug/?"+hq.Encode(), bearer(tc.token), nil), http.StatusOK)
			var rows []string
			for _, m := range rowRE.FindAllStringSubmatch(body, -1) {
				rows = append(rows, m[1])
			}
			var wantRows []string
			for _, w := range tc.want {
				wantRows = append(wantRows, w[strings.Index(w, "/")+1:])
			}
			if !slices.Equal(rows, wantRows) {
				t.Errorf("HTML rows = %v, want %v", rows, wantRows)
			}
			for _, p := range []string{pageID, page2, page3} {
				option := `<option value="` + p + `"`
				visible := tc.token == apiToken || tc.token == tokenAB || (tc.token == tokenA) == (p == pageID)
				if p == page3 {
					visible = tc.token == apiToken
				}
				if got := strings.Contains(body, option) && !strings.Contains(body, p+" (not configured)"); got != visible {
					t.Errorf("page %s offered in the filter: %v, want %v", p, got, visible)
				}
			}
		})
	}
}

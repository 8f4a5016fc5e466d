package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/threadctl/threadctl/engine"
)

// Token is an API token the server accepts.
type Token struct {
	// Secret is the token itself, or "sha256:<64 hex digits>", the SHA-256
	// of the token, so that the configuration need not hold it.
	Secret string
	// Pages are the pages whose threads the token acts on; none means every
	// page and every endpoint (a global token).
	Pages []string
}

// sha256Prefix marks a configured token given as its SHA-256.
const sha256Prefix = "sha256:"

// CheckToken reports what is wrong with a configured token, without
// quoting it.
func CheckToken(secret string) error {
	_, err := tokenDigest(secret)
	return err
}

// tokenDigest is the SHA-256 of a configured token.
func tokenDigest(secret string) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	if strings.TrimSpace(secret) == "" {
		return d, errors.New("a token is empty")
	}
	if hexDigest, ok := strings.CutPrefix(secret, sha256Prefix); ok {
		b, err := hex.DecodeString(hexDigest)
		if err != nil || len(b) != sha256.Size {
			return d, fmt.Errorf("a token starting with %q must be followed by the %d hex digits of the token's SHA-256", sha256Prefix, 2*sha256.Size)
		}
		copy(d[:], b)
		return d, nil
	}
	return sha256.Sum256([]byte(secret)), nil
}

// tokenSet is the tokens a server accepts, kept as digests: a presented
// token is hashed and compared in constant time with each of them, whether
// configured as itself or as its SHA-256.
type tokenSet []tokenEntry

type tokenEntry struct {
	digest [sha256.Size]byte
	pages  []string // nil: global
}

func newTokenSet(global []string, tokens []Token) (tokenSet, error) {
	var ts tokenSet
	for _, t := range global {
		tokens = append(tokens, Token{Secret: t})
	}
	for i, t := range tokens {
		d, err := tokenDigest(t.Secret)
		if err != nil {
			return nil, fmt.Errorf("server: token %d: %w", i, err)
		}
		ts = append(ts, tokenEntry{digest: d, pages: slices.Clone(t.Pages)})
	}
	return ts, nil
}

// match returns the scope of a presented token: the union of the scopes of
// the entries it matches. Every entry is compared.
func (ts tokenSet) match(presented string) (scope, bool) {
	d := sha256.Sum256([]byte(presented))
	var (
		sc    scope
		found bool
	)
	for _, e := range ts {
		if subtle.ConstantTimeCompare(d[:], e.digest[:]) != 1 {
			continue
		}
		found = true
		if e.pages == nil {
			sc.global = true
		}
		sc.pages = append(sc.pages, e.pages...)
	}
	if sc.global {
		sc.pages = nil
	}
	slices.Sort(sc.pages)
	sc.pages = slices.Compact(sc.pages)
	return sc, found
}

// scope is what a request's token acts on: every page, or the threads of
// some pages.
type scope struct {
	global bool
	pages  []string // sorted, when not global
}

func (s scope) allows(page string) bool {
	return s.global || slices.Contains(s.pages, page)
}

const scopeKey = "threadctl.scope"

// scopeOf is the scope of the request's token; a request that passed no
// token check acts on nothing.
func scopeOf(c echo.Context) scope {
	sc, _ := c.Get(scopeKey).(scope)
	return sc
}

// auth accepts any API token, as ?access_token= or Authorization: Bearer,
// and records its scope for the handlers.
func (s *Server) auth(next echo.HandlerFunc) echo.HandlerFunc { return s.authenticate(next, false) }

// authGlobal accepts only global API tokens: for operator endpoints that
// are not about one page's threads.
func (s *Server) authGlobal(next echo.HandlerFunc) echo.HandlerFunc {
	return s.authenticate(next, true)
}

func (s *Server) authenticate(next echo.HandlerFunc, globalOnly bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		token := c.QueryParam("access_token")
		if h := c.Request().Header.Get(echo.HeaderAuthorization); h != "" {
			scheme, bearer, ok := strings.Cut(h, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				return &apiError{status: http.StatusUnauthorized, msg: "the Authorization header must be \"Bearer <access_token>\""}
			}
			token = strings.TrimSpace(bearer)
		}
		if token == "" {
			return &apiError{status: http.StatusUnauthorized, msg: "missing access token: pass ?access_token=<token> or an Authorization: Bearer <token> header"}
		}
		sc, ok := s.tokens.match(token)
		if !ok {
			return &apiError{status: http.StatusUnauthorized, msg: "invalid access token: check the token configured in threadctl's api_tokens"}
		}
		if globalOnly && !sc.global {
			return errGlobalToken
		}
		c.Set(scopeKey, sc)
		return next(c)
	}
}

var errGlobalToken = &apiError{status: http.StatusForbidden,
	msg: "this endpoint needs a global API token (api_tokens): a page's token (pages[].api_tokens) acts only on that page's threads"}

// A token scoped to some pages gets, for a thread, intervention or content
// of another page, exactly the answer of one that does not exist: these
// errors are the engine's for an unknown identity or id.

func unknownIdentity(psid string) error {
	return &engine.Error{Code: engine.CodeNotFound, Err: engine.ErrNotFound,
		Message: fmt.Sprintf("unknown identity %s: no Messenger thread with that identity_foreign_id has been seen", psid)}
}

func noThread(key engine.ThreadKey) error {
	return &engine.Error{Code: engine.CodeNotFound, Err: engine.ErrNotFound,
		Message: fmt.Sprintf("no thread for identity %s on page %s", key.PSID, key.PageID)}
}

func unknownIntervention(id string) error {
	return &engine.Error{Code: engine.CodeNotFound, Err: engine.ErrNotFound, Message: "unknown intervention " + id}
}

func unknownContent(id string) error {
	return &engine.Error{Code: engine.CodeNotFound, Err: engine.ErrNotFound, Message: "unknown content " + id}
}

// findInScope finds an identity on the pages of a scoped token only: an
// identity known on another page is unknown to it, and one known on two
// pages is not ambiguous to a token of one of them.
func (s *Server) findInScope(ctx context.Context, sc scope, psid string) (engine.ThreadKey, error) {
	if psid == "" {
		return s.cfg.Engine.FindIdentity(ctx, psid)
	}
	var found []engine.ThreadKey
	for _, page := range sc.pages {
		key := engine.ThreadKey{PageID: page, PSID: psid}
		_, err := s.cfg.Engine.Thread(ctx, key)
		switch engine.ErrorCode(err) {
		case "":
			found = append(found, key)
		case engine.CodeNotFound:
		default:
			return key, err
		}
	}
	switch len(found) {
	case 0:
		return engine.ThreadKey{}, unknownIdentity(psid)
	case 1:
		return found[0], nil
	}
	return engine.ThreadKey{}, &engine.Error{Code: engine.CodeInvalid, Err: engine.ErrAmbiguous,
		Message: fmt.Sprintf("identity %s exists on several pages; give page_id", psid)}
}

// intervention reads an intervention the request's token may see.
func (s *Server) intervention(c echo.Context, id string) (engine.Intervention, error) {
	iv, err := s.cfg.Engine.Intervention(c.Request().Context(), id)
	if err == nil && !scopeOf(c).allows(iv.PageID) {
		return engine.Intervention{}, unknownIntervention(id)
	}
	return iv, err
}

// content reads a content the request's token may see.
func (s *Server) content(c echo.Context, id string) (engine.Content, error) {
	ct, err := s.cfg.Engine.Content(c.Request().Context(), id)
	if err == nil && !scopeOf(c).allows(ct.PageID) {
		return engine.Content{}, unknownContent(id)
	}
	return ct, err
}

// visiblePages are the configured pages a scope acts on.
func visiblePages(eng *engine.Engine, sc scope) []engine.Page {
	pages := eng.Pages()
	if sc.global {
		return pages
	}
	return slices.DeleteFunc(pages, func(p engine.Page) bool { return !sc.allows(p.ID) })
}

// listInScope lists the threads a scoped token may see: one page's with the
// store's page filter, several pages' by filtering the full list (each
// batch asks for no more than what is missing, so the store's cursor stays
// right).
func listInScope(ctx context.Context, eng *engine.Engine, sc scope, f engine.ListFilter) ([]engine.Thread, string, error) {
	switch {
	case sc.global:
		return eng.ListThreads(ctx, f)
	case f.PageID != "" && !sc.allows(f.PageID):
		// As a page without threads.
		return nil, "", nil
	case f.PageID != "":
		return eng.ListThreads(ctx, f)
	case len(sc.pages) == 0:
		return nil, "", nil
	case len(sc.pages) == 1:
		f.PageID = sc.pages[0]
		return eng.ListThreads(ctx, f)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	var out []engine.Thread
	for {
		f.Limit = limit - len(out)
		threads, next, err := eng.ListThreads(ctx, f)
		if err != nil {
			return nil, "", err
		}
		for _, t := range threads {
			if sc.allows(t.PageID) {
				out = append(out, t)
			}
		}
		if next == "" || len(out) >= limit {
			return out, next, nil
		}
		f.After = next
	}
}

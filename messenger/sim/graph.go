package sim

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// graphRequest is one Graph API call, as parsed from HTTP or made by a reference bot.
type graphRequest struct {
	method     string
	node, edge string
	extra      string // path components after the edge, which Graph does not know
	p          params
	parseErr   *graphError
	token      string
	proof      string
	via        string
}

var versionRE = regexp.MustCompile(`^v[0-9]+\.[0-9]+$`)

// parseGraphRequest reads the path (with or without a /vN.M prefix), the merged parameters,
// the access token (parameter or Authorization header) and appsecret_proof.
func parseGraphRequest(r *http.Request) graphRequest {
	req := graphRequest{method: r.Method}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) > 0 && versionRE.MatchString(parts[0]) {
		parts = parts[1:]
	}
	if len(parts) > 0 {
		req.node = parts[0]
	}
	if len(parts) > 1 {
		req.edge = parts[1]
	}
	if len(parts) > 2 {
		req.extra = "/" + strings.Join(parts[2:], "/")
	}
	p, err := readParams(r)
	if err != nil {
		req.parseErr = errParam("Invalid request: %v", err)
	}
	req.p = p
	req.token, _ = p.str("access_token")
	if req.token == "" {
		auth := r.Header.Get("Authorization")
		for _, scheme := range []string{"Bearer ", "OAuth "} {
			if len(auth) > len(scheme) && strings.EqualFold(auth[:len(scheme)], scheme) {
				req.token = strings.TrimSpace(auth[len(scheme):])
			}
		}
	}
	req.proof, _ = p.str("appsecret_proof")
	return req
}

// callName is the name a call is logged and matched by faults under.
func (req graphRequest) callName() string {
	if req.edge == "" {
		return "node"
	}
	return req.edge
}

// callCtx is what a call handler works with. The handler runs with s.mu held.
type callCtx struct {
	pg    *page
	app   string // the caller
	now   time.Time
	p     params
	entry *LogEntry
}

// callSpec describes a Graph edge.
type callSpec struct {
	method string
	// hopV1 is false for the APIs that came with the new Handover Protocol.
	hopV1 bool
	fn    func(s *Sim, c *callCtx) (any, *graphError)
}

// callSpecs maps an edge ("" for the node itself) to its spec. It is filled in init because
// the handlers reach back to graph (through the reference bot), which a package-level
// initializer would make an initialization cycle.
var callSpecs map[string]callSpec

func init() {
	callSpecs = map[string]callSpec{
		"":                       {http.MethodGet, true, (*Sim).pageNode},
		"pass_thread_control":    {http.MethodPost, true, (*Sim).passThreadControl},
		"take_thread_control":    {http.MethodPost, true, (*Sim).takeThreadControl},
		"request_thread_control": {http.MethodPost, true, (*Sim).requestThreadControl},
		"release_thread_control": {http.MethodPost, false, (*Sim).releaseThreadControl},
		"extend_thread_control":  {http.MethodPost, false, (*Sim).extendThreadControl},
		"pass_thread_metadata":   {http.MethodPost, false, (*Sim).passThreadMetadata},
		"thread_owner":           {http.MethodGet, true, (*Sim).threadOwner},
		"secondary_receivers":    {http.MethodGet, true, (*Sim).secondaryReceivers},
		"messages":               {http.MethodPost, true, (*Sim).sendMessage},
	}
}

// serveGraph answers a Graph API request, or closes the connection unanswered (a reset
// fault).
func (s *Sim) serveGraph(w http.ResponseWriter, r *http.Request) {
	res := s.graph(r.Context(), parseGraphRequest(r))
	if res.reset {
		resetConnection(w)
		return
	}
	writeGraph(w, res.status, res.body)
}

func writeGraph(w http.ResponseWriter, status int, body any) {
	b, err := metaJSON(body)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"message":"simulator: cannot encode the answer","type":"OAuthException","code":1}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// resetConnection closes the client's connection without an answer: it takes the connection
// over from net/http and closes it with a TCP reset (SO_LINGER 0). Where the connection cannot
// be taken over (HTTP/2, a ResponseWriter without Hijack), it aborts the handler with
// http.ErrAbortHandler, on which net/http drops the connection (or resets the stream).
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	raw := conn
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		raw = tc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// graphResult is how a Graph call is answered: an HTTP status and body, or no answer at all
// (reset: the connection is closed).
type graphResult struct {
	status int
	body   any
	reset  bool
}

// graph runs one Graph call: it authorises the caller, applies faults, runs the edge's rules
// and logs the call with its outcome.
func (s *Sim) graph(ctx context.Context, req graphRequest) graphResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	entry := LogEntry{Kind: KindGraphCall, Call: req.callName(), Via: req.via}
	var notes []string // what faults did, for entry.Detail
	c, spec, gerr := s.authorize(req, &entry)
	var f *Fault
	if gerr == nil {
		f = s.takeFault(entry.Call, c.app)
	}
	if f != nil && f.DelayMS > 0 {
		notes = append(notes, fmt.Sprintf("delayed %d ms by a fault", f.DelayMS))
		wait := ctx
		if f.ApplyLate {
			wait = context.WithoutCancel(ctx) // the call outlives its client (s.sleep still stops on Close)
		}
		s.addPending(1)
		s.mu.Unlock()
		err := s.sleep(wait, time.Duration(f.DelayMS)*time.Millisecond)
		s.mu.Lock()
		s.donePending(1)
		switch {
		case err != nil:
			// The client gave up (or the simulator closed): the call never reached Meta.
			gerr = errTransient(http.StatusServiceUnavailable)
			entry.Fault = true
			notes = append(notes, "abandoned: "+err.Error())
		default:
			if f.ApplyLate && ctx.Err() != nil {
				entry.Fault = true
				notes = append(notes, "the client had gone ("+ctx.Err().Error()+"); applied anyway (apply_late)")
			}
			c, spec, gerr = s.authorize(req, &entry) // the page may have changed meanwhile
		}
	}
	answerFault := f != nil && (f.Status != 0 || f.Reset)
	reset := false
	var body any
	if gerr == nil && answerFault && !f.ApplyLate {
		// The fault answers instead of Meta: the call is not applied.
		entry.Fault = true
		if f.Reset {
			reset = true
		} else {
			gerr = f.graphError()
		}
	} else if gerr == nil {
		c.entry = &entry
		body, gerr = spec.fn(s, c)
		if answerFault {
			// apply_late: applied, then the answer is lost to the fault.
			entry.Fault = true
			applied := "ok"
			if gerr != nil {
				applied = "error: " + gerr.message
			}
			notes = append(notes, "applied anyway (apply_late): "+applied)
			body, gerr = nil, nil
			if f.Reset {
				reset = true
			} else {
				gerr = f.graphError()
			}
		}
	}
	res := graphResult{status: http.StatusOK, body: body, reset: reset}
	entry.Outcome = OutcomeOK
	switch {
	case reset:
		res.status, res.body = 0, nil
		entry.Outcome = OutcomeReset
		if req.via == viaBot {
			notes = append(notes, "network error: the connection was reset by a fault, no answer")
		} else {
			notes = append(notes, "connection closed without an answer by a fault")
		}
	case gerr != nil:
		res.status, res.body = gerr.status, gerr.envelope()
		entry.Outcome, entry.ErrorCode, entry.ErrorSubcode, entry.ErrorMessage = OutcomeError, gerr.code, gerr.subcode, gerr.message
	}
	entry.HTTPStatus = res.status
	if entry.Fault && entry.PSID == "" {
		// The fault answered before the edge's rules read the recipient: name the thread
		// all the same, so that the thread's log (GET /_sim/log?psid=) shows the call.
		if psid, perr := req.p.recipient(); perr == nil {
			entry.PSID = psid
		}
	}
	if len(notes) > 0 {
		if entry.Detail != "" {
			notes = append([]string{entry.Detail}, notes...)
		}
		entry.Detail = strings.Join(notes, "; ")
	}
	if c != nil && entry.PSID != "" {
		if t := s.threads[c.pg.id()][entry.PSID]; t != nil {
			entry.OwnerAppID = t.owner
		}
	}
	s.appendLog(entry)
	return res
}

// authorize resolves the token to (page, app), checks appsecret_proof, the node, the edge (in
// the page's mode) and the method, in that order. The caller holds s.mu.
func (s *Sim) authorize(req graphRequest, entry *LogEntry) (*callCtx, callSpec, *graphError) {
	if req.token == "" {
		return nil, callSpec{}, errNoToken()
	}
	ref, ok := s.tokens[req.token]
	if !ok {
		return nil, callSpec{}, errBadToken()
	}
	pg := s.pages[ref.pageID]
	app := pg.apps[ref.appID]
	entry.PageID, entry.CallerAppID = pg.id(), app.AppID
	if req.proof != "" {
		want := sign(sha256.New, app.AppSecret, []byte(req.token))
		if !hmac.Equal([]byte(strings.ToLower(req.proof)), []byte(want)) {
			return nil, callSpec{}, errBadProof()
		}
	}
	if req.node != "me" && req.node != pg.id() {
		return nil, callSpec{}, errNoObject(req.method, req.node)
	}
	if req.extra != "" {
		return nil, callSpec{}, errUnknownPath(req.extra)
	}
	spec, ok := callSpecs[req.edge]
	if !ok || (pg.mode() == ModeHOPv1 && !spec.hopV1) {
		return nil, callSpec{}, errUnknownPath("/" + req.edge)
	}
	if req.method != spec.method {
		return nil, callSpec{}, errNoObject(req.method, req.node)
	}
	if req.parseErr != nil {
		return nil, callSpec{}, req.parseErr
	}
	return &callCtx{pg: pg, app: app.AppID, now: s.now(), p: req.p}, spec, nil
}

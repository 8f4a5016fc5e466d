package diagrams

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/threadctl/threadctl/states"
)

// Participants of the workflow sequence diagrams: the seed's pictures'.
const (
	Customer = "Customer"
	BotActor = "Bot"
	Agent    = "Agent"
	RingCX   = "RingCX"
	IdleMode = "Idle mode"
)

// Workflow is one of the seed's four workflows (seed/bots-api-workflow-*.png)
// as steps played against a running threadctl and its simulator, on a page
// with the Handover Protocol (as in the seed) or Conversation Routing.
type Workflow struct {
	Name  string
	Title string
	// Routing and Primary are the demo page's: on a Conversation Routing
	// page Primary is its default app. Takeover is the page's takeover
	// setting for the RingCX app at Meta (Conversation Routing only), which
	// threadctl is not told and learns from Meta.
	Routing  states.Routing
	Primary  states.Primary
	Takeover bool
	Steps    []Step
}

// Page describes the workflow's page for people.
func (w Workflow) Page() string {
	if w.Routing != states.ConversationRouting {
		return "Handover Protocol, primary " + string(w.Primary)
	}
	if w.Primary == states.PrimaryNone {
		return "Conversation Routing, no default app"
	}
	takeover := "on"
	if !w.Takeover {
		takeover = "off"
	}
	return "Conversation Routing, default app " + string(w.Primary) + ", RingCX takeover " + takeover
}

// Step is one action of a participant and what must hold once its effects
// have settled.
type Step struct {
	Actor    string
	Label    string // the seed's wording
	Endpoint string // threadctl's endpoint the actor calls; "" for the customer
	Arrow    string // how that call is drawn, if not as Label
	Do       func(ctx context.Context, p *Player) error
	Expect   Expect
}

// Expect is what threadctl and Meta show after a step. Empty fields are not
// checked.
type Expect struct {
	State     states.State // threadctl's state
	MetaOwner string       // the simulator's owner: "bot", "ringcx" or "idle"
	Customer  string       // the text of the last message the customer received
}

// Workflows are the four seed workflows on a Handover Protocol page, as the
// seed draws them; the same four on a Conversation Routing page (takeover
// on, and zero-config for no primary); and the bot's handover on a
// Conversation Routing page whose takeover setting is off.
var Workflows = append(hopWorkflows(), crWorkflows()...)

func hopWorkflows() []Workflow {
	hop := func(name, title string, p states.Primary, steps ...Step) Workflow {
		return Workflow{Name: name, Title: title, Routing: states.HandoverProtocol, Primary: p, Steps: steps}
	}
	return []Workflow{
		hop("bot-primary", "Bot primary", states.PrimaryBot,
			customerWrites("Sends message (BOT primary)", "Hi, where is my order?", Expect{State: states.Bot, MetaOwner: "bot", Customer: "echo: Hi, where is my order?"}),
			botHandsOver("Gives thread control via RingCX API", Expect{State: states.Agent, MetaOwner: "ringcx"}),
			agentOpens(Expect{State: states.Agent, MetaOwner: "ringcx"}),
			agentAnswers("Hello, I am Ann from support. Your order left this morning.", Expect{State: states.Agent, MetaOwner: "ringcx", Customer: "Hello, I am Ann from support. Your order left this morning."}),
			agentCloses(Expect{State: states.Idle, MetaOwner: "idle"}),
		),
		hop("ringcx-primary", "RingCX primary", states.PrimaryRingCX,
			customerWrites("Sends message (RingCX primary)", "Hi, I have a question", Expect{State: states.Agent, MetaOwner: "ringcx"}),
			botRequests("Requests thread control via RingCX API", Expect{State: states.Bot, MetaOwner: "bot"}),
			customerWrites("Writes to the bot", "Can you help?", Expect{State: states.Bot, MetaOwner: "bot", Customer: "echo: Can you help?"}),
			botHandsOver("Passes thread control via RingCX API", Expect{State: states.Agent, MetaOwner: "ringcx"}),
			agentOpens(Expect{State: states.Agent, MetaOwner: "ringcx"}),
			agentAnswers("Hello, Ann here. Happy to help.", Expect{State: states.Agent, MetaOwner: "ringcx", Customer: "Hello, Ann here. Happy to help."}),
			agentCloses(Expect{State: states.Idle, MetaOwner: "idle"}),
		),
		hop("no-primary", "No primary", states.PrimaryNone,
			// The bot claims the idle thread with request_thread_control,
			// which sends RingCX no webhook: threadctl still sees it idle.
			customerWrites("Sends message (no primary)", "Hello?", Expect{State: states.Idle, MetaOwner: "bot", Customer: "echo: Hello?"}),
			botHandsOver("Passes thread control via RingCX API", Expect{State: states.Agent, MetaOwner: "ringcx"}),
			agentOpens(Expect{State: states.Agent, MetaOwner: "ringcx"}),
			agentAnswers("Hi, this is Ann. How can I help?", Expect{State: states.Agent, MetaOwner: "ringcx", Customer: "Hi, this is Ann. How can I help?"}),
			agentCloses(Expect{State: states.Idle, MetaOwner: "idle"}),
		),
		hop("agent-interrupts-bot", "When agent interrupts bot", states.PrimaryBot,
			customerWrites("Sends message (BOT primary)", "I want to cancel", Expect{State: states.Bot, MetaOwner: "bot", Customer: "echo: I want to cancel"}),
			agentOpens(Expect{State: states.Agent, MetaOwner: "ringcx"}),
			agentAnswers("Ann here, I can cancel it for you.", Expect{State: states.Agent, MetaOwner: "ringcx", Customer: "Ann here, I can cancel it for you."}),
			agentCloses(Expect{State: states.Idle, MetaOwner: "idle"}),
		),
	}
}

// crWorkflows are the seed's workflows on a Conversation Routing page, where
// RingCX takes control instead of requesting it (its takeover setting is
// on), and the bot's handover where that setting is off.
func crWorkflows() []Workflow {
	var out []Workflow
	for _, w := range hopWorkflows() {
		w.Name, w.Title = "cr-"+w.Name, w.Title+" (Conversation Routing)"
		w.Routing, w.Takeover = states.ConversationRouting, true
		out = append(out, w)
	}
	return append(out, Workflow{
		Name: "cr-takeover-off", Title: "Bot hands over, takeover off (Conversation Routing)",
		Routing: states.ConversationRouting, Primary: states.PrimaryBot,
		Steps: []Step{
			customerWrites("Sends message (default app: the bot)", "Hi, where is my order?", Expect{State: states.Bot, MetaOwner: "bot", Customer: "echo: Hi, where is my order?"}),
			// Meta refuses RingCX's take: threadctl learns that the takeover
			// setting is off and tells the bot what to do instead.
			botHandoverRefused("Gives thread control via RingCX API", http.StatusConflict, Expect{State: states.Bot, MetaOwner: "bot"}),
			customerWrites("Asks for a human", "I want to talk to an agent", Expect{State: states.Agent, MetaOwner: "ringcx"}),
			agentOpens(Expect{State: states.Agent, MetaOwner: "ringcx"}),
			agentAnswers("Hello, I am Ann from support.", Expect{State: states.Agent, MetaOwner: "ringcx", Customer: "Hello, I am Ann from support."}),
			agentCloses(Expect{State: states.Idle, MetaOwner: "idle"}),
		},
	})
}

// HandoverText is what a customer writes for the demo's reference bot to
// pass the thread to RingCX by itself (on Conversation Routing pages).
const HandoverText = "agent"

// FindWorkflow returns the workflow named name.
func FindWorkflow(name string) (Workflow, error) {
	var names []string
	for _, w := range Workflows {
		if w.Name == name {
			return w, nil
		}
		names = append(names, w.Name)
	}
	return Workflow{}, fmt.Errorf("unknown workflow %q (workflows: %s)", name, strings.Join(names, ", "))
}

func customerWrites(label, text string, e Expect) Step {
	return Step{Actor: Customer, Label: label, Expect: e, Do: func(ctx context.Context, p *Player) error {
		return p.sim(ctx, http.MethodPost, "/_sim/pages/"+p.ep.PageID+"/customers/"+p.PSID+"/messages", map[string]string{"text": text}, nil)
	}}
}

func botHandsOver(label string, e Expect) Step {
	return Step{Actor: BotActor, Label: label, Endpoint: "POST /1.0/bots/handover", Expect: e, Do: func(ctx context.Context, p *Player) error {
		return p.api(ctx, http.MethodPost, "/1.0/bots/handover", url.Values{"identity_foreign_id": {p.PSID}, "from": {"bot"}, "to": {"agent"}, "type": {"messenger"}}, nil)
	}}
}

// botHandoverRefused is the bot's handover call answered with an error: its
// status must be status, and the trace shows the message.
func botHandoverRefused(label string, status int, e Expect) Step {
	return Step{Actor: BotActor, Label: label, Endpoint: "POST /1.0/bots/handover", Expect: e, Do: func(ctx context.Context, p *Player) error {
		err := p.api(ctx, http.MethodPost, "/1.0/bots/handover", url.Values{"identity_foreign_id": {p.PSID}, "from": {"bot"}, "to": {"agent"}, "type": {"messenger"}}, nil)
		var he *httpError
		if !errors.As(err, &he) || he.status != status {
			return fmt.Errorf("want HTTP %d, got %v", status, err)
		}
		p.answer = fmt.Sprintf("%d: %s", he.status, he.message)
		return nil
	}}
}

func botRequests(label string, e Expect) Step {
	return Step{Actor: BotActor, Label: label, Endpoint: "POST /1.0/bots/handover", Expect: e, Do: func(ctx context.Context, p *Player) error {
		return p.api(ctx, http.MethodPost, "/1.0/bots/handover", url.Values{"identity_foreign_id": {p.PSID}, "from": {"agent"}, "to": {"bot"}, "type": {"messenger"}, "app_id": {p.ep.BotAppID}}, nil)
	}}
}

func agentOpens(e Expect) Step {
	return Step{Actor: Agent, Label: "Opens intervention", Endpoint: "POST /1.0/interventions", Expect: e, Do: func(ctx context.Context, p *Player) error {
		var iv struct {
			ID string `json:"id"`
		}
		if err := p.api(ctx, http.MethodPost, "/1.0/interventions", url.Values{"identity_foreign_id": {p.PSID}}, &iv); err != nil {
			return err
		}
		p.intervention = iv.ID
		return nil
	}}
}

func agentAnswers(text string, e Expect) Step {
	// The reply reaches the customer through the Send API, which the
	// simulator's log draws; the agent's own call is "Writes a reply".
	return Step{Actor: Agent, Label: "Answers", Endpoint: "POST /1.0/contents", Arrow: "Writes a reply", Expect: e, Do: func(ctx context.Context, p *Player) error {
		return p.api(ctx, http.MethodPost, "/1.0/contents", url.Values{"identity_foreign_id": {p.PSID}, "body": {text}}, nil)
	}}
}

func agentCloses(e Expect) Step {
	return Step{Actor: Agent, Label: "Closes intervention (releases thread control)", Endpoint: "PUT /1.0/interventions/{id}/close", Expect: e, Do: func(ctx context.Context, p *Player) error {
		if p.intervention == "" {
			return fmt.Errorf("no intervention was opened")
		}
		return p.api(ctx, http.MethodPut, "/1.0/interventions/"+p.intervention+"/close", nil, nil)
	}}
}

// Endpoints is where a workflow is played.
type Endpoints struct {
	Threadctl   string // base URL of threadctl
	Sim         string // base URL of the simulator
	Token       string // threadctl API token
	PageID      string
	RingCXAppID string
	BotAppID    string
	HTTP        *http.Client
}

// Player plays one workflow on one customer's thread and records its trace.
type Player struct {
	ep           Endpoints
	PSID         string
	intervention string
	seenLog      int64
	owner        string // Meta's owner as of the last log entry read
	stepLabel    string // the customer step being played
	answer       string // threadctl's answer to a refused call, for the trace
	trace        Trace
}

// Trace is what a played workflow did, in order: the participants' own
// actions and the Graph calls and webhooks they caused, with the checks made
// after each step.
type Trace struct {
	Workflow Workflow
	PSID     string
	Items    []Item
}

// Item is one line of a trace: an arrow between two participants, or a note.
type Item struct {
	From, To string // To == "" for a note over From
	Label    string
	Detail   string // the technical detail (the call, the endpoint)
	Check    string // for a step's check: what was verified
}

// Play runs workflow w for customer psid and checks each step's Expect,
// waiting up to 5 s for its effects. It returns the trace so far with the
// first failed check.
func Play(ctx context.Context, w Workflow, ep Endpoints, psid string) (*Trace, error) {
	if ep.HTTP == nil {
		ep.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	p := &Player{ep: ep, PSID: psid, trace: Trace{Workflow: w, PSID: psid}}
	for i, st := range w.Steps {
		p.stepLabel = ""
		if st.Actor == Customer {
			p.stepLabel = st.Label
		}
		if err := st.Do(ctx, p); err != nil {
			return &p.trace, fmt.Errorf("step %d (%s: %s): %w", i+1, st.Actor, st.Label, err)
		}
		if st.Actor != Customer {
			p.trace.Items = append(p.trace.Items, actionItem(st))
		}

		if err := p.settle(ctx); err != nil {
			return &p.trace, fmt.Errorf("step %d: %w", i+1, err)
		}
		check, err := p.check(ctx, st.Expect)
		if err := p.collectLog(ctx); err != nil {
			return &p.trace, err
		}
		if err != nil {
			return &p.trace, fmt.Errorf("step %d (%s: %s): %w", i+1, st.Actor, st.Label, err)
		}
		if p.answer != "" {
			p.trace.Items = append(p.trace.Items, Item{From: RingCX, To: st.Actor, Label: "Refuses", Detail: p.answer})
			p.answer = ""
		}
		p.trace.Items = append(p.trace.Items, Item{From: RingCX, Check: check})
	}
	return &p.trace, nil
}

// actionItem is the arrow of a participant's own call to threadctl.
func actionItem(st Step) Item {
	label := st.Label
	if st.Arrow != "" {
		label = st.Arrow
	}
	return Item{From: st.Actor, To: RingCX, Label: label, Detail: st.Endpoint}
}

func (p *Player) settle(ctx context.Context) error {
	return p.sim(ctx, http.MethodPost, "/_sim/settle?timeout=10s", nil, nil)
}

// check polls threadctl and the simulator until e holds (or 5 s pass).
func (p *Player) check(ctx context.Context, e Expect) (string, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := p.observe(ctx)
		if err != nil {
			return "", err
		}
		want := got
		if e.State != "" {
			want.State = e.State
		}
		if e.MetaOwner != "" {
			want.MetaOwner = e.MetaOwner
		}
		if e.Customer != "" {
			want.Customer = e.Customer
		}
		if got == want {
			return got.String(), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("got %s, want %s", got, want)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type observation struct {
	State     states.State
	MetaOwner string
	Customer  string
}

func (o observation) String() string {
	s := fmt.Sprintf("threadctl %s, Meta owner %s", o.State, o.MetaOwner)
	if o.Customer != "" {
		s += fmt.Sprintf(", customer last received %q", o.Customer)
	}
	return s
}

func (p *Player) observe(ctx context.Context) (observation, error) {
	var o observation
	var th struct {
		State states.State `json:"state"`
	}
	if err := p.api(ctx, http.MethodGet, "/debug/threads/"+p.PSID, nil, &th); err != nil {
		return o, err
	}
	o.State = th.State
	var meta struct {
		Owner    *string `json:"owner_app_id"`
		Messages []struct {
			From string `json:"from"`
			Text string `json:"text"`
		} `json:"messages"`
	}
	if err := p.sim(ctx, http.MethodGet, "/_sim/pages/"+p.ep.PageID+"/threads/"+p.PSID, nil, &meta); err != nil {
		return o, err
	}
	o.MetaOwner = p.role(deref(meta.Owner))
	for i := len(meta.Messages) - 1; i >= 0; i-- {
		if meta.Messages[i].From != "customer" {
			o.Customer = meta.Messages[i].Text
			break
		}
	}
	return o, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// role names an app id as the diagrams do.
func (p *Player) role(appID string) string {
	switch appID {
	case "":
		return "idle"
	case p.ep.RingCXAppID:
		return "ringcx"
	case p.ep.BotAppID:
		return "bot"
	}
	return appID
}

func (p *Player) api(ctx context.Context, method, path string, q url.Values, out any) error {
	u := strings.TrimRight(p.ep.Threadctl, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.ep.Token)
	return p.do(req, out)
}

func (p *Player) sim(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(p.ep.Sim, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return p.do(req, out)
}

// httpError is an answer other than 2xx.
type httpError struct {
	status        int
	call, message string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("%s: %d %s: %s", e.call, e.status, http.StatusText(e.status), e.message)
}

func (p *Player) do(req *http.Request, out any) error {
	resp, err := p.ep.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		he := &httpError{status: resp.StatusCode, message: string(bytes.TrimSpace(b)), call: req.Method + " " + req.URL.Path}
		var env struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &env) == nil && env.Message != "" {
			he.message = env.Message
		}
		return he
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

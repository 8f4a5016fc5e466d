package diagrams

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// logEntry is what the trace reads of the simulator's log (GET /_sim/log).
type logEntry struct {
	Seq          int64  `json:"seq"`
	Kind         string `json:"kind"`
	CallerAppID  string `json:"caller_app_id"`
	Call         string `json:"call"`
	TargetAppID  string `json:"target_app_id"`
	Text         string `json:"text"`
	OwnerAppID   string `json:"owner_app_id"`
	Outcome      string `json:"outcome"`
	ErrorCode    int    `json:"error_code"`
	ErrorSubcode int    `json:"error_subcode"`
	ErrorMessage string `json:"error_message"`
	Detail       string `json:"detail"`
}

// collectLog appends to the trace what the simulator saw since the last
// step: customer messages, Graph calls and what they changed.
func (p *Player) collectLog(ctx context.Context) error {
	var out struct {
		Entries []logEntry `json:"entries"`
	}
	q := url.Values{"page_id": {p.ep.PageID}, "psid": {p.PSID}}
	if err := p.sim(ctx, http.MethodGet, "/_sim/log?"+q.Encode(), nil, &out); err != nil {
		return err
	}
	for _, e := range out.Entries {
		if e.Seq <= p.seenLog {
			continue
		}
		p.seenLog = e.Seq
		if it, ok := p.item(e); ok {
			p.trace.Items = append(p.trace.Items, it)
		}
		if e.Kind == "customer_message" || (e.Kind == "graph_call" && e.Outcome == "ok" && e.Call != "thread_owner" && e.Call != "messages") {
			p.owner = e.OwnerAppID
		}
	}
	return nil
}

// participant names an app id as a participant.
func (p *Player) participant(appID string) string {
	switch appID {
	case "":
		return IdleMode
	case p.ep.RingCXAppID:
		return RingCX
	case p.ep.BotAppID:
		return BotActor
	}
	return "App " + appID
}

// item turns one log entry into a trace item (ok is false for entries the
// diagrams leave out: webhook deliveries, which the arrows already show,
// and configuration).
func (p *Player) item(e logEntry) (Item, bool) {
	switch e.Kind {
	case "customer_message":
		label := "Sends message"
		if p.stepLabel != "" {
			label = p.stepLabel
		}
		return Item{From: Customer, To: p.participant(e.OwnerAppID), Label: label, Detail: fmt.Sprintf("%q", e.Text)}, true
	case "graph_call":
	default:
		return Item{}, false
	}
	caller := p.participant(e.CallerAppID)
	if e.Outcome != "ok" {
		msg := fmt.Sprintf("%s refused (%d/%d)", e.Call, e.ErrorCode, e.ErrorSubcode)
		return Item{From: caller, To: "", Label: msg, Detail: e.ErrorMessage}, true
	}
	prev := p.participant(p.owner)
	switch e.Call {
	case "messages":
		from := caller
		if caller == RingCX {
			from = Agent
		}
		if strings.Contains(e.Detail, "thread_control pass") {
			return Item{From: from, To: p.participant(e.TargetAppID), Label: "Answers and passes thread control via FB API", Detail: fmt.Sprintf("Send API with thread_control: %q", e.Text)}, true
		}
		return Item{From: from, To: Customer, Label: "Answers", Detail: fmt.Sprintf("Send API: %q", e.Text)}, true
	case "pass_thread_control":
		return Item{From: caller, To: p.participant(e.TargetAppID), Label: "Passes thread control via FB API", Detail: e.Call}, true
	case "take_thread_control":
		return Item{From: caller, To: prev, Label: "Takes thread control via FB API", Detail: e.Call}, true
	case "request_thread_control":
		if p.owner == "" && e.OwnerAppID == e.CallerAppID {
			return Item{From: caller, To: IdleMode, Label: "Requests (and automatically gets) thread control via FB API", Detail: e.Call}, true
		}
		return Item{From: caller, To: prev, Label: "Requests thread control via FB API", Detail: e.Call}, true
	case "release_thread_control":
		return Item{From: caller, To: IdleMode, Label: "Releases thread control via FB API", Detail: e.Call}, true
	case "node":
		return Item{From: caller, Label: "Asks Meta how the page routes conversations", Detail: "messaging_feature_status"}, true
	case "extend_thread_control":
		return Item{From: caller, Label: "Extends thread control via FB API", Detail: e.Call}, true
	case "thread_owner":
		return Item{From: caller, Label: "Asks Meta who owns the thread", Detail: fmt.Sprintf("thread_owner: %s", strings.ToLower(p.participant(p.owner)))}, true
	}
	return Item{From: caller, Label: e.Call, Detail: e.Call}, true
}

// Participants lists the trace's participants in the seed's order.
func (t *Trace) Participants() []string {
	used := map[string]bool{}
	for _, it := range t.Items {
		if it.Check != "" {
			continue
		}
		used[it.From] = true
		if it.To != "" {
			used[it.To] = true
		}
	}
	var out []string
	for _, p := range []string{IdleMode, Customer, BotActor, Agent, RingCX} {
		if used[p] {
			out = append(out, p)
			delete(used, p)
		}
	}
	for p := range used {
		out = append(out, p)
	}
	return out
}

// Text renders the trace for a terminal.
func (t *Trace) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "workflow %s (%s; %s), customer %s\n", t.Workflow.Name, t.Workflow.Title, t.Workflow.Page(), t.PSID)
	for _, it := range t.Items {
		switch {
		case it.Check != "":
			fmt.Fprintf(&b, "    ✓ %s\n", it.Check)
		case it.To == "":
			fmt.Fprintf(&b, "  %-9s   %s — %s\n", it.From, it.Label, it.Detail)
		default:
			fmt.Fprintf(&b, "  %-9s → %-9s %s — %s\n", it.From, it.To, it.Label, it.Detail)
		}
	}
	return b.String()
}

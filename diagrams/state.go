package diagrams

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"

	"github.com/threadctl/threadctl/states"
)

// Highlight marks a thread on a state diagram: its current state and its
// last transitions (newest first).
type Highlight struct {
	State  states.State
	Recent []Transition
}

// Transition is a transition a thread made.
type Transition struct {
	Event    states.Event
	Observed states.Observed
	From, To states.State
}

// edge is every rule of the table between two states.
type edge struct {
	from, to states.State
	labels   []string
	recent   int // 1 for the newest transition of a highlighted thread, 0 if none
}

// edges derives the diagram's edges from table t: one per (source,
// destination), naming each event and what it does. No-change rows
// (self-loops) and refusals are left out of the drawing; NoChange lists them.
func edges(t states.Table, h *Highlight) []edge {
	var out []edge
	index := map[[2]states.State]int{}
	for _, r := range states.Rules(t) {
		for _, from := range r.From {
			to := r.Dst(from)
			if to == from {
				continue
			}
			k := [2]states.State{from, to}
			i, ok := index[k]
			if !ok {
				i = len(out)
				index[k] = i
				out = append(out, edge{from: from, to: to})
			}
			if l := ruleLabel(r); !slices.Contains(out[i].labels, l) {
				out[i].labels = append(out[i].labels, l)
			}
		}
	}
	if h != nil {
		for n, s := range h.Recent {
			if i, ok := index[[2]states.State{s.From, s.To}]; ok && out[i].recent == 0 {
				out[i].recent = n + 1
			}
		}
	}
	return out
}

// ruleLabel names a row's event and, after a slash, what it does that a
// reader needs: the Graph call RingCX makes and what happens to the agent's
// queued contents ("request_expired / take, flush").
func ruleLabel(r states.Rule) string {
	l := eventLabel(r)
	var does []string
	if r.Confirm {
		does = append(does, "ask owner")
	}
	if r.Call != states.NoCall {
		does = append(does, callShort(r.Call))
	}
	if q, ok := queueLabels[r.Queue]; ok {
		does = append(does, q)
	}
	if len(does) > 0 {
		l += " / " + strings.Join(does, ", ")
	}
	return l
}

// eventLabel names a row's event, with Meta's answer for owner_observed.
func eventLabel(r states.Rule) string {
	if r.Observed != "" {
		return string(r.Event) + " (Meta: " + string(r.Observed) + ")"
	}
	return string(r.Event)
}

var queueLabels = map[states.Queue]string{states.QueueFlush: "flush", states.QueueFail: "fail queue"}

// callShort names a Graph call in a label.
func callShort(c states.Call) string { return strings.TrimSuffix(string(c), "_thread_control") }

// NoChange lists, per state, the events that are accepted there without
// changing the state (with the call they make, if any), and those refused
// with what to do instead.
func NoChange(t states.Table) map[states.State][]string {
	out := map[states.State][]string{}
	for _, r := range states.Rules(t) {
		for _, from := range r.From {
			if r.Dst(from) == from {
				l := eventLabel(r)
				switch {
				case r.Refuse != "":
					l += " (refused)"
				case r.Call != states.NoCall:
					l += " / " + callShort(r.Call)
				}
				if !slices.Contains(out[from], l) {
					out[from] = append(out[from], l)
				}
			}
		}
	}
	return out
}

func mermaidID(s states.State) string { return strings.ReplaceAll(string(s), "-", "_") }

// Mermaid renders table t as a Mermaid stateDiagram-v2, with h's state and
// transitions marked when h is not nil.
func Mermaid(t states.Table, h *Highlight) string {
	var b strings.Builder
	fmt.Fprintf(&b, "---\ntitle: threadctl thread machine — %s\n---\nstateDiagram-v2\n", t.Title())
	for _, s := range states.All {
		fmt.Fprintf(&b, "    state \"%s\" as %s\n", s, mermaidID(s))
	}
	fmt.Fprintf(&b, "    [*] --> %s\n", mermaidID(states.Idle))
	for _, e := range edges(t, h) {
		label := strings.Join(e.labels, "<br/>")
		if e.recent > 0 {
			label = fmt.Sprintf("⟨%d⟩ %s", e.recent, label)
		}
		fmt.Fprintf(&b, "    %s --> %s : %s\n", mermaidID(e.from), mermaidID(e.to), label)
	}
	nc := NoChange(t)
	for _, s := range states.All {
		if len(nc[s]) > 0 {
			fmt.Fprintf(&b, "    note right of %s\n        no change: %s\n    end note\n", mermaidID(s), strings.Join(nc[s], ", "))
		}
	}
	if h != nil && h.State != "" {
		b.WriteString("    classDef current fill:#ffd54f,stroke:#e65100,stroke-width:3px\n")
		fmt.Fprintf(&b, "    class %s current\n", mermaidID(h.State))
	}
	return b.String()
}

// DOT renders table t as Graphviz DOT, with h's state filled and its recent
// transitions drawn bold and numbered when h is not nil.
func DOT(t states.Table, h *Highlight) string {
	var b strings.Builder
	fmt.Fprintf(&b, "digraph \"threadctl_%s\" {\n", t.Name())
	fmt.Fprintf(&b, "  label=%s;\n  labelloc=t;\n  rankdir=LR;\n  fontname=\"Helvetica\";\n", dotString([]string{"threadctl thread machine — " + t.Title()}))
	b.WriteString("  node [shape=box, style=\"rounded,filled\", fillcolor=\"#e3f2fd\", fontname=\"Helvetica\"];\n")
	b.WriteString("  edge [fontname=\"Helvetica\", fontsize=10];\n")
	b.WriteString("  start [shape=point, width=0.15, label=\"\"];\n")
	nc := NoChange(t)
	for _, s := range states.All {
		attrs := []string{fmt.Sprintf("label=<<b>%s</b>%s>", s, noChangeHTML(nc[s]))}
		if h != nil && h.State == s {
			attrs = append(attrs, `fillcolor="#ffd54f"`, `penwidth=3`, `color="#e65100"`)
		}
		fmt.Fprintf(&b, "  %q [%s];\n", s, strings.Join(attrs, ", "))
	}
	fmt.Fprintf(&b, "  start -> %q;\n", states.Idle)
	for _, e := range edges(t, h) {
		lines := e.labels
		attrs := ""
		if e.recent > 0 {
			lines = append([]string{fmt.Sprintf("(%d)", e.recent)}, lines...)
			attrs = `, penwidth=3, color="#e65100", fontcolor="#e65100"`
		}
		fmt.Fprintf(&b, "  %q -> %q [label=%s%s];\n", e.from, e.to, dotString(lines), attrs)
	}
	b.WriteString("}\n")
	return b.String()
}

// dotString is a DOT string of lines (centred, one per line).
func dotString(lines []string) string {
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = esc.Replace(l)
	}
	return `"` + strings.Join(out, `\n`) + `"`
}

func noChangeHTML(events []string) string {
	if len(events) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(`<br/><font point-size="9" color="#555555">no change:`)
	for _, e := range events {
		b.WriteString("<br/>" + htmlEscape(e))
	}
	b.WriteString("</font>")
	return b.String()
}

func htmlEscape(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	return r.Replace(s)
}

// ErrNoGraphviz is returned by SVG when Graphviz's dot is not installed.
var ErrNoGraphviz = errors.New("graphviz's dot is not installed: install the Debian package graphviz (make setup) to render SVG; the .dot and .mmd formats need nothing")

// SVG renders DOT source to SVG with Graphviz's dot.
func SVG(ctx context.Context, dot string) ([]byte, error) {
	path, err := exec.LookPath("dot")
	if err != nil {
		return nil, ErrNoGraphviz
	}
	cmd := exec.CommandContext(ctx, path, "-Tsvg")
	cmd.Stdin = strings.NewReader(dot)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("dot -Tsvg: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

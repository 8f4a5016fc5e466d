package diagrams

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/threadctl/threadctl/states"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./diagrams -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (run go test ./diagrams -update if the change is meant):\ngot:\n%s", name, got)
	}
}

var highlight = &Highlight{State: states.Agent, Recent: []Transition{
	{Event: states.ControlPassed, From: states.Pending, To: states.Agent},
	{Event: states.HandoverToAgent, From: states.Bot, To: states.Pending},
}}

func TestStateDiagramsGolden(t *testing.T) {
	for _, p := range states.Tables {
		t.Run(p.Name(), func(t *testing.T) {
			golden(t, p.Name()+".mmd", []byte(Mermaid(p, nil)))
			golden(t, p.Name()+".dot", []byte(DOT(p, nil)))
		})
	}
	golden(t, "bot-highlight.mmd", []byte(Mermaid(states.HOP(states.PrimaryBot), highlight)))
	golden(t, "bot-highlight.dot", []byte(DOT(states.HOP(states.PrimaryBot), highlight)))
}

// TestStateDiagramsShowEveryRule checks the drawings against the tables:
// every transition that changes the state is an edge with its event and
// call, and every no-change row is listed on its state.
func TestStateDiagramsShowEveryRule(t *testing.T) {
	for _, p := range states.Tables {
		dot, mmd := DOT(p, nil), Mermaid(p, nil)
		for _, r := range states.Rules(p) {
			for _, from := range r.From {
				label := ruleLabel(r)
				if !strings.Contains(dot, label) || !strings.Contains(mmd, label) {
					t.Errorf("%s: %s from %s (%q) is missing", p, r.Name(), from, label)
				}
				to := r.Dst(from)
				if to == from {
					continue
				}
				edge := `"` + string(from) + `" -> "` + string(to) + `"`
				if !strings.Contains(dot, edge) {
					t.Errorf("%s: no DOT edge %s for %s", p, edge, r.Name())
				}
				medge := mermaidID(from) + " --> " + mermaidID(to) + " :"
				if !strings.Contains(mmd, medge) {
					t.Errorf("%s: no Mermaid edge %s for %s", p, medge, r.Name())
				}
			}
		}
	}
	// The tables differ where SPEC.md §2 says they do.
	if DOT(states.HOP(states.PrimaryBot), nil) == DOT(states.HOP(states.PrimaryRingCX), nil) {
		t.Error("the bot and ringcx diagrams are the same")
	}
}

func TestHighlight(t *testing.T) {
	dot := DOT(states.HOP(states.PrimaryBot), highlight)
	if !strings.Contains(dot, `"agent" [label=<<b>agent</b>`) || !strings.Contains(dot, `fillcolor="#ffd54f"`) {
		t.Error("the current state is not filled")
	}
	if !strings.Contains(dot, `"pending-request" -> "agent" [label="(1)\ncontrol_passed`) || !strings.Contains(dot, `"bot" -> "pending-request" [label="(2)\n`) {
		t.Errorf("recent transitions are not numbered:\n%s", dot)
	}
	if strings.Count(dot, "penwidth=3") != 3 { // the state and two edges
		t.Errorf("want 3 bold elements, got %d", strings.Count(dot, "penwidth=3"))
	}
	mmd := Mermaid(states.HOP(states.PrimaryBot), highlight)
	if !strings.Contains(mmd, "class agent current") || !strings.Contains(mmd, "⟨1⟩ control_passed") {
		t.Errorf("Mermaid highlight missing:\n%s", mmd)
	}
}

func TestSVG(t *testing.T) {
	if _, err := exec.LookPath("dot"); err != nil {
		if os.Getenv("THREADCTL_REQUIRE_GRAPHVIZ") == "1" {
			t.Fatal("Graphviz's dot is required (THREADCTL_REQUIRE_GRAPHVIZ=1) but not installed")
		}
		t.Skip("Graphviz's dot is not installed")
	}
	svg, err := SVG(context.Background(), DOT(states.HOP(states.PrimaryBot), nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"<svg", "pending&#45;request", "handover_to_agent / request"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	if _, err := SVG(context.Background(), "digraph {"); err == nil || !strings.Contains(err.Error(), "dot -Tsvg") {
		t.Errorf("bad DOT: error = %v", err)
	}
}

func TestSVGWithoutGraphviz(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := SVG(context.Background(), DOT(states.HOP(states.PrimaryBot), nil))
	if !errors.Is(err, ErrNoGraphviz) || !strings.Contains(err.Error(), "apt") && !strings.Contains(err.Error(), "graphviz") {
		t.Errorf("SVG without dot = %v, want ErrNoGraphviz saying what to install", err)
	}
}

// trace is a played workflow written out by hand, for the renderers.
var trace = &Trace{
	Workflow: Workflow{Name: "demo", Title: "Demo", Routing: states.HandoverProtocol, Primary: states.PrimaryNone},
	PSID:     "7000000000000001",
	Items: []Item{
		{From: Customer, To: IdleMode, Label: "Sends message (no primary)", Detail: `"Hello; #1?"`},
		{From: BotActor, To: IdleMode, Label: "Requests (and automatically gets) thread control via FB API", Detail: "request_thread_control"},
		{From: RingCX, Check: "threadctl idle, Meta owner bot"},
		{From: RingCX, Label: "take_thread_control refused (100/2534037)", Detail: "(#100) The action is invalid since it's not the thread owner."},
		{From: Agent, To: Customer, Label: "Answers", Detail: `Send API: "<b>hi</b> & bye"`},
	},
}

func TestSequenceGolden(t *testing.T) {
	if got := trace.Participants(); strings.Join(got, ",") != "Idle mode,Customer,Bot,Agent,RingCX" {
		t.Errorf("Participants() = %v", got)
	}
	mmd := trace.SequenceMermaid()
	if strings.Contains(mmd, "Hello; #1") {
		t.Error("Mermaid text not escaped")
	}
	golden(t, "sequence.mmd", []byte(mmd))
	svg := trace.SequenceSVG()
	if bytes.Contains(svg, []byte("<b>hi")) {
		t.Error("SVG text not escaped")
	}
	golden(t, "sequence.svg", svg)
}

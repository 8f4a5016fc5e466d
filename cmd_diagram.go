package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/threadctl/threadctl/diagrams"
	"github.com/threadctl/threadctl/states"
)

// cmdDiagram prints a state diagram of a primary's table, or a workflow's
// sequence diagram recorded by playing it, or writes them all (--docs).
func cmdDiagram(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var primary, workflow, docs string
	format := "mmd"
	s := newSettings("diagram")
	s.String(&primary, "primary", "state diagram of this table: bot, ringcx, none (Handover Protocol, by primary), cr-bot, cr-bot-no-takeover, cr-ringcx, cr-ringcx-no-takeover, cr-none (Conversation Routing)").noEnv()
	s.String(&workflow, "workflow", "sequence diagram of this seed workflow: "+workflowNames()).noEnv()
	s.String(&format, "format", "mmd (Mermaid), dot (Graphviz; state diagrams) or svg").noEnv()
	s.String(&docs, "docs", "write every diagram into this directory (docs)").noEnv()
	rest, err := s.parse(args)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return fmt.Errorf("diagram takes no arguments, got %q", rest)
	case docs != "":
		return writeDocs(ctx, docs, stderr)
	case (primary == "") == (workflow == ""):
		return fmt.Errorf("give --primary (state diagram) or --workflow (sequence diagram), or --docs DIR")
	case primary != "":
		p, err := states.ParseTable(primary)
		if err != nil {
			return err
		}
		out, err := stateDiagram(ctx, p, format)
		if err != nil {
			return err
		}
		_, err = stdout.Write(out)
		return err
	}
	w, err := diagrams.FindWorkflow(workflow)
	if err != nil {
		return err
	}
	if format != "mmd" && format != "svg" {
		return fmt.Errorf("--format %q: a workflow is drawn as mmd or svg", format)
	}
	trace, err := recordWorkflow(ctx, w, stderr)
	if err != nil {
		return err
	}
	if format == "svg" {
		_, err = stdout.Write(trace.SequenceSVG())
		return err
	}
	_, err = io.WriteString(stdout, trace.SequenceMermaid())
	return err
}

// stateDiagram renders a table in a format.
func stateDiagram(ctx context.Context, p states.Table, format string) ([]byte, error) {
	switch format {
	case "mmd":
		return []byte(diagrams.Mermaid(p, nil)), nil
	case "dot":
		return []byte(diagrams.DOT(p, nil)), nil
	case "svg":
		dot := diagrams.DOT(p, nil)
		svg, err := diagrams.SVG(ctx, dot)
		if err != nil {
			return nil, err
		}
		return stampSVG(svg, dot), nil
	}
	return nil, fmt.Errorf("--format %q: use mmd, dot or svg", format)
}

// stampSVG records in an SVG the hash of the DOT it was rendered from, so
// that a test can tell a stale SVG without Graphviz.
func stampSVG(svg []byte, dot string) []byte {
	return append(svg, []byte(dotStamp(dot)+"\n")...)
}

func dotStamp(dot string) string {
	h := sha256.Sum256([]byte(dot))
	return "<!-- rendered from DOT sha256:" + hex.EncodeToString(h[:]) + " -->"
}

// docsPSID is the customer of each recorded workflow, fixed so that the
// committed diagrams are reproducible.
func docsPSID(i int) string { return fmt.Sprintf("70000000000000%02d", i+1) }

// recordWorkflow plays a workflow on a private threadctl and simulator.
func recordWorkflow(ctx context.Context, w diagrams.Workflow, stderr io.Writer) (*diagrams.Trace, error) {
	app, cleanup, err := startPrivate(ctx, w, stderr)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	ep := diagrams.Endpoints{Threadctl: "http://" + app.Addr(), Sim: app.SimURL(), Token: demoAPIToken, PageID: demoPageID, RingCXAppID: demoRingCXAppID, BotAppID: demoBotAppID}
	i := 0
	for j, x := range diagrams.Workflows {
		if x.Name == w.Name {
			i = j
		}
	}
	trace, err := diagrams.Play(ctx, w, ep, docsPSID(i))
	if err != nil {
		return nil, fmt.Errorf("playing %s: %w", w.Name, err)
	}
	return trace, nil
}

// docFiles renders every diagram: state diagrams per primary (mmd, dot, and
// svg when Graphviz is installed) and the recorded workflows (mmd, svg).
func docFiles(ctx context.Context, stderr io.Writer, withSVG bool) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, p := range states.Tables {
		for _, f := range []string{"mmd", "dot", "svg"} {
			if f == "svg" && !withSVG {
				continue
			}
			out, err := stateDiagram(ctx, p, f)
			if err != nil {
				return nil, err
			}
			files[filepath.Join("states", p.Name()+"."+f)] = out
		}
	}
	for _, w := range diagrams.Workflows {
		trace, err := recordWorkflow(ctx, w, stderr)
		if err != nil {
			return nil, err
		}
		files[filepath.Join("workflows", w.Name+".mmd")] = []byte(trace.SequenceMermaid())
		files[filepath.Join("workflows", w.Name+".svg")] = trace.SequenceSVG()
	}
	return files, nil
}

func writeDocs(ctx context.Context, dir string, stderr io.Writer) error {
	files, err := docFiles(ctx, stderr, true)
	if err != nil {
		return err
	}
	for name, b := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "wrote %d diagrams under %s\n", len(files), strings.TrimSuffix(dir, "/"))
	return nil
}

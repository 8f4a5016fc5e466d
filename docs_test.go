package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/threadctl/threadctl/diagrams"
	"github.com/threadctl/threadctl/states"
)

// TestDocsAreCurrent regenerates every diagram (the workflows by playing
// them) and fails when a committed one under docs/ differs: run
// `make docs` after changing the machine, the workflows or the renderers.
func TestDocsAreCurrent(t *testing.T) {
	files, err := docFiles(context.Background(), io.Discard, false)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join("docs", name))
		if err != nil {
			t.Errorf("docs/%s: %v (run make docs)", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("docs/%s is stale: run make docs", name)
		}
	}
	// State SVGs are rendered by Graphviz; each records the DOT it came from.
	for _, p := range states.Tables {
		svg, err := os.ReadFile(filepath.Join("docs", "states", p.Name()+".svg"))
		if err != nil {
			t.Errorf("docs/states/%s.svg: %v (run make docs)", p, err)
			continue
		}
		if !bytes.Contains(svg, []byte(dotStamp(diagrams.DOT(p, nil)))) {
			t.Errorf("docs/states/%s.svg was not rendered from the current DOT: run make docs", p)
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if strings.HasSuffix(name, ".svg") && !strings.Contains(string(readme), "docs/"+filepath.ToSlash(name)) {
			t.Errorf("README.md does not show docs/%s", name)
		}
	}
}

package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// module is this module's path, shortened to "." in the rules below.
const module = "github.com/threadctl/threadctl"

// layering is who may depend on what (STYLE.md: one adapter per
// technology, the domain in the middle). A package is named by its path in
// the module ("engine", "store/wal", "." for main); a rule on a package
// applies to its subpackages too.
var layering = []layerRule{
	{kind: onlyImportedBy, target: "go.etcd.io/bbolt", pkgs: []string{"store"}},
	{kind: onlyImportedBy, target: "github.com/labstack/echo", pkgs: []string{"server"}},
	{kind: onlyImportedBy, target: "github.com/looplab/fsm", pkgs: []string{"states"}},
	{kind: onlyImportedBy, target: "github.com/prometheus/client_golang", pkgs: []string{"server"}},
	{kind: onlyImportedBy, target: "go.etcd.io/etcd", pkgs: []string{"store"}},
	// engine/enginetest builds the engine's test environment (store,
	// server, simulator): it is the one subpackage of engine the rule does
	// not cover, and only tests may import it.
	{kind: neverDependsOn, target: "engine", except: []string{"engine/enginetest"}, pkgs: []string{module + "/store", module + "/server", module + "/messenger", module + "/diagrams"}},
	{kind: onlyImportedBy, target: module + "/engine/enginetest", pkgs: nil},
	{kind: neverDependsOn, target: "states", pkgs: []string{module + "/"}},
	{kind: neverDependsOn, target: "messenger", pkgs: []string{module + "/"}},
	{kind: neverDependsOn, target: "store", pkgs: []string{module + "/server", module + "/messenger", module + "/diagrams"}},
	{kind: neverDependsOn, target: "diagrams", pkgs: []string{module + "/engine", module + "/store", module + "/server", module + "/messenger"}},
}

type ruleKind int

const (
	// onlyImportedBy: only pkgs (and their subpackages) import target (a
	// path prefix) directly; no pkgs: only tests. Tests may import anything.
	onlyImportedBy ruleKind = iota
	// neverDependsOn: package target (and its subpackages) depends, directly
	// or not, on no package whose path starts with one of pkgs.
	neverDependsOn
)

type layerRule struct {
	kind   ruleKind
	target string
	pkgs   []string
	except []string // neverDependsOn: packages below target it does not cover
}

// goPackage is what go list says of a package.
type goPackage struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// within reports whether a module package (full path) is rel or below it.
func within(path, rel string) bool {
	short := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
	if short == "" {
		short = "."
	}
	return short == rel || strings.HasPrefix(short, rel+"/")
}

func hasPrefixAny(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if path == strings.TrimSuffix(p, "/") || strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// violations lists what breaks the rules in a package graph.
func violations(pkgs []goPackage, rules []layerRule) []string {
	var out []string
	for _, r := range rules {
		for _, p := range pkgs {
			switch r.kind {
			case onlyImportedBy:
				if slices.ContainsFunc(r.pkgs, func(rel string) bool { return within(p.ImportPath, rel) }) {
					continue
				}
				who := strings.Join(r.pkgs, ", ")
				if who == "" {
					who = "tests"
				}
				for _, imp := range p.Imports {
					if strings.HasPrefix(imp, r.target) {
						out = append(out, p.ImportPath+" imports "+imp+"; only "+who+" may")
					}
				}
			case neverDependsOn:
				if !within(p.ImportPath, r.target) || slices.ContainsFunc(r.except, func(rel string) bool { return within(p.ImportPath, rel) }) {
					continue
				}
				for _, d := range p.Deps {
					if hasPrefixAny(d, r.pkgs) && !within(d, r.target) {
						out = append(out, p.ImportPath+" depends on "+d)
					}
				}
			}
		}
	}
	return out
}

func TestLayering(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", "./...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p goPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 7 {
		t.Fatalf("go list found %d packages; want the module's", len(pkgs))
	}
	for _, v := range violations(pkgs, layering) {
		t.Error(v)
	}

	// The rules catch what they forbid: the same graph with one forbidden
	// import added per rule.
	broken := []struct {
		name string
		pkg  goPackage
	}{
		{"bbolt outside store", goPackage{ImportPath: module + "/engine", Imports: []string{"go.etcd.io/bbolt"}}},
		{"echo outside server", goPackage{ImportPath: module + "/diagrams", Imports: []string{"github.com/labstack/echo/v4"}}},
		{"fsm outside states", goPackage{ImportPath: module + "/engine", Imports: []string{"github.com/looplab/fsm"}}},
		{"prometheus outside server", goPackage{ImportPath: module + "/store", Imports: []string{"github.com/prometheus/client_golang/prometheus"}}},
		{"etcd outside store", goPackage{ImportPath: module + "/server", Imports: []string{"go.etcd.io/etcd/client/v3"}}},
		{"engine on store", goPackage{ImportPath: module + "/engine", Deps: []string{module + "/store"}}},
		{"engine on messenger", goPackage{ImportPath: module + "/engine", Deps: []string{module + "/messenger"}}},
		{"engine on server", goPackage{ImportPath: module + "/engine", Deps: []string{module + "/server"}}},
		{"another engine subpackage on store", goPackage{ImportPath: module + "/engine/enginetestx", Deps: []string{module + "/store"}}},
		{"enginetest outside tests", goPackage{ImportPath: module, Imports: []string{module + "/engine/enginetest"}}},
		{"states on engine", goPackage{ImportPath: module + "/states", Deps: []string{module + "/engine"}}},
		{"messenger on engine", goPackage{ImportPath: module + "/messenger", Deps: []string{module + "/engine"}}},
	}
	for _, b := range broken {
		if len(violations([]goPackage{b.pkg}, layering)) == 0 {
			t.Errorf("%s: not caught by the rules", b.name)
		}
	}
}

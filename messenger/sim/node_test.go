package sim_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// requireThirdParty makes a missing Node.js or node_modules a failure instead
// of a skip (CI sets it after installing them).
const requireThirdParty = "THREADCTL_REQUIRE_THIRDPARTY"

// nodePackages returns the node binary and the installed version of the npm
// package main of the folder dir, after checking that every dependency of
// dir/package.json is installed at its pinned version. It skips the test
// when Node.js or node_modules are missing (fails under
// THREADCTL_REQUIRE_THIRDPARTY=1); install names the command that installs
// them.
func nodePackages(t *testing.T, dir, main, install string) (node, version string) {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv(requireThirdParty) == "1" {
			t.Fatalf("%s (%s=1 requires this test to run)", msg, requireThirdParty)
		}
		t.Skipf("%s; set %s=1 to make this a failure", msg, requireThirdParty)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		unavailable("Node.js is not installed (node not on PATH)")
	}
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("%s/package.json: %v", dir, err)
	}
	for name, pin := range pkg.Dependencies {
		var installed struct {
			Version string `json:"version"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", name, "package.json"))
		if errors.Is(err, os.ErrNotExist) {
			unavailable("%s/node_modules is missing: run `%s`", dir, install)
		} else if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &installed); err != nil {
			t.Fatalf("installed %s: %v", name, err)
		}
		if installed.Version != pin {
			t.Fatalf("%s/node_modules has %s %s, package.json pins %s: run `%s`", dir, name, installed.Version, pin, install)
		}
		if name == main {
			version = installed.Version
		}
	}
	if version == "" {
		t.Fatalf("%s/package.json does not depend on %s", dir, main)
	}
	return node, version
}

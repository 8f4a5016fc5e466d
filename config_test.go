package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// serveVars are the variables serve reads; tests clear them so that the
// environment they run in does not leak in (an empty variable is unset).
var serveVars = []string{
	"THREADCTL_CONFIG", "THREADCTL_ADDR", "THREADCTL_DATA_DIR", "THREADCTL_SIM_ADDR", "THREADCTL_DEMO_PRIMARY",
	"THREADCTL_PENDING_TIMEOUT", "THREADCTL_GRAPH_BASE_URL", "THREADCTL_GRAPH_VERSION", "THREADCTL_GRAPH_TIMEOUT",
	"THREADCTL_LOG_LEVEL", "THREADCTL_LOG_FORMAT", "THREADCTL_API_TOKENS", "THREADCTL_VERIFY_TOKEN",
	"THREADCTL_SERVER", "THREADCTL_TOKEN", "THREADCTL_SIM_URL", "THREADCTL_SIM_CALLBACK",
}

func clearEnv(t *testing.T) {
	t.Helper()
	for _, v := range serveVars {
		t.Setenv(v, "")
	}
}

// onePage is a valid page for config files.
const onePage = `pages:
  - page_id: "100000000000001"
    primary: bot
    ringcx_app_id: "200000000000001"
    ringcx_app_secret: s
    page_token: p
    bot_app_ids: ["300000000000001"]
`

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "threadctl.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFlagEnvFilePrecedence checks each serve setting's sources: the
// default, the file (when the setting has a field), the variable over the
// file, the flag over both.
func TestFlagEnvFilePrecedence(t *testing.T) {
	tests := []struct {
		flag, env string
		yaml      string // the field in the file, "" when the setting has none
		get       func(*Config) string
		def, file string
		envVal    string
		flagVal   string
	}{
		{"addr", "THREADCTL_ADDR", `addr: "127.0.0.1:7001"`, func(c *Config) string { return c.Addr }, ":8080", "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"},
		{"data-dir", "THREADCTL_DATA_DIR", `data_dir: /file`, func(c *Config) string { return c.DataDir }, "./data", "/file", "/env", "/flag"},
		{"graph-version", "THREADCTL_GRAPH_VERSION", `graph: {version: v1.0}`, func(c *Config) string { return c.Graph.Version }, "v19.0", "v1.0", "v2.0", "v3.0"},
		{"graph-timeout", "THREADCTL_GRAPH_TIMEOUT", `graph: {timeout: 7s}`, func(c *Config) string { return c.Graph.Timeout.String() }, "5s", "7s", "8s", "9s"},
		{"graph-base-url", "THREADCTL_GRAPH_BASE_URL", `graph: {base_url: "http://file"}`, func(c *Config) string { return c.Graph.BaseURL }, "", "http://file", "http://env", "http://flag"},
		{"sim-addr", "THREADCTL_SIM_ADDR", "", func(c *Config) string { return c.SimAddr }, "127.0.0.1:8081", "", "127.0.0.1:7002", "off"},
		{"demo-primary", "THREADCTL_DEMO_PRIMARY", "", func(c *Config) string { return string(c.DemoPrimary) }, "bot", "", "ringcx", "none"},
		{"pending-timeout", "THREADCTL_PENDING_TIMEOUT", "", func(c *Config) string { return c.PendingTimeout.String() }, "1m0s", "", "2s", "3s"},
		{"log-level", "THREADCTL_LOG_LEVEL", "", func(c *Config) string { return c.LogLevel }, "info", "", "warn", "debug"},
		{"log-format", "THREADCTL_LOG_FORMAT", "", func(c *Config) string { return c.LogFormat }, "text", "", "json", "text"},
	}
	for _, tc := range tests {
		layers := []struct {
			name            string
			file, env, flag bool
			want            string
		}{
			{"default", false, false, false, tc.def},
			{"file over default", true, false, false, tc.file},
			{"variable over file", true, true, false, tc.envVal},
			{"flag over variable and file", true, true, true, tc.flagVal},
			{"flag over file", true, false, true, tc.flagVal},
		}
		for _, l := range layers {
			if l.file && tc.yaml == "" {
				continue
			}
			t.Run(tc.flag+"/"+l.name, func(t *testing.T) {
				clearEnv(t)
				args := []string{}
				if l.file {
					args = append(args, "--config", writeConfig(t, tc.yaml+"\n"+onePage))
				}
				if l.env {
					t.Setenv(tc.env, tc.envVal)
				}
				if l.flag {
					args = append(args, "--"+tc.flag, tc.flagVal)
				}
				cfg, err := loadConfig(args)
				if err != nil {
					t.Fatalf("loadConfig(%q): %v", args, err)
				}
				if got := tc.get(cfg); got != l.want {
					t.Errorf("%s = %q, want %q", tc.flag, got, l.want)
				}
			})
		}
	}
}

// TestFlagConfigFromVariable checks that THREADCTL_CONFIG names the file,
// and that a Graph base URL turns the simulator off unless --sim-addr is given.
func TestFlagConfigFromVariable(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		env     map[string]string
		args    []string
		wantSim string
	}{
		{"file without base_url keeps the simulator", onePage, nil, nil, "127.0.0.1:8081"},
		{"file base_url turns it off", "graph: {base_url: http://meta}\n" + onePage, nil, nil, "off"},
		{"variable base_url turns it off", onePage, map[string]string{"THREADCTL_GRAPH_BASE_URL": "http://meta"}, nil, "off"},
		{"flag base_url turns it off", onePage, nil, []string{"--graph-base-url", "http://meta"}, "off"},
		{"--sim-addr keeps it with a base_url", "graph: {base_url: http://meta}\n" + onePage, nil, []string{"--sim-addr", "127.0.0.1:9"}, "127.0.0.1:9"},
		{"THREADCTL_SIM_ADDR keeps it with a base_url", "graph: {base_url: http://meta}\n" + onePage, map[string]string{"THREADCTL_SIM_ADDR": "127.0.0.1:9"}, nil, "127.0.0.1:9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("THREADCTL_CONFIG", writeConfig(t, tc.yaml))
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := loadConfig(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Pages) != 1 {
				t.Errorf("pages = %d, want the file's 1", len(cfg.Pages))
			}
			if cfg.SimAddr != tc.wantSim {
				t.Errorf("SimAddr = %q, want %q", cfg.SimAddr, tc.wantSim)
			}
		})
	}
}

// TestFlagBadVariable checks that a variable the flag cannot parse is an
// error naming the variable.
func TestFlagBadVariable(t *testing.T) {
	for _, v := range []string{"THREADCTL_PENDING_TIMEOUT", "THREADCTL_GRAPH_TIMEOUT"} {
		t.Run(v, func(t *testing.T) {
			clearEnv(t)
			t.Setenv(v, "soon")
			_, err := loadConfig(nil)
			if err == nil || !strings.Contains(err.Error(), v) {
				t.Errorf("loadConfig error = %v, want one naming %s", err, v)
			}
		})
	}
}

// TestFlagHelpNamesVariables checks that every command's -h shows each
// flag with its variable, and flags that are one invocation's choices
// without one.
func TestFlagHelpNamesVariables(t *testing.T) {
	tests := []struct {
		command string
		vars    map[string]string // flag → variable, "" for none
	}{
		{"serve", map[string]string{"config": "THREADCTL_CONFIG", "addr": "THREADCTL_ADDR", "data-dir": "THREADCTL_DATA_DIR",
			"sim-addr": "THREADCTL_SIM_ADDR", "demo-primary": "THREADCTL_DEMO_PRIMARY", "pending-timeout": "THREADCTL_PENDING_TIMEOUT",
			"graph-base-url": "THREADCTL_GRAPH_BASE_URL", "log-level": "THREADCTL_LOG_LEVEL", "log-format": "THREADCTL_LOG_FORMAT"}},
		{"sim", map[string]string{"addr": "THREADCTL_SIM_ADDR", "callback": "THREADCTL_SIM_CALLBACK", "demo-primary": "THREADCTL_DEMO_PRIMARY", "no-demo": "THREADCTL_NO_DEMO"}},
		{"inspect", map[string]string{"server": "THREADCTL_SERVER", "token": "THREADCTL_TOKEN", "json": "", "limit": "", "page-id": ""}},
		{"check", map[string]string{"data-dir": "THREADCTL_DATA_DIR"}},
		{"simulate", map[string]string{"server": "THREADCTL_SERVER", "sim": "THREADCTL_SIM_URL", "token": "THREADCTL_TOKEN", "psid": ""}},
		{"diagram", map[string]string{"primary": "", "workflow": "", "format": "", "docs": ""}},
	}
	for _, tc := range tests {
		t.Run(tc.command, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), []string{tc.command, "-h"}, &stdout, &stderr); code != 0 {
				t.Fatalf("exit code = %d, want 0 (stderr %s)", code, stderr.String())
			}
			out := stdout.String()
			for flag, v := range tc.vars {
				block := regexp.MustCompile(`(?m)^  --` + regexp.QuoteMeta(flag) + `\b.*\n.*$`).FindString(out)
				if block == "" {
					t.Errorf("no --%s in\n%s", flag, out)
					continue
				}
				got := ""
				if m := regexp.MustCompile(`env (THREADCTL_\w+)`).FindStringSubmatch(block); m != nil {
					got = m[1]
				}
				if got != v {
					t.Errorf("--%s shows variable %q, want %q:\n%s", flag, got, v, block)
				}
			}
		})
	}
}

// TestFlagCommandsReadVariables checks that commands other than serve read
// their settings the same way: the variable, and the flag over it.
func TestFlagCommandsReadVariables(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"check reads THREADCTL_DATA_DIR", []string{"check"}, map[string]string{"THREADCTL_DATA_DIR": "/nonexistent/env"}, "/nonexistent/env/"},
		{"check --data-dir wins", []string{"check", "--data-dir", "/nonexistent/flag"}, map[string]string{"THREADCTL_DATA_DIR": "/nonexistent/env"}, "/nonexistent/flag/"},
		{"inspect reads THREADCTL_SERVER", []string{"inspect", "7000"}, map[string]string{"THREADCTL_SERVER": "http://127.0.0.1:1"}, "running at http://127.0.0.1:1"},
		{"inspect --server wins", []string{"inspect", "7000", "--server", "http://127.0.0.1:2"}, map[string]string{"THREADCTL_SERVER": "http://127.0.0.1:1"}, "running at http://127.0.0.1:2"},
		{"sim reads THREADCTL_SIM_ADDR", []string{"sim"}, map[string]string{"THREADCTL_SIM_ADDR": "256.0.0.1:1"}, "256.0.0.1:1"},
		{"sim reads THREADCTL_DEMO_PRIMARY", []string{"sim"}, map[string]string{"THREADCTL_DEMO_PRIMARY": "robot"}, "robot"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code == 0 || !strings.Contains(out, tc.want) {
				t.Errorf("threadctl %s: exit %d, output %q; want a failure naming %q", strings.Join(tc.args, " "), code, out, tc.want)
			}
		})
	}
}

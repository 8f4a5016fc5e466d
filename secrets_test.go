package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// secretPage is a page whose secrets the cases below give in other ways.
const secretPage = `  - page_id: "100000000000001"
    primary: bot
    ringcx_app_id: "200000000000001"
    bot_app_ids: ["300000000000001"]
`

// TestSecretSources checks that each secret is read from its value, its
// file or its variable.
func TestSecretSources(t *testing.T) {
	type want struct {
		global, page      []string
		secret, pageToken string
		verify            string
	}
	tests := []struct {
		name  string
		yaml  string
		files map[string]string // relative to the config's directory
		env   map[string]string
		want  want
	}{
		{
			name: "values in the file",
			yaml: "api_tokens: [g1, g2]\nwebhook: {verify_token: v1}\npages:\n" + secretPage +
				"    api_tokens: [p1]\n    ringcx_app_secret: s1\n    page_token: t1\n",
			want: want{global: []string{"g1", "g2"}, page: []string{"p1"}, secret: "s1", pageToken: "t1", verify: "v1"},
		},
		{
			name: "one token as a scalar",
			yaml: "api_tokens: g1\npages:\n" + secretPage + "    api_tokens: p1\n    ringcx_app_secret: s1\n    page_token: t1\n",
			want: want{global: []string{"g1"}, page: []string{"p1"}, secret: "s1", pageToken: "t1", verify: demoVerifyToken},
		},
		{
			name: "files, relative to the config file",
			yaml: "api_tokens_file: secrets/global\nwebhook: {verify_token_file: secrets/verify}\npages:\n" + secretPage +
				"    api_tokens_file: secrets/page\n    ringcx_app_secret_file: secrets/app\n    page_token_file: secrets/token\n",
			files: map[string]string{
				"secrets/global": "# operators\ng1\n\n  g2  \n# old: g0\n",
				"secrets/page":   "p1\r\n",
				"secrets/app":    "s1\n",
				"secrets/token":  "t1\r\n\n",
				"secrets/verify": "v1",
			},
			want: want{global: []string{"g1", "g2"}, page: []string{"p1"}, secret: "s1", pageToken: "t1", verify: "v1"},
		},
		{
			name: "variables",
			yaml: "api_tokens_env: GLOBAL_TOKENS\nwebhook: {verify_token_env: VERIFY}\npages:\n" + secretPage +
				"    api_tokens_env: PAGE_TOKENS\n    ringcx_app_secret_env: APP_SECRET\n    page_token_env: PAGE_TOKEN\n",
			env:  map[string]string{"GLOBAL_TOKENS": "g1, g2,", "PAGE_TOKENS": "p1", "APP_SECRET": "s1", "PAGE_TOKEN": "t1", "VERIFY": "v1"},
			want: want{global: []string{"g1", "g2"}, page: []string{"p1"}, secret: "s1", pageToken: "t1", verify: "v1"},
		},
		{
			name: "THREADCTL_ variables replace every source in the file",
			yaml: "api_tokens_file: missing\nwebhook: {verify_token_env: UNSET_VARIABLE}\npages:\n" + secretPage + "    ringcx_app_secret: s1\n    page_token: t1\n",
			env:  map[string]string{"THREADCTL_API_TOKENS": "g9", "THREADCTL_VERIFY_TOKEN": "v9"},
			want: want{global: []string{"g9"}, secret: "s1", pageToken: "t1", verify: "v9"},
		},
		{
			name: "page tokens alone leave no global token",
			yaml: "pages:\n" + secretPage + "    api_tokens: [p1]\n    ringcx_app_secret: s1\n    page_token: t1\n",
			want: want{page: []string{"p1"}, secret: "s1", pageToken: "t1", verify: demoVerifyToken},
		},
		{
			name: "no token at all is the demo token",
			yaml: "pages:\n" + secretPage + "    ringcx_app_secret: s1\n    page_token: t1\n",
			want: want{global: []string{demoAPIToken}, secret: "s1", pageToken: "t1", verify: demoVerifyToken},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			path := writeConfig(t, tc.yaml)
			writeFiles(t, filepath.Dir(path), tc.files)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := loadConfig([]string{"--config", path})
			if err != nil {
				t.Fatal(err)
			}
			p := cfg.Pages[0]
			got := want{global: cfg.APITokens, page: p.APITokens, secret: p.RingCXAppSecret, pageToken: p.PageToken, verify: cfg.Webhook.VerifyToken}
			if !slices.Equal(got.global, tc.want.global) || !slices.Equal(got.page, tc.want.page) ||
				got.secret != tc.want.secret || got.pageToken != tc.want.pageToken || got.verify != tc.want.verify {
				t.Errorf("secrets = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSecretSourceErrors checks the errors of secret sources: they name the
// fields, files and variables, and never a secret.
func TestSecretSourceErrors(t *testing.T) {
	const page = "pages:\n" + secretPage
	secrets := []string{"S3cret-value-1", "S3cret-file-content", "S3cret-env-content"}
	tests := []struct {
		name  string
		yaml  string
		files map[string]string
		env   map[string]string
		want  []string
	}{
		{"value and file", page + "    ringcx_app_secret: S3cret-value-1\n    ringcx_app_secret_file: app\n    page_token: t\n",
			map[string]string{"app": "S3cret-file-content"}, nil,
			[]string{"pages[0] (100000000000001): ringcx_app_secret and ringcx_app_secret_file are both given"}},
		{"file and variable", page + "    ringcx_app_secret: s\n    page_token_file: token\n    page_token_env: TOKEN\n",
			map[string]string{"token": "S3cret-file-content"}, map[string]string{"TOKEN": "S3cret-env-content"},
			[]string{"page_token_file and page_token_env are both given"}},
		{"all three", "api_tokens: [S3cret-value-1]\napi_tokens_file: t\napi_tokens_env: T\n" + page + "    ringcx_app_secret: s\n    page_token: t\n",
			map[string]string{"t": "S3cret-file-content"}, map[string]string{"T": "S3cret-env-content"},
			[]string{"api_tokens, api_tokens_file and api_tokens_env are all given"}},
		{"verify token twice", "webhook: {verify_token: S3cret-value-1, verify_token_env: V}\n" + page + "    ringcx_app_secret: s\n    page_token: t\n",
			nil, map[string]string{"V": "S3cret-env-content"},
			[]string{"webhook.verify_token and verify_token_env are both given"}},
		{"page tokens twice", page + "    api_tokens: [S3cret-value-1]\n    api_tokens_env: P\n    ringcx_app_secret: s\n    page_token: t\n",
			nil, map[string]string{"P": "S3cret-env-content"},
			[]string{"pages[0] (100000000000001): api_tokens and api_tokens_env are both given"}},
		{"missing file", page + "    ringcx_app_secret_file: /nonexistent/app-secret\n    page_token: t\n", nil, nil,
			[]string{"ringcx_app_secret_file: reading /nonexistent/app-secret", "no such file"}},
		{"missing variable", page + "    ringcx_app_secret: s\n    page_token_env: THREADCTL_TEST_UNSET\n", nil, nil,
			[]string{"page_token_env: the environment variable THREADCTL_TEST_UNSET is not set"}},
		{"empty file", "api_tokens_file: tokens\n" + page + "    ringcx_app_secret: s\n    page_token: t\n",
			map[string]string{"tokens": "# none yet\n\n"}, nil,
			[]string{"api_tokens: the file tokens holds no token"}},
		{"empty variable", page + "    ringcx_app_secret_env: EMPTY\n    page_token: t\n", nil, map[string]string{"EMPTY": ""},
			[]string{"ringcx_app_secret: the environment variable EMPTY is empty"}},
		{"no secret at all", page, nil, nil,
			[]string{"page_token is required", "ringcx_app_secret is required"}},
		{"a secret where a map belongs", "webhook: S3cret-value-1\n" + page + "    ringcx_app_secret: s\n    page_token: t\n", nil, nil,
			[]string{"cannot unmarshal !!str into main.WebhookCfg"}},
		{"a malformed sha256 token", "api_tokens: [\"sha256:S3cret-value-1\"]\n" + page + "    ringcx_app_secret: s\n    page_token: t\n", nil, nil,
			[]string{`api_tokens[0]: a token starting with "sha256:" must be followed by the 64 hex digits`}},
		{"a malformed page sha256 token", page + "    api_tokens: [ok, \"sha256:S3cret-value-1\"]\n    ringcx_app_secret: s\n    page_token: t\n", nil, nil,
			[]string{`pages[0] (100000000000001): api_tokens[1]: a token starting with "sha256:"`}},
		{"a map where tokens belong", "api_tokens: {S3cret-value-1: x}\n" + page, nil, nil,
			[]string{"api_tokens must be a list of tokens"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("THREADCTL_TEST_UNSET", "")
			os.Unsetenv("THREADCTL_TEST_UNSET")
			path := writeConfig(t, tc.yaml)
			writeFiles(t, filepath.Dir(path), tc.files)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := loadConfig([]string{"--config", path})
			if err == nil {
				t.Fatal("loadConfig succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error = %q, want it to contain %q", err, w)
				}
			}
			for _, s := range secrets {
				if strings.Contains(err.Error(), s[:7]) {
					t.Errorf("error = %q, it shows a secret (%s)", err, s)
				}
			}
		})
	}
}

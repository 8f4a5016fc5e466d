package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Secrets (API tokens, app secrets, page tokens, the verify token) may be
// written in the config file, or come from a sibling field: <name>_file, a
// file holding the secret, or <name>_env, the environment variable holding
// it. Errors name the field and the file or variable, never the secret.

// tokenList is a list of API tokens in the config file: a YAML sequence,
// or one token as a scalar.
type tokenList []string

// UnmarshalYAML accepts a sequence of scalars or one scalar, and says what
// is wrong without quoting the value (yaml's own errors quote its start).
func (l *tokenList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		*l = tokenList{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(tokenList, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: a token must be a string", c.Line)
			}
			out = append(out, c.Value)
		}
		*l = out
		return nil
	}
	return fmt.Errorf("line %d: api_tokens must be a list of tokens", n.Line)
}

// quoted is how yaml quotes a value in its errors: " `value`".
var quoted = regexp.MustCompile(" `[^`]*`")

// scrubYAMLError drops the values yaml quotes in its errors: a value in the
// wrong place may be a secret.
func scrubYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	out := &yaml.TypeError{Errors: make([]string, len(te.Errors))}
	for i, e := range te.Errors {
		out.Errors[i] = quoted.ReplaceAllString(e, "")
	}
	return out
}

// secretSources is one secret's three possible sources.
type secretSources struct {
	field     string // the field of the value, e.g. "page_token"
	hasValue  bool
	file, env string
}

// read returns the text of the one source given other than the value
// itself ("" and false when it is the value, or none is given), with what
// it came from.
func (s secretSources) read(dir string, lookup func(string) (string, bool)) (text string, fromFile, ok bool, err error) {
	var given []string
	if s.hasValue {
		given = append(given, s.field)
	}
	if s.file != "" {
		given = append(given, s.field+"_file")
	}
	if s.env != "" {
		given = append(given, s.field+"_env")
	}
	if len(given) > 1 {
		both := "both"
		if len(given) > 2 {
			both = "all"
		}
		return "", false, false, fmt.Errorf("%s are %s given: give the secret once", joinAnd(given), both)
	}
	switch {
	case s.file != "":
		path := s.file
		if !filepath.IsAbs(path) && dir != "" {
			path = filepath.Join(dir, path)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			// The path and the reason; the content is never read into an error.
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return "", false, false, fmt.Errorf("%s_file: reading %s: %v", s.field, path, err)
		}
		return string(b), true, true, nil
	case s.env != "":
		v, set := lookup(s.env)
		if !set {
			return "", false, false, fmt.Errorf("%s_env: the environment variable %s is not set", s.field, s.env)
		}
		return v, false, true, nil
	}
	return "", false, false, nil
}

// joinAnd is "a and b", or "a, b and c".
func joinAnd(s []string) string {
	if len(s) == 2 {
		return s[0] + " and " + s[1]
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// resolveString sets *value from its file or variable when one is given.
func resolveString(value *string, src secretSources, dir string, lookup func(string) (string, bool)) error {
	src.hasValue = *value != ""
	text, fromFile, ok, err := src.read(dir, lookup)
	if err != nil || !ok {
		return err
	}
	if fromFile {
		text = strings.TrimRight(text, "\r\n")
	}
	if text == "" {
		return fmt.Errorf("%s: the %s is empty", src.field, sourceName(src))
	}
	*value = text
	return nil
}

// resolveList sets *value from its file (one token a line, blank lines
// and # comments ignored) or variable (comma-separated) when one is given.
func resolveList(value *tokenList, src secretSources, dir string, lookup func(string) (string, bool)) error {
	src.hasValue = len(*value) > 0
	text, fromFile, ok, err := src.read(dir, lookup)
	if err != nil || !ok {
		return err
	}
	var list tokenList
	if fromFile {
		for _, line := range strings.Split(text, "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				list = append(list, line)
			}
		}
	} else {
		list = splitList(text)
	}
	if len(list) == 0 {
		return fmt.Errorf("%s: the %s holds no token", src.field, sourceName(src))
	}
	*value = list
	return nil
}

func sourceName(src secretSources) string {
	if src.file != "" {
		return "file " + src.file
	}
	return "environment variable " + src.env
}

// resolveSecrets reads every secret given by a file or a variable into its
// value field, and reports every problem.
func (c *Config) resolveSecrets(lookup func(string) (string, bool)) []error {
	var errs []error
	add := func(where string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s%v", where, err))
		}
	}
	add("", resolveList(&c.APITokens, secretSources{field: "api_tokens", file: c.APITokensFile, env: c.APITokensEnv}, c.dir, lookup))
	add("webhook.", resolveString(&c.Webhook.VerifyToken, secretSources{field: "verify_token", file: c.Webhook.VerifyTokenFile, env: c.Webhook.VerifyTokenEnv}, c.dir, lookup))
	for i := range c.Pages {
		p := &c.Pages[i]
		where := pageWhere(i, p.PageID) + ": "
		add(where, resolveList(&p.APITokens, secretSources{field: "api_tokens", file: p.APITokensFile, env: p.APITokensEnv}, c.dir, lookup))
		add(where, resolveString(&p.RingCXAppSecret, secretSources{field: "ringcx_app_secret", file: p.RingCXAppSecretFile, env: p.RingCXAppSecretEnv}, c.dir, lookup))
		add(where, resolveString(&p.PageToken, secretSources{field: "page_token", file: p.PageTokenFile, env: p.PageTokenEnv}, c.dir, lookup))
	}
	return errs
}

// pageWhere names a page in errors.
func pageWhere(i int, id string) string {
	where := fmt.Sprintf("pages[%d]", i)
	if id != "" {
		where += " (" + id + ")"
	}
	return where
}

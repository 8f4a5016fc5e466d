package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// settings declares a command's flags, each with its THREADCTL_<NAME>
// variable and its default, so that every command reads its settings the
// same way: a flag given on the command line wins over its variable, the
// variable over the config file (serve), the file over the default.
//
// Each flag is bound to a destination whose value when it is declared is
// the default; parse copies what the command line and the environment gave
// into the destinations (apply does it again after serve reads its file).
type settings struct {
	fs      *flag.FlagSet
	vars    map[string]string // flag name → its variable, "" for none
	binds   map[string]func() // flag name → copies the parsed value to its destination
	from    map[string]string // flag name → where its value came from: "flag" or the variable
	envOnly []envSetting      // variables without a flag (secrets)
	lookup  func(string) (string, bool)
}

// envSetting is a variable with no flag: a secret, which a flag would show
// in the process list.
type envSetting struct {
	name, usage string
	dst         *string
}

func newSettings(command string) *settings {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &settings{fs: fs, vars: map[string]string{}, binds: map[string]func(){}, from: map[string]string{}, lookup: os.LookupEnv}
}

// envName is the variable of a flag: --data-dir is THREADCTL_DATA_DIR.
func envName(flagName string) string {
	return "THREADCTL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// flagDecl is a declared flag, whose variable can be renamed or dropped.
type flagDecl struct {
	s    *settings
	name string
}

// env names the flag's variable differently from THREADCTL_<NAME>.
func (d flagDecl) env(name string) flagDecl {
	d.s.vars[d.name] = name
	return d
}

// noEnv declares a flag that is a choice of one invocation (--json,
// --format), not a setting: it has no variable.
func (d flagDecl) noEnv() flagDecl { return d.env("") }

// bindVar declares a flag whose default is *dst and whose parsed value,
// when given, is copied to *dst.
func bindVar[T any](s *settings, dst *T, name, usage string, define func(p *T, name string, value T, usage string)) flagDecl {
	v := new(T)
	define(v, name, *dst, usage)
	s.vars[name] = envName(name)
	s.binds[name] = func() { *dst = *v }
	return flagDecl{s: s, name: name}
}

func (s *settings) String(dst *string, name, usage string) flagDecl {
	return bindVar(s, dst, name, usage, s.fs.StringVar)
}

func (s *settings) Duration(dst *time.Duration, name, usage string) flagDecl {
	return bindVar(s, dst, name, usage, s.fs.DurationVar)
}

func (s *settings) Int(dst *int, name, usage string) flagDecl {
	return bindVar(s, dst, name, usage, s.fs.IntVar)
}

func (s *settings) Bool(dst *bool, name, usage string) flagDecl {
	return bindVar(s, dst, name, usage, s.fs.BoolVar)
}

// Env declares a variable without a flag; its value, when set, is copied
// to *dst by apply.
func (s *settings) Env(dst *string, name, usage string) {
	s.envOnly = append(s.envOnly, envSetting{name: name, usage: usage, dst: dst})
}

// parse reads args (flags may come before and after positional arguments,
// which it returns), then the variables of the flags the command line did
// not give, and copies them to their destinations.
func (s *settings) parse(args []string) ([]string, error) {
	var positional []string
	for {
		if err := parseFlags(s.fs, args); err != nil {
			if errors.As(err, new(errHelp)) {
				return nil, errHelp{s}
			}
			return nil, err
		}
		if s.fs.NArg() == 0 {
			break
		}
		positional = append(positional, s.fs.Arg(0))
		args = s.fs.Args()[1:]
	}
	s.fs.Visit(func(f *flag.Flag) { s.from[f.Name] = "flag" })
	var errs []error
	s.fs.VisitAll(func(f *flag.Flag) {
		name := s.vars[f.Name]
		if s.from[f.Name] != "" || name == "" {
			return
		}
		v, ok := s.lookup(name)
		if !ok || v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", name, err))
			return
		}
		s.from[f.Name] = name
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.apply()
	return positional, nil
}

// apply copies the values given by flags and variables to their
// destinations, over what the config file set.
func (s *settings) apply() {
	for name := range s.from {
		s.binds[name]()
	}
	for _, e := range s.envOnly {
		if v, ok := s.lookup(e.name); ok && v != "" {
			*e.dst = v
		}
	}
}

// given reports whether the command line or the flag's variable set it.
func (s *settings) given(name string) bool { return s.from[name] != "" }

// usage lists the command's flags, each with its variable and default, and
// the variables without a flag.
func (s *settings) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage of threadctl %s:\n", s.fs.Name())
	s.fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(&b, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		var notes []string
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			notes = append(notes, "default "+quoteDefault(f))
		}
		if v := s.vars[f.Name]; v != "" {
			notes = append(notes, "env "+v)
		}
		if len(notes) > 0 {
			fmt.Fprintf(&b, " (%s)", strings.Join(notes, "; "))
		}
		b.WriteString("\n")
	})
	if len(s.envOnly) > 0 {
		b.WriteString("Variables without a flag (secrets stay out of the process list):\n")
		env := append([]envSetting(nil), s.envOnly...)
		sort.Slice(env, func(i, j int) bool { return env[i].name < env[j].name })
		for _, e := range env {
			fmt.Fprintf(&b, "  %s\n    \t%s\n", e.name, e.usage)
		}
	}
	return b.String()
}

func quoteDefault(f *flag.Flag) string {
	if _, ok := f.Value.(interface{ IsBoolFlag() bool }); ok {
		return f.DefValue
	}
	if typ, _ := flag.UnquoteUsage(f); typ == "string" {
		return fmt.Sprintf("%q", f.DefValue)
	}
	return f.DefValue
}

// parseFlags parses args, turning the flag package's errors into one line
// that names the flag and lists the valid ones.
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return errHelp{}
	}
	if err != nil {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
		return fmt.Errorf("%s: %v (flags: %s)", fs.Name(), err, strings.Join(names, " "))
	}
	return nil
}

// errHelp asks for a command's usage.
type errHelp struct{ s *settings }

func (e errHelp) Error() string { return "help requested" }

func (e errHelp) usage() string { return e.s.usage() }

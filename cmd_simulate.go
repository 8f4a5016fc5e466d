package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/threadctl/threadctl/diagrams"
)

// cmdSimulate plays a seed workflow and prints its trace: against a private
// threadctl and simulator started for the purpose, or against running ones
// (--server and --sim).
func cmdSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	srv := fs.String("server", "", "play against this running threadctl (its demo page's primary must match the workflow's)")
	simURL := fs.String("sim", "http://127.0.0.1:8081", "the running simulator, with --server")
	token := fs.String("token", envOr("THREADCTL_TOKEN", demoAPIToken), "API token, with --server")
	psid := fs.String("psid", "", "the customer's PSID (default: a new one)")
	var name string
	rest := args
	for {
		if err := parseFlags(fs, rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		if name != "" {
			return fmt.Errorf("give one workflow")
		}
		name, rest = fs.Arg(0), fs.Args()[1:]
	}
	if name == "" {
		return fmt.Errorf("give a workflow: %s", workflowNames())
	}
	w, err := diagrams.FindWorkflow(name)
	if err != nil {
		return err
	}
	if *psid == "" {
		*psid = newPSID()
	}
	ep := diagrams.Endpoints{Threadctl: *srv, Sim: *simURL, Token: *token, PageID: demoPageID, RingCXAppID: demoRingCXAppID, BotAppID: demoBotAppID}
	if *srv == "" {
		app, cleanup, err := startPrivate(ctx, w, stderr)
		if err != nil {
			return err
		}
		defer cleanup()
		ep.Threadctl, ep.Sim = "http://"+app.Addr(), app.SimURL()
	}
	trace, err := diagrams.Play(ctx, w, ep, *psid)
	if trace != nil {
		fmt.Fprint(stdout, trace.Text())
	}
	return err
}

func workflowNames() string {
	var names []string
	for _, w := range diagrams.Workflows {
		names = append(names, w.Name)
	}
	return strings.Join(names, ", ")
}

// newPSID makes a PSID-like customer id.
func newPSID() string { return fmt.Sprintf("7%015d", rand.Int64N(1e15)) }

// startPrivate starts a threadctl with its simulator on loopback ports and a
// temporary data directory, with the workflow's primary on the demo page.
func startPrivate(ctx context.Context, w diagrams.Workflow, stderr io.Writer) (*App, func(), error) {
	dir, err := os.MkdirTemp("", "threadctl-simulate-")
	if err != nil {
		return nil, nil, err
	}
	cfg := &Config{Addr: "127.0.0.1:0", SimAddr: "127.0.0.1:0", DataDir: dir, DemoPrimary: w.Primary,
		PendingTimeout: 60 * time.Second, LogLevel: "warn", LogFormat: "text"}
	cfg.applyDefaults()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	app, err := Start(ctx, cfg, log)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return app, func() {
		err := app.Close(context.Background())
		os.RemoveAll(dir)
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "closing:", err)
		}
	}, nil
}

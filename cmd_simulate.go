package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/threadctl/threadctl/diagrams"
)

// cmdSimulate plays a seed workflow and prints its trace: against a private
// threadctl and simulator started for the purpose, or against running ones
// (--server and --sim).
func cmdSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var srv, psid string
	simURL, token := defaultSimURL, demoAPIToken
	s := newSettings("simulate")
	s.String(&srv, "server", "play against this running threadctl (its demo page's primary must match the workflow's; default: a private one)")
	s.String(&simURL, "sim", "the running simulator, with --server").env("THREADCTL_SIM_URL")
	s.String(&token, "token", "API token, with --server")
	s.String(&psid, "psid", "the customer's PSID (default: a new one)").noEnv()
	names, err := s.parse(args)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("give a workflow: %s", workflowNames())
	}
	if len(names) > 1 {
		return fmt.Errorf("give one workflow")
	}
	name := names[0]
	w, err := diagrams.FindWorkflow(name)
	if err != nil {
		return err
	}
	if psid == "" {
		psid = newPSID()
	}
	ep := diagrams.Endpoints{Threadctl: srv, Sim: simURL, Token: token, PageID: demoPageID, RingCXAppID: demoRingCXAppID, BotAppID: demoBotAppID}
	if srv == "" {
		app, cleanup, err := startPrivate(ctx, w, stderr)
		if err != nil {
			return err
		}
		defer cleanup()
		ep.Threadctl, ep.Sim = "http://"+app.Addr(), app.SimURL()
	}
	trace, err := diagrams.Play(ctx, w, ep, psid)
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
	cfg := defaultConfig()
	cfg.Addr, cfg.SimAddr, cfg.DataDir, cfg.LogLevel = "127.0.0.1:0", "127.0.0.1:0", dir, "warn"
	cfg.DemoPrimary, cfg.DemoRouting, cfg.DemoTakeover = w.Primary, w.Routing, w.Takeover
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

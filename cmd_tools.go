package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/threadctl/threadctl/messenger/sim"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/states"
	"github.com/threadctl/threadctl/store"
)

// cmdSim runs the simulator alone, with the demo page whose RingCX webhooks
// go to --callback.
func cmdSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	addr, callback, primary, noDemo := defaultSimAddr, defaultCallbackURL, string(defaultDemoPrimary), false
	routing, takeover := defaultDemoRouting, defaultDemoTakeover
	s := newSettings("sim")
	// The variable of serve's simulator, so that one setting moves both.
	s.String(&addr, "addr", "listen address").env("THREADCTL_SIM_ADDR")
	s.String(&callback, "callback", "the RingCX app's webhook URL on the demo page").env("THREADCTL_SIM_CALLBACK")
	s.String(&primary, "demo-primary", "primary app of the demo page: bot, ringcx or none")
	s.String(&routing, "demo-routing", "routing of the demo page: hop or cr")
	s.String(&takeover, "demo-takeover", "with --demo-routing cr: the RingCX app's takeover setting, on or off")
	s.Bool(&noDemo, "no-demo", "start without the demo page (configure pages with PUT /_sim/pages/{id})")
	rest, err := s.parse(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("sim takes no arguments, got %q", rest)
	}
	cfg := defaultConfig()
	if cfg.DemoPrimary, err = states.ParsePrimary(primary); err != nil {
		return fmt.Errorf("--demo-primary: %w", err)
	}
	if cfg.DemoRouting, err = parseDemoRouting(routing); err != nil {
		return err
	}
	if takeover != "on" && takeover != "off" {
		return fmt.Errorf("--demo-takeover %q: use on or off", takeover)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	sm := sim.New(sim.Options{Logger: log})
	defer sm.Close()
	if !noDemo {
		if err := sm.PutPage(simPage(demoPages(cfg)[0], takeover == "on", callback, demoVerifyToken)); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: sm.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Info("messenger simulator serving", "addr", ln.Addr().String(), "demo", !noDemo)
	return serveErr(srv.Serve(ln))
}

// cmdCheck verifies the bbolt file.
func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	dir := defaultDataDir
	s := newSettings("check")
	s.String(&dir, "data-dir", "directory of the bbolt file")
	rest, err := s.parse(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("check takes no arguments, got %q", rest)
	}
	path := dir + "/" + store.FileName
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no store at %s: %w", path, err)
	}
	// The log first, as it is on disk; opening the store replays it.
	problems, notes, rep, err := store.CheckLog(dir, store.Options{OpenTimeout: time.Second})
	if err != nil {
		return fmt.Errorf("%w (stop the service first: check needs the file to itself)", err)
	}
	db, err := store.Open(dir, store.Options{OpenTimeout: time.Second})
	if err != nil {
		return fmt.Errorf("%w (stop the service first: check needs the file to itself)", err)
	}
	defer db.Close()
	recordProblems, err := db.Check()
	if err != nil {
		return err
	}
	problems = append(problems, recordProblems...)
	counts, _ := db.StateCounts(ctx)
	if len(problems) > 0 {
		fmt.Fprintf(stdout, "%s: %d problem(s):\n", path, len(problems))
		for _, p := range problems {
			fmt.Fprintln(stdout, "  "+p)
		}
		return exitError{code: 1}
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	for _, n := range notes {
		fmt.Fprintln(stdout, "note: "+n)
	}
	fmt.Fprintf(stdout, "%s: ok (%d threads: %d idle, %d bot, %d agent, %d pending-request; log: %d records in %d segments)\n", path, total,
		counts[states.Idle], counts[states.Bot], counts[states.Agent], counts[states.Pending], rep.Records, rep.Segments)
	return nil
}

// cmdInspect prints one thread as the running service sees it.
func cmdInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	srv, token, page, limit, asJSON := defaultServerURL, demoAPIToken, "", 20, false
	s := newSettings("inspect")
	s.String(&srv, "server", "threadctl's base URL")
	s.String(&token, "token", "API token")
	s.String(&page, "page-id", "the page, when the identity is on several").noEnv()
	s.Int(&limit, "limit", "how many transitions to show").noEnv()
	s.Bool(&asJSON, "json", "print the debug endpoint's JSON").noEnv()
	// Flags may come after the identity.
	ids, err := s.parse(args)
	if err != nil {
		return err
	}
	if len(ids) != 1 {
		return fmt.Errorf("give one identity_foreign_id: threadctl inspect <identity_foreign_id> [--server URL]")
	}
	q := url.Values{"limit": {fmt.Sprint(limit)}}
	if page != "" {
		q.Set("page_id", page)
	}
	u := strings.TrimRight(srv, "/") + "/debug/threads/" + url.PathEscape(ids[0]) + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("is threadctl running at %s? %w", srv, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var env server.Envelope
		if json.Unmarshal(body, &env) == nil && env.Message != "" {
			return fmt.Errorf("%d: %s", resp.StatusCode, env.Message)
		}
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	if asJSON {
		_, err := stdout.Write(append(body, '\n'))
		return err
	}
	var v server.ThreadView
	if err := json.Unmarshal(body, &v); err != nil {
		return err
	}
	printThread(stdout, v)
	return nil
}

func printThread(w io.Writer, v server.ThreadView) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	owner := v.OwnerAppID
	if owner == "" {
		owner = "-"
	}
	fmt.Fprintf(tw, "identity\t%s (page %s)\n", v.IdentityForeignID, v.PageID)
	fmt.Fprintf(tw, "state\t%s\n", v.State)
	fmt.Fprintf(tw, "owner app\t%s\n", owner)
	fmt.Fprintf(tw, "primary\t%s\n", v.Primary)
	fmt.Fprintf(tw, "revision\t%d\n", v.Revision)
	if v.Intervention != nil {
		fmt.Fprintf(tw, "intervention\t%s (open)\n", v.Intervention.ID)
	} else {
		fmt.Fprintf(tw, "intervention\t-\n")
	}
	if p := v.PendingRequest; p != nil {
		fmt.Fprintf(tw, "pending request\tsince %s, deadline %s (%s)\n", p.RequestedAt.Format(time.RFC3339), p.Deadline.Format(time.RFC3339), p.Reason)
	}
	if v.ControlExpiresAt != nil {
		fmt.Fprintf(tw, "control expires\t%s\n", v.ControlExpiresAt.Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "queued contents\t%d\n", len(v.QueuedContents))
	for _, c := range v.QueuedContents {
		fmt.Fprintf(tw, "\t%s %q\n", c.ID, c.Body)
	}
	evs := make([]string, len(v.AvailableEvents))
	for i, e := range v.AvailableEvents {
		evs[i] = string(e)
	}
	fmt.Fprintf(tw, "available events\t%s\n", strings.Join(evs, ", "))
	tw.Flush()
	fmt.Fprintln(w, "\ntransitions (newest first):")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REV\tTIME\tEVENT\tCAUSE\tFROM → TO\tOUTCOME\tGRAPH CALLS")
	for _, t := range v.Transitions {
		ev := string(t.Event)
		if t.Observed != "" {
			ev += "(" + string(t.Observed) + ")"
		}
		var calls []string
		for _, c := range t.Calls {
			s := c.Call
			if c.Target != "" {
				s += "→" + c.Target
			}
			calls = append(calls, s+":"+c.Outcome)
		}
		outcome := t.Outcome
		if t.Reason != "" {
			outcome += " (" + t.Reason + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s → %s\t%s\t%s\n", t.Revision, t.At.Format("15:04:05.000"), ev, t.Cause, t.From, t.To, outcome, strings.Join(calls, ", "))
	}
	tw.Flush()
}

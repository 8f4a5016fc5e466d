// Command threadctl is the RingCX side of Messenger's handover protocol: it
// serves the Bots API, keeps every Messenger thread's state machine in
// bbolt, calls Meta's thread-control APIs and receives Meta's webhooks.
//
//	threadctl serve      run the service (with the simulator and a demo page unless pages are configured)
//	threadctl sim        run the Messenger Platform simulator alone
//	threadctl inspect    show one thread's state and history
//	threadctl check      verify the bbolt file and the log
//	threadctl backup     stream a snapshot of a running service into a file
//	threadctl compact    compact a stopped service's bbolt file
//	threadctl simulate   play a seed workflow and print its trace
//	threadctl diagram    print a state or workflow diagram
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `threadctl — the RingCX side of Messenger's handover protocol

Usage: threadctl <command> [flags]

Commands:
  serve      run the service (default: demo page on the simulator, HTTP on :8080)
  sim        run the Messenger Platform simulator alone
  inspect    show one thread's state and history: threadctl inspect <identity_foreign_id>
  check      verify the bbolt file and the log (run it while the service is stopped)
  backup     stream a consistent snapshot from the running service: threadctl backup --out FILE
  compact    rewrite the stopped service's bbolt file without its free pages
  simulate   play a seed workflow and print its trace: threadctl simulate <workflow>
  diagram    print a state diagram (--primary) or a workflow diagram (--workflow)

Run "threadctl <command> -h" for a command's flags. A setting is a flag and
a THREADCTL_<NAME> environment variable (--data-dir: THREADCTL_DATA_DIR);
-h names each one's. A flag wins over its variable, which wins over the
config file.
`

// run is the whole program, with its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	commands := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"serve":    cmdServe,
		"sim":      cmdSim,
		"inspect":  cmdInspect,
		"check":    cmdCheck,
		"backup":   cmdBackup,
		"compact":  cmdCompact,
		"simulate": cmdSimulate,
		"diagram":  cmdDiagram,
	}
	name := args[0]
	if name == "help" || name == "-h" || name == "--help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "threadctl: unknown command %q\n\n%s", name, usage)
		return 2
	}
	err := cmd(ctx, args[1:], stdout, stderr)
	var help errHelp
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &help):
		fmt.Fprint(stdout, help.usage())
		return 0
	case errors.As(err, &exit):
		return exit.code
	}
	fmt.Fprintf(stderr, "threadctl %s: %v\n", name, err)
	return 1
}

// exitError ends a command with a code after it printed what it had to say.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(args)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	app, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	err = app.Wait(ctx)
	log.Info("shutting down")
	if cerr := app.Close(context.Background()); cerr != nil {
		log.Error("shutdown", "err", cerr)
	}
	return err
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/store"
)

// cmdBackup streams a consistent snapshot from a running threadctl into a
// file, checks it, and marks it as restored from a backup, so that a
// service started on it reconciles its threads with Meta first.
func cmdBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	srv, token, out := defaultServerURL, demoAPIToken, ""
	s := newSettings("backup")
	s.String(&srv, "server", "threadctl's base URL")
	s.String(&token, "token", "a global API token")
	s.String(&out, "out", "the file to write (restore: start threadctl on a data directory holding it as "+store.FileName+")").noEnv()
	rest, err := s.parse(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 || out == "" {
		return fmt.Errorf("usage: threadctl backup --out FILE [--server URL] [--token TOKEN]")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(srv, "/")+"/ops/backup", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("is threadctl running at %s? %w", srv, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		var env server.Envelope
		if json.Unmarshal(body, &env) == nil && env.Message != "" {
			return fmt.Errorf("%d: %s", resp.StatusCode, env.Message)
		}
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	tmp := out + ".part"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	start := time.Now()
	n, err := io.Copy(f, resp.Body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("receiving the backup: %w", err)
	}
	problems, err := store.CheckFile(tmp)
	if err == nil && len(problems) > 0 {
		err = fmt.Errorf("the backup fails its check: %s", strings.Join(problems, "; "))
	}
	if err == nil {
		err = store.MarkRestored(tmp)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		d.Sync()
		d.Close()
	}
	fmt.Fprintf(stdout, "%s: %d bytes in %s, checked\n", out, n, time.Since(start).Round(time.Millisecond))
	return nil
}

// cmdCompact rewrites a stopped service's bbolt file without free pages.
func cmdCompact(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	dir := defaultDataDir
	s := newSettings("compact")
	s.String(&dir, "data-dir", "directory of the bbolt file")
	rest, err := s.parse(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("compact takes no arguments, got %q", rest)
	}
	if _, err := os.Stat(filepath.Join(dir, store.FileName)); err != nil {
		return fmt.Errorf("no store in %s: %w", dir, err)
	}
	before, after, err := store.Compact(dir, store.Options{OpenTimeout: time.Second})
	if err != nil {
		return fmt.Errorf("%w (stop the service first: compact needs the file to itself)", err)
	}
	fmt.Fprintf(stdout, "%s: %d → %d bytes\n", filepath.Join(dir, store.FileName), before, after)
	return nil
}

package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupAndCompactCommands backs up a running service with threadctl
// backup, starts a service on the backup, and compacts a stopped one.
func TestBackupAndCompactCommands(t *testing.T) {
	dir := t.TempDir()
	p := startBinary(t, dir)
	for i := range 5 {
		psid := fmt.Sprintf("75000000000000%02d", i)
		resp, err := http.Post(p.simURL+"/_sim/pages/"+demoPageID+"/customers/"+psid+"/messages", "application/json", strings.NewReader(`{"text":"hi"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	backup := filepath.Join(t.TempDir(), "threadctl-backup.db")
	out, err := exec.Command(binary, "backup", "--server", p.addr, "--out", backup).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "checked") {
		t.Fatalf("threadctl backup: %v\n%s", err, out)
	}
	// A page token may not take a backup: only a global one.
	if out, err := exec.Command(binary, "backup", "--server", p.addr, "--token", "wrong", "--out", backup+"2").CombinedOutput(); err == nil || !strings.Contains(string(out), "401") {
		t.Errorf("a backup with a wrong token: %v\n%s", err, out)
	}
	p.stop(t)

	restored := t.TempDir()
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(restored, "threadctl.db"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	q := startBinary(t, restored)
	resp, err := http.Get(q.addr + "/debug/threads?access_token=dev-token")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the restored service answers %d", resp.StatusCode)
	}
	q.stop(t)
	if out, err := exec.Command(binary, "check", "--data-dir", restored).CombinedOutput(); err != nil || !strings.Contains(string(out), ": ok (5 threads") {
		t.Errorf("check of the restored store: %v\n%s", err, out)
	}
	if out, err := exec.Command(binary, "compact", "--data-dir", restored).CombinedOutput(); err != nil || !strings.Contains(string(out), "bytes") {
		t.Errorf("threadctl compact: %v\n%s", err, out)
	}
	if out, err := exec.Command(binary, "check", "--data-dir", restored).CombinedOutput(); err != nil || !strings.Contains(string(out), ": ok (5 threads") {
		t.Errorf("check after compact: %v\n%s", err, out)
	}
}

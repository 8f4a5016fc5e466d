// Command walfloor is a measuring instrument, not part of threadctl: the
// floor a webhook endpoint can reach on this machine with threadctl's log.
// It answers POST /webhooks/messenger the way the cheapest durable receiver
// would — read the body, check its X-Hub-Signature-256 (HMAC-SHA256 with the
// app secret, as threadctl does), append the body to a store/wal log as one record, answer 200 once
// that record is durable — and does nothing else: no parsing, no state, no
// checkpoint. Run the bench's load generator against it beside threadctl
// (make floor) to see how much of what threadctl costs is HTTP and one
// fdatasync, which no design of the store can remove.
//
//	walfloor -addr 127.0.0.1:8090 -secret ringcx-secret
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/threadctl/threadctl/store/wal"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address (loopback)")
	secret := flag.String("secret", "ringcx-secret", "app secret the webhooks are signed with")
	flag.Parse()
	dir, err := os.MkdirTemp("", "walfloor")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	l, err := wal.Open(dir, wal.Options{})
	if err != nil {
		log.Fatal(err)
	}
	// Release what is written, as threadctl's checkpointer does, so that a
	// long run keeps to a few segments.
	go func() {
		for range time.Tick(100 * time.Millisecond) {
			if err := l.ReleaseBefore(l.LastIndex()); err != nil {
				log.Fatal(err)
			}
		}
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("POST /webhooks/messenger", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !signed(body, r.Header.Get("X-Hub-Signature-256"), *secret) {
			http.Error(w, "bad or missing X-Hub-Signature-256", http.StatusUnauthorized)
			return
		}
		if _, err := l.Append(body); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "EVENT_RECEIVED")
	})
	log.Fatal(http.ListenAndServe(*addr, mux))
}

// signed reports whether header is "sha256=" and the hex HMAC-SHA256 of body
// with secret.
func signed(body []byte, header, secret string) bool {
	hexSum, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/threadctl/threadctl/messenger"
	"github.com/threadctl/threadctl/server"
	"github.com/threadctl/threadctl/store/storetest"
)

// BenchmarkWebhookHTTP measures durable webhook transitions through the whole
// HTTP stack — a signed Meta webhook POSTed over loopback, verified, parsed,
// applied and committed before the 200 — next to raw bbolt commits of the
// same size, one db.Update per write and db.Batch, at 1, 64 and 256 callers,
// in one run. (It lives in package store because the raw baseline needs
// bbolt, which no other package imports.)
func BenchmarkWebhookHTTP(b *testing.B) {
	threadBytes, historyBytes := recordSizes(b)
	for _, c := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("http-webhook/callers=%d", c), func(b *testing.B) { benchWebhookHTTP(b, c, false) })
		b.Run(fmt.Sprintf("http-webhook-lean-client/callers=%d", c), func(b *testing.B) { benchWebhookHTTP(b, c, true) })
		b.Run(fmt.Sprintf("bbolt-update/callers=%d", c), func(b *testing.B) {
			benchRaw(b, c, threadBytes, historyBytes, (*bolt.DB).Update)
		})
		b.Run(fmt.Sprintf("bbolt-batch/callers=%d", c), func(b *testing.B) {
			benchRaw(b, c, threadBytes, historyBytes, (*bolt.DB).Batch)
		})
	}
}

// benchWebhookHTTP posts webhooks from callers goroutines, with Go's
// http.Client or, lean, with a minimal HTTP/1.1 client on raw keep-alive
// connections: the load generator shares the two cores with the server, and
// the lean one leaves the server more of them.
func benchWebhookHTTP(b *testing.B, callers int, lean bool) {
	eng, report := newBenchEngine(b)
	defer report()
	ctx := context.Background()
	srv, err := server.New(server.Config{Engine: eng, APITokens: []string{"t"}, WebhookSecrets: []string{"ringcx-secret"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)
	url := "http://" + ln.Addr().String() + "/webhooks/messenger"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: callers, MaxConnsPerHost: callers}, Timeout: 30 * time.Second}
	start := time.Now().UnixMilli()
	var conns []*leanConn
	if lean {
		for range callers {
			c, err := dialLean(ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
	}
	storetest.RunConcurrent(b, callers, "events/s", func(w, i int) error {
		body := fmt.Appendf(nil, `{"object":"page","entry":[{"id":"%s","time":%d,"standby":[{"sender":{"id":"%d"},"recipient":{"id":"%s"},"timestamp":%d,"message":{"mid":"m_%d","text":"hello"}}]}]}`,
			benchPage, start+int64(i), 7000000000000000+w, benchPage, start+int64(i), i)
		sig, _ := messenger.Sign(body, "ringcx-secret")
		if lean {
			return conns[w].post("/webhooks/messenger", sig, body)
		}
		return storetest.PostWebhook(client, url, body, sig)
	})
}

// leanConn is a minimal HTTP/1.1 client on one keep-alive connection.
type leanConn struct {
	net.Conn
	r   *bufio.Reader
	buf []byte
}

func dialLean(addr string) (*leanConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &leanConn{Conn: c, r: bufio.NewReader(c)}, nil
}

// post sends one signed POST and reads the answer, which must be a 200.
func (c *leanConn) post(path, sig string, body []byte) error {
	c.buf = fmt.Appendf(c.buf[:0], "POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nX-Hub-Signature-256: %s\r\nContent-Length: %d\r\n\r\n", path, sig, len(body))
	c.buf = append(c.buf, body...)
	if _, err := c.Write(c.buf); err != nil {
		return err
	}
	status, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		return fmt.Errorf("webhook answered %q", strings.TrimSpace(status))
	}
	length := -1
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSpace(line)
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Content-Length") {
			if length, err = strconv.Atoi(strings.TrimSpace(v)); err != nil {
				return err
			}
		}
	}
	if length < 0 {
		return errors.New("answer without Content-Length")
	}
	_, err = c.r.Discard(length)
	return err
}

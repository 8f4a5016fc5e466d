package etcd_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threadctl/threadctl/store/etcd"
	"github.com/threadctl/threadctl/store/etcd/etcdtest"
)

// cluster is one real 3-member etcd cluster for the whole package run,
// started in-process on loopback ports; each test works under its own
// prefix.
var cluster *etcdtest.Cluster

func TestMain(m *testing.M) {
	c, err := etcdtest.Start(etcdtest.Options{Members: 3})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the etcd cluster:", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	c.Close()
	os.Exit(code)
}

var prefixes atomic.Int64

// newPrefix is a key prefix no other test uses.
func newPrefix() string {
	return fmt.Sprintf("/test-%d-%d/", time.Now().UnixNano(), prefixes.Add(1))
}

// open opens a store on the cluster under prefix (a new one if ""); the
// test's cleanup closes it.
func open(t testing.TB, prefix string, mod func(*etcd.Options)) *etcd.Store {
	t.Helper()
	if prefix == "" {
		prefix = newPrefix()
	}
	o := etcd.Options{Endpoints: cluster.Endpoints(), Prefix: prefix, SessionTTL: 2 * time.Second, TakeoverInterval: 200 * time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	s, err := etcd.Open(context.Background(), o)
	if err != nil {
		t.Fatalf("etcd.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

package engine_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/store/etcd"
	"github.com/threadctl/threadctl/store/etcd/etcdtest"
)

// openStoreFunc opens the store an engine runs on
// (enginetest.Options.OpenStore).
type openStoreFunc = func() (engine.Store, engine.Coordinator, func() error, error)

// etcdStores starts a real 3-member etcd cluster in-process for the test
// (its cleanup stops it). Each call of the function it returns is a store
// of its own on the cluster, under a key prefix no other uses: the
// openStoreFunc it gives opens that store again at every start of an
// engine, as a restart would.
func etcdStores(t *testing.T) func() openStoreFunc {
	t.Helper()
	cluster, err := etcdtest.Start(etcdtest.Options{Members: 3})
	if err != nil {
		t.Fatalf("starting the etcd cluster: %v", err)
	}
	t.Cleanup(cluster.Close)
	var prefixes atomic.Int64
	return func() openStoreFunc {
		prefix := fmt.Sprintf("/store-%d/", prefixes.Add(1))
		return func() (engine.Store, engine.Coordinator, func() error, error) {
			st, err := etcd.Open(context.Background(), etcd.Options{
				Endpoints: cluster.Endpoints(), Prefix: prefix, SessionTTL: 2 * time.Second,
			})
			if err != nil {
				return nil, nil, nil, err
			}
			return st, st, st.Close, nil
		}
	}
}

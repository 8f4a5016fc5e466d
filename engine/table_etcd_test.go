package engine_test

import (
	"flag"
	"testing"

	"github.com/threadctl/threadctl/states"
)

var etcdCells = flag.String("etcd-cells", "sample", "TestEveryRowOnEtcd: a sample of the cells (sample), every cell (all), or none")

// TestEveryRowOnEtcd is TestEveryRowAgainstSimulator's per-cell check on the
// etcd store, on a real 3-member cluster started in-process for it. All 368
// cells of the tables take several minutes on two cores under -race; by
// default a deterministic sample runs (-etcd-cells=all for every one): in
// the order the full test lists the cells, every third of the Handover
// Protocol's tables and every fifth of Conversation Routing's, which covers
// every table, and every event from every state on each protocol.
func TestEveryRowOnEtcd(t *testing.T) {
	if *etcdCells == "none" || testing.Short() {
		t.Skip("-etcd-cells=none or -short")
	}
	stores := etcdStores(t)
	all := tableCells()
	ran := 0
	for i, c := range all {
		stride := 3
		if c.table.Routing == states.ConversationRouting {
			stride = 5
		}
		if *etcdCells != "all" && (i+1)%stride != 1 {
			continue
		}
		ran++
		t.Run(c.name(), func(t *testing.T) {
			t.Parallel()
			runCellWith(t, c.table, c.event, c.observed, c.from, stores())
		})
	}
	t.Logf("%d of the %d cells on etcd", ran, len(all))
}

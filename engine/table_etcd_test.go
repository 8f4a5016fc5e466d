package engine_test

import (
	"flag"
	"fmt"
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
	events := []struct {
		event    states.Event
		observed states.Observed
	}{
		{states.CustomerMessage, ""}, {states.HandoverToAgent, ""}, {states.HandoverToBot, ""},
		{states.AgentEngage, ""}, {states.ControlPassed, ""}, {states.ControlTaken, ""},
		{states.ControlRequested, ""}, {states.InterventionClosed, ""}, {states.RequestExpired, ""},
		{states.ControlExpiring, ""},
		{states.OwnerObserved, states.ObservedNone}, {states.OwnerObserved, states.ObservedRingCX},
		{states.OwnerObserved, states.ObservedOther},
	}
	n, ran := 0, 0
	for _, tbl := range states.Tables {
		stride := 3
		if tbl.Routing == states.ConversationRouting {
			stride = 5
		}
		for _, ev := range events {
			for _, from := range states.All {
				if ev.event == states.RequestExpired && from != states.Pending || ev.event == states.ControlExpiring && from != states.Agent {
					continue
				}
				n++
				if *etcdCells != "all" && n%stride != 1 {
					continue
				}
				ran++
				name := fmt.Sprintf("%s/%s/%s", tbl, states.Rule{Event: ev.event, Observed: ev.observed}.Name(), from)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					runCellWith(t, tbl, ev.event, ev.observed, from, stores())
				})
			}
		}
	}
	t.Logf("%d of the %d cells on etcd", ran, n)
}

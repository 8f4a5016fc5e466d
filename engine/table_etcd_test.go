package engine_test

import (
	"flag"
	"fmt"
	"testing"

	"github.com/threadctl/threadctl/states"
)

var etcdCells = flag.String("etcd-cells", "sample", "TestEveryHOPRowOnEtcd: every third cell (sample), all Handover Protocol cells (all), or none")

// TestEveryHOPRowOnEtcd is TestEveryRowAgainstSimulator's per-cell check on
// the etcd store, on a real 3-member cluster started in-process for it:
// the Handover Protocol's tables (one per primary). All 138 of their cells
// take a few minutes on two cores under -race; by default a deterministic
// sample — every third cell in the order the full test lists them, which
// covers every table, event and state — runs (-etcd-cells=all for every
// one).
func TestEveryHOPRowOnEtcd(t *testing.T) {
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
		if tbl.Routing != states.HandoverProtocol {
			continue
		}
		for _, ev := range events {
			for _, from := range states.All {
				if ev.event == states.RequestExpired && from != states.Pending || ev.event == states.ControlExpiring && from != states.Agent {
					continue
				}
				n++
				if *etcdCells != "all" && n%3 != 1 {
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
	t.Logf("%d of the %d Handover Protocol cells on etcd", ran, n)
}

package store

import (
	"testing"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/store/storetest"
)

// TestContract runs the assertions every engine.Store keeps (the etcd
// store runs the same) against bbolt.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) engine.Store { return openTest(t) })
}

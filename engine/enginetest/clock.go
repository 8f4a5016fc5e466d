package enginetest

import (
	"time"

	"github.com/threadctl/threadctl/engine/fakeclock"
)

// FakeClock is a clock tests move by hand (Advance); given as Options.Clock
// it is the simulator's clock too.
type FakeClock = fakeclock.Clock

// NewFakeClock is a clock stopped at 2026-11-25 09:00 UTC.
func NewFakeClock() *FakeClock {
	return fakeclock.New(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
}

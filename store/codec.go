package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

// Threads and history entries — most of the file — are stored in a compact
// binary form: a tag byte (binaryTag), then their fields in a fixed order,
// integers as varints, strings and lists length-prefixed, times as
// nanoseconds and Unix seconds (0 for none). A thread with its last 10
// entries takes about a third of its JSON. Values written by earlier versions are JSON (they
// begin with '{') and are still read.

// binaryTag begins a binary record; JSON records begin with '{'.
const binaryTag = 0x02

var errShortRecord = errors.New("record ends early")

type enc struct{ b []byte }

func (e *enc) uint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) int(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) str(s string)  { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}
func (e *enc) u64(v uint64)        { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) dur(d time.Duration) { e.int(int64(d)) }

// time writes the zero time as 0, any other as nanoseconds+1 then Unix
// seconds (all of years 1…9999, which Unix nanoseconds alone are not).
func (e *enc) time(t time.Time) {
	if t.IsZero() {
		e.uint(0)
		return
	}
	e.uint(uint64(t.Nanosecond()) + 1)
	e.int(t.Unix())
}

type dec struct {
	b   []byte
	err error
}

func (d *dec) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShortRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShortRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string {
	n := d.uint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *dec) bool() bool {
	if d.err != nil || len(d.b) < 1 {
		d.fail()
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

func (d *dec) u64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *dec) dur() time.Duration { return time.Duration(d.int()) }

func (d *dec) time() time.Time {
	ns := d.uint()
	if ns == 0 || d.err != nil {
		return time.Time{}
	}
	if ns > 1e9 {
		d.fail()
		return time.Time{}
	}
	return time.Unix(d.int(), int64(ns-1)).UTC()
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = errShortRecord
	}
}

// count reads a list's length, refusing one longer than the record could
// hold (each item takes at least one byte).
func (d *dec) count() int {
	n := d.uint()
	if n > uint64(len(d.b)) || n > math.MaxInt32 {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *dec) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes left over", len(d.b))
	}
	if d.err != nil {
		return fmt.Errorf("decoding %s: %w", what, d.err)
	}
	return nil
}

// marshalThread is t's binary form.
func marshalThread(t *engine.Thread) []byte {
	e := &enc{b: make([]byte, 0, 160+8*len(t.Seen))}
	e.b = append(e.b, binaryTag)
	e.str(t.PageID)
	e.str(t.PSID)
	e.str(string(t.State))
	e.str(t.Owner)
	e.str(string(t.Primary))
	e.uint(t.Revision)
	e.str(t.Intervention)
	e.bool(t.Pending != nil)
	if p := t.Pending; p != nil {
		e.time(p.RequestedAt)
		e.time(p.Deadline)
		e.str(p.Reason)
	}
	for _, tm := range []time.Time{t.LastActivity, t.ControlExpires, t.ControlTimer, t.ExtendAt, t.RecheckAt, t.LastMetaTime, t.CreatedAt, t.UpdatedAt} {
		e.time(tm)
	}
	e.uint(uint64(len(t.Seen)))
	for _, h := range t.Seen {
		e.u64(h)
	}
	return e.b
}

func unmarshalThread(b []byte, t *engine.Thread, what string) error {
	d := &dec{b: b[1:]}
	t.V = engine.FormatVersion
	t.PageID, t.PSID = d.str(), d.str()
	t.State, t.Owner, t.Primary = states.State(d.str()), d.str(), states.Primary(d.str())
	t.Revision = d.uint()
	t.Intervention = d.str()
	if d.bool() {
		t.Pending = &engine.PendingRequest{RequestedAt: d.time(), Deadline: d.time(), Reason: d.str()}
	}
	for _, tm := range []*time.Time{&t.LastActivity, &t.ControlExpires, &t.ControlTimer, &t.ExtendAt, &t.RecheckAt, &t.LastMetaTime, &t.CreatedAt, &t.UpdatedAt} {
		*tm = d.time()
	}
	if n := d.count(); n > 0 {
		t.Seen = make([]uint64, n)
		for i := range t.Seen {
			t.Seen[i] = d.u64()
		}
	}
	return d.done(what)
}

// marshalHistory is h's binary form.
func marshalHistory(h *engine.HistoryEntry) []byte {
	e := &enc{b: make([]byte, 0, 96+64*len(h.Calls))}
	e.b = append(e.b, binaryTag)
	e.uint(h.Revision)
	e.time(h.At)
	e.str(string(h.Event))
	e.str(string(h.Observed))
	e.str(string(h.Cause))
	e.str(string(h.From))
	e.str(string(h.To))
	e.str(h.Owner)
	e.str(string(h.Primary))
	e.str(h.Table)
	e.str(h.Outcome)
	e.str(h.Reason)
	e.time(h.MetaTime)
	e.uint(uint64(len(h.Calls)))
	for _, c := range h.Calls {
		e.str(c.Call)
		e.str(c.Target)
		e.str(c.Outcome)
		e.str(c.Error)
		e.dur(c.Duration)
	}
	return e.b
}

func unmarshalHistory(b []byte, h *engine.HistoryEntry, what string) error {
	d := &dec{b: b[1:]}
	h.V = engine.FormatVersion
	h.Revision = d.uint()
	h.At = d.time()
	h.Event, h.Observed, h.Cause = states.Event(d.str()), states.Observed(d.str()), engine.Cause(d.str())
	h.From, h.To = states.State(d.str()), states.State(d.str())
	h.Owner, h.Primary, h.Table = d.str(), states.Primary(d.str()), d.str()
	h.Outcome, h.Reason = d.str(), d.str()
	h.MetaTime = d.time()
	if n := d.count(); n > 0 {
		h.Calls = make([]engine.CallRecord, n)
		for i := range h.Calls {
			h.Calls[i] = engine.CallRecord{Call: d.str(), Target: d.str(), Outcome: d.str(), Error: d.str(), Duration: d.dur()}
		}
	}
	return d.done(what)
}

// decodeHistory reads a history entry, binary or JSON.
func decodeHistory(raw []byte, h *engine.HistoryEntry) error {
	if len(raw) > 0 && raw[0] == binaryTag {
		return unmarshalHistory(raw, h, "history entry")
	}
	return decode(raw, h, func() int { return h.V }, "history entry")
}

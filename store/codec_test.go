package store

import (
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/threadctl/threadctl/engine"
	"github.com/threadctl/threadctl/states"
)

func randTime(r *rand.Rand) time.Time {
	switch r.IntN(5) {
	case 0:
		return time.Time{}
	case 1: // Meta's timestamps go up to year 9999
		return time.Date(1+r.IntN(9999), time.Month(1+r.IntN(12)), 1+r.IntN(28), r.IntN(24), 0, 0, r.IntN(1e9), time.UTC)
	}
	return time.Unix(0, r.Int64N(4e18)).UTC()
}

func randString(r *rand.Rand) string {
	b := make([]byte, r.IntN(20))
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return string(b)
}

func randThread(r *rand.Rand) engine.Thread {
	t := engine.Thread{
		V: engine.FormatVersion, PageID: randString(r), PSID: randString(r), State: states.State(randString(r)),
		Owner: randString(r), Primary: states.Primary(randString(r)), Revision: r.Uint64(), Intervention: randString(r),
		LastActivity: randTime(r), ControlExpires: randTime(r), ControlTimer: randTime(r), ExtendAt: randTime(r),
		RecheckAt: randTime(r), LastMetaTime: randTime(r), CreatedAt: randTime(r), UpdatedAt: randTime(r),
	}
	if r.IntN(2) == 0 {
		t.Pending = &engine.PendingRequest{RequestedAt: randTime(r), Deadline: randTime(r), Reason: randString(r)}
	}
	for range r.IntN(17) {
		t.Seen = append(t.Seen, r.Uint64())
	}
	return t
}

func randHistory(r *rand.Rand) engine.HistoryEntry {
	h := engine.HistoryEntry{
		V: engine.FormatVersion, Revision: r.Uint64(), At: randTime(r), Event: states.Event(randString(r)),
		Observed: states.Observed(randString(r)), Cause: engine.Cause(randString(r)), From: states.State(randString(r)),
		To: states.State(randString(r)), Owner: randString(r), Primary: states.Primary(randString(r)), Table: randString(r),
		Outcome: randString(r), Reason: randString(r), MetaTime: randTime(r),
	}
	for range r.IntN(3) {
		h.Calls = append(h.Calls, engine.CallRecord{Call: randString(r), Target: randString(r), Outcome: randString(r), Error: randString(r), Duration: time.Duration(r.Int64() - r.Int64())})
	}
	return h
}

// TestCodecRoundTrip checks that every field of threads and history
// entries survives the binary form, for random records.
func TestCodecRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		th := randThread(r)
		raw, err := encodeThread(&th)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeThread(raw, "thread")
		if err != nil || !reflect.DeepEqual(got, th) {
			t.Fatalf("thread round trip:\n got %+v, %v\nwant %+v", got, err, th)
		}
		h := randHistory(r)
		var gh engine.HistoryEntry
		if err := decodeHistory(marshalHistory(&h), &gh); err != nil || !reflect.DeepEqual(gh, h) {
			t.Fatalf("history round trip:\n got %+v, %v\nwant %+v", gh, err, h)
		}
	}
}

// TestCodecReadsJSON reads records as earlier versions wrote them.
func TestCodecReadsJSON(t *testing.T) {
	at := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	th := engine.Thread{V: 1, PageID: "100", PSID: "7", State: states.Agent, Owner: "200", Primary: states.PrimaryBot, Revision: 3,
		LastActivity: at, ControlExpires: at.Add(24 * time.Hour), ControlTimer: at.Add(24 * time.Hour), Seen: []uint64{1, 1 << 63}, CreatedAt: at, UpdatedAt: at}
	js, _ := json.Marshal(th)
	raw := append(binary.BigEndian.AppendUint64(nil, th.Revision), js...)
	got, err := decodeThread(raw, "thread")
	if err != nil || !reflect.DeepEqual(got, th) {
		t.Errorf("JSON thread:\n got %+v, %v\nwant %+v", got, err, th)
	}
	h := engine.HistoryEntry{V: 1, Revision: 3, At: at, Event: states.ControlPassed, From: states.Pending, To: states.Agent, Outcome: "applied",
		Calls: []engine.CallRecord{{Call: "request_thread_control", Outcome: "ok", Duration: time.Millisecond}}}
	js, _ = json.Marshal(h)
	var gh engine.HistoryEntry
	if err := decodeHistory(js, &gh); err != nil || !reflect.DeepEqual(gh, h) {
		t.Errorf("JSON history entry:\n got %+v, %v\nwant %+v", gh, err, h)
	}
}

// TestCodecSize shows what the binary form saves on a typical thread and
// entry (the README's per-thread figures).
func TestCodecSize(t *testing.T) {
	at := time.Now()
	th := engine.Thread{V: 1, PageID: "100000000000001", PSID: "7000000000000001", State: states.Agent, Owner: "200000000000001",
		Primary: states.PrimaryBot, Revision: 12, LastActivity: at, ControlExpires: at.Add(24 * time.Hour), LastMetaTime: at,
		CreatedAt: at, UpdatedAt: at}
	for i := range 16 {
		th.Seen = append(th.Seen, uint64(i)*0x9e3779b97f4a7c15)
	}
	h := engine.HistoryEntry{V: 1, Revision: 12, At: at, Event: states.HandoverToAgent, Cause: engine.CauseBotsAPI, From: states.Bot,
		To: states.Pending, Owner: "300000000000001", Primary: states.PrimaryBot, Table: "bot", Outcome: "applied",
		Calls: []engine.CallRecord{{Call: "request_thread_control", Outcome: "ok", Duration: 12 * time.Millisecond}}}
	tj, _ := json.Marshal(th)
	hj, _ := json.Marshal(h)
	tb, hb := marshalThread(&th), marshalHistory(&h)
	t.Logf("thread: %d bytes (JSON %d); history entry with a call: %d bytes (JSON %d)", len(tb), len(tj), len(hb), len(hj))
	if len(tb)*2 > len(tj) || len(hb)*2 > len(hj) {
		t.Errorf("the binary form saves less than half")
	}
}

// FuzzDecodeRecords feeds arbitrary bytes to the decoders: an error, never
// a panic or a huge allocation.
func FuzzDecodeRecords(f *testing.F) {
	th := randThread(rand.New(rand.NewPCG(3, 4)))
	raw, _ := encodeThread(&th)
	f.Add(raw)
	h := randHistory(rand.New(rand.NewPCG(5, 6)))
	f.Add(marshalHistory(&h))
	f.Add([]byte{binaryTag, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeThread(append(make([]byte, 8), b...), "thread")
		var h engine.HistoryEntry
		decodeHistory(b, &h)
	})
}

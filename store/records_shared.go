package store

import "github.com/threadctl/threadctl/engine"

// The compact record encoding (codec.go) is shared with the etcd store
// (store/etcd), so that a thread and a history entry are the same bytes in
// both stores and one codec is tested. These four functions are all it
// needs; the rest of this package (the log, bbolt) stays private.

// EncodeThread is a thread's stored value: its revision (8 bytes, big
// endian), then the record in the compact binary form.
func EncodeThread(t *engine.Thread) []byte {
	b, _ := encodeThread(t) // it never fails
	return b
}

// DecodeThread reads a value EncodeThread wrote (or the JSON of earlier
// versions); what names it in errors.
func DecodeThread(raw []byte, what string) (engine.Thread, error) { return decodeThread(raw, what) }

// EncodeHistory is a history entry's stored value, in the compact binary
// form.
func EncodeHistory(h *engine.HistoryEntry) []byte {
	c := *h
	c.V = engine.FormatVersion
	return marshalHistory(&c)
}

// DecodeHistory reads a value EncodeHistory wrote (or JSON).
func DecodeHistory(raw []byte, h *engine.HistoryEntry) error { return decodeHistory(raw, h) }

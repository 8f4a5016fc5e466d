// Package wal is a write-ahead log: an append-only sequence of opaque records,
// each numbered by the log with a uint64 index, that are durable once Append
// returns. It lets threadctl acknowledge an event after one sequential write
// and one fdatasync shared with every concurrent caller, and apply the events
// to bbolt later in large transactions (etcd's design: a raft WAL in front of
// its bbolt backend).
//
// # On disk
//
// A log is a directory of segment files, each named by the index of its first
// record in 16 hex digits ("0000000000000400.wal"), plus a LOCK file. A segment
// starts with an 8-byte header, "TCWAL\x00\x00\x01" (the last byte is the format
// version), followed by frames. A frame is 8-byte aligned:
//
//	uint32 LE   payload length, with bit 31 set (so no frame header is zero)
//	uint32 LE   CRC32C (Castagnoli) of the payload then the index as uint64 LE
//	payload     then zero bytes up to a multiple of 8
//
// The index is not stored: the first record of a segment has the index in its
// name and each next one the index after; the CRC covers it, so a record in
// the wrong place fails its CRC. Segments are preallocated (fallocate, or
// zeros) to the segment size; eight zero bytes where a frame should start mark
// the end of the log. A new segment is prepared in the background (created,
// reserved, header written, synced) under a temporary name ("0.tmp") and
// renamed when the current segment cannot take the next group of records,
// followed by an fsync of the directory.
//
// # Guarantees
//
// Append returns once its records are written and fdatasynced; a caller that
// finds no write under way writes at once, and callers that arrive during a
// write queue and are written together by the next leader, with one write and
// one fdatasync. Records of one Append are contiguous; the order of indexes is
// the order in which Appends were admitted. After a failed write or fdatasync
// the log is broken (ErrBroken): it accepts no more appends, since what
// reached the disk is unknown (after a failed fsync the kernel may have
// dropped the dirty pages; retrying would claim durability it does not have).
// Close and Open again.
//
// Open verifies every record's CRC and that indexes run on across segments. A
// crash can leave the last write torn: cut short (a process crash) or with
// only some of its sectors on disk (a power failure during its fdatasync).
// None of that write was acknowledged, so Open drops it: damage at the end of
// the last segment, with no good record after it or where the damage is
// zeroed sectors (data never written), is a torn tail; Open zeroes the segment
// from there, durably, reports it in Report and to Options.Logger ("torn tail:
// record 1234 at offset 56780 of 0000000000000400.wal fails its CRC; dropped
// it and everything after it") and appends from there. Any other damage — a
// bad record followed by good ones, damage in a segment that is not the last,
// a gap in the indexes — is corruption: Open refuses the log with an error
// wrapping ErrCorrupt that says where, and drops nothing. Check reports the
// same offline.
//
// # What the caller does
//
// Open the log once per directory (a second process is refused by a lock on
// LOCK). Append records, and apply them to the store off the request path;
// after the store has durably checkpointed everything up to index i, call
// ReleaseBefore(i+1) to delete the segments that are wholly before it (the
// segment being written is never deleted, so FirstIndex may stay below i+1).
// At startup, Open and replay with ReadFrom from the index after the store's
// checkpoint. Close on shutdown; it waits for the Appends under way.
package wal

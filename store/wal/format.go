package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
)

const (
	// segHeaderSize is the size of the header at the start of every segment.
	segHeaderSize = 8
	// frameHeaderSize is the size of a record's frame header: a uint32
	// length word and a uint32 CRC.
	frameHeaderSize = 8
	// lenFlag is set in every frame's length word, so that a frame header is
	// never all zero, not even for an empty record: eight zero bytes where a
	// frame should start mark the end of the log.
	lenFlag = 1 << 31
	// MaxRecordSize is the largest payload one record may carry.
	MaxRecordSize = 1 << 30
	// segSuffix ends every segment's file name.
	segSuffix = ".wal"
	// tmpSuffix ends the name of a segment being prepared in the background.
	tmpSuffix = ".tmp"
	// sectorSize is the unit a torn write is assumed to lose or keep whole.
	sectorSize = 512
)

// segMagic opens every segment: "TCWAL", two zero bytes, format version 1.
var segMagic = [segHeaderSize]byte{'T', 'C', 'W', 'A', 'L', 0, 0, 1}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// pad8 rounds n up to a multiple of 8.
func pad8(n int) int { return (n + 7) &^ 7 }

// frameSize is the bytes a record of n payload bytes takes on disk.
func frameSize(n int) int { return frameHeaderSize + pad8(n) }

// payloadCRC is the first half of a record's checksum.
func payloadCRC(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }

// recordCRC finishes a record's checksum: CRC32C over the payload followed by
// the record's index as 8 little-endian bytes. Folding the index in last lets
// the tail analysis try many candidate indexes for one payload cheaply.
func recordCRC(pcrc uint32, index uint64) uint32 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], index)
	return crc32.Update(pcrc, castagnoli, b[:])
}

// appendFrame appends the frame of record index with payload p to dst.
func appendFrame(dst []byte, index uint64, p []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(p))|lenFlag)
	dst = binary.LittleEndian.AppendUint32(dst, recordCRC(payloadCRC(p), index))
	dst = append(dst, p...)
	for i := len(p); i%8 != 0; i++ {
		dst = append(dst, 0)
	}
	return dst
}

// segName is the file name of the segment whose first record is index.
func segName(first uint64) string { return fmt.Sprintf("%016x%s", first, segSuffix) }

// parseSegName returns the first index a segment file name stands for.
func parseSegName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	v, err := strconv.ParseUint(hex, 16, 64)
	return v, err == nil
}

package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Problem is something wrong found in a log directory.
type Problem struct {
	// Segment is the file name of the segment concerned.
	Segment string
	// Offset is the byte offset in the segment where the damage starts.
	Offset int64
	// Index is the index of the first record affected.
	Index uint64
	// What says what is wrong, as the end of a sentence that starts with
	// "record <Index> at offset <Offset> of <Segment>" when Record is set,
	// and is the whole sentence otherwise.
	What   string
	Record bool
	// Tail is set for a torn tail: damage at the very end of the last
	// segment, the mark of a write cut short by a crash. Open drops it
	// (truncates the segment there). Any other problem is corruption: Open
	// refuses the directory.
	Tail bool
	// Dropped is set when Open has dropped the torn tail.
	Dropped bool
}

func (p Problem) String() string {
	var b strings.Builder
	switch {
	case p.Tail:
		b.WriteString("torn tail: ")
	default:
		b.WriteString("corruption: ")
	}
	if p.Record {
		fmt.Fprintf(&b, "record %d at offset %d of %s ", p.Index, p.Offset, p.Segment)
	}
	b.WriteString(p.What)
	switch {
	case p.Dropped && !p.Record:
		b.WriteString("; zeroed them")
	case p.Dropped:
		b.WriteString("; dropped it and everything after it")
	case p.Tail && !p.Record:
		b.WriteString("; the next Open zeroes them")
	case p.Tail:
		b.WriteString("; the next Open drops it and everything after it")
	}
	return b.String()
}

// Report describes a log directory: what Check found, or what Open found and
// repaired.
type Report struct {
	Dir string
	// FirstIndex and LastIndex bound the records in the log; an empty log
	// has LastIndex == FirstIndex-1.
	FirstIndex, LastIndex uint64
	// Segments is the number of segment files, Bytes their size on disk
	// (preallocated space included), DataBytes the bytes up to each
	// segment's last good record.
	Records          uint64
	Segments         int
	Bytes, DataBytes int64
	Problems         []Problem
}

// OK says whether the log has no corruption (a torn tail is not corruption).
func (r Report) OK() bool {
	for _, p := range r.Problems {
		if !p.Tail {
			return false
		}
	}
	return true
}

func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d segments, %d bytes (%d of records), ", r.Dir, r.Segments, r.Bytes, r.DataBytes)
	if r.Records == 0 {
		fmt.Fprintf(&b, "no records (next index %d)", r.LastIndex+1)
	} else {
		fmt.Fprintf(&b, "records %d..%d", r.FirstIndex, r.LastIndex)
	}
	for _, p := range r.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// ErrCorrupt is wrapped by the errors of Open and Check for a log with
// corruption that is not a torn tail.
var ErrCorrupt = errors.New("wal: corrupt log")

// corruptError reports corruption found at Open or by Check.
func corruptError(dir string, ps []Problem) error {
	var lines []string
	for _, p := range ps {
		if !p.Tail {
			lines = append(lines, p.String())
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return fmt.Errorf("%w in %s: %s (not a torn tail, so it is not dropped: records after it would be lost; restore the directory from a backup, or truncate the log by hand at that point once you accept losing them)",
		ErrCorrupt, dir, strings.Join(lines, "; "))
}

// segFile is a segment found in a directory.
type segFile struct {
	name  string
	first uint64
}

// listSegments returns the segments in dir by first index.
func listSegments(dir string) ([]segFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []segFile
	for _, e := range ents {
		if first, ok := parseSegName(e.Name()); ok && e.Type().IsRegular() {
			segs = append(segs, segFile{e.Name(), first})
		}
	}
	slices.SortFunc(segs, func(a, b segFile) int {
		if a.first < b.first {
			return -1
		}
		if a.first > b.first {
			return 1
		}
		return 0
	})
	return segs, nil
}

// segScan is what scanning one segment found.
type segScan struct {
	// next is the index the record after the last good one would have.
	next uint64
	// end is the offset just after the last good record.
	end  int64
	size int64
	// problem is set when the segment has damage.
	problem *Problem
}

// stopKind says why reading frames stopped.
type stopKind int

const (
	stopNone stopKind = iota // a good record
	stopEOF                  // the file ends exactly after the last frame
	stopZero                 // a zero frame header: the end of the log
	stopBad                  // a frame that is not a good record
)

// frameReader reads frames sequentially from a segment.
type frameReader struct {
	r    *bufio.Reader
	off  int64
	size int64
	buf  []byte
	hdr  [frameHeaderSize]byte
}

func newFrameReader(f *os.File, size int64) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20), size: size}
}

// header reads and checks the segment header. It returns what is wrong with
// it, or an I/O error.
func (fr *frameReader) header() (string, error) {
	if fr.size < segHeaderSize {
		return fmt.Sprintf("is too short (%d bytes) to hold a segment header", fr.size), nil
	}
	var h [segHeaderSize]byte
	if _, err := io.ReadFull(fr.r, h[:]); err != nil {
		return "", err
	}
	if h != segMagic {
		return fmt.Sprintf("has no segment header (starts with % x, want % x)", h, segMagic), nil
	}
	fr.off = segHeaderSize
	return "", nil
}

// next reads the frame at the current offset, expecting record index. On a
// good record it returns its payload (valid until the next call) and advances.
// Otherwise it returns why it stopped and, for a bad frame, what is wrong
// with it; err is an I/O error.
func (fr *frameReader) next(index uint64) (payload []byte, stop stopKind, why string, err error) {
	left := fr.size - fr.off
	if left == 0 {
		return nil, stopEOF, "", nil
	}
	if left < frameHeaderSize {
		b := make([]byte, left)
		if _, err := io.ReadFull(fr.r, b); err != nil {
			return nil, stopBad, "", err
		}
		if isZero(b) {
			return nil, stopZero, "", nil
		}
		return nil, stopBad, fmt.Sprintf("is cut short: only %d bytes of its header are there", left), nil
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return nil, stopBad, "", err
	}
	w := binary.LittleEndian.Uint32(fr.hdr[0:])
	crc := binary.LittleEndian.Uint32(fr.hdr[4:])
	if w == 0 && crc == 0 {
		return nil, stopZero, "", nil
	}
	if w&lenFlag == 0 {
		return nil, stopBad, fmt.Sprintf("has a malformed header (% x)", fr.hdr), nil
	}
	n := int(w &^ lenFlag)
	fs := int64(frameSize(n))
	if fs > left {
		return nil, stopBad, fmt.Sprintf("runs past the end of the data (length %d, only %d bytes left)", n, left-frameHeaderSize), nil
	}
	if cap(fr.buf) < pad8(n) {
		fr.buf = make([]byte, pad8(n))
	}
	b := fr.buf[:pad8(n)]
	if _, err := io.ReadFull(fr.r, b); err != nil {
		return nil, stopBad, "", err
	}
	if recordCRC(payloadCRC(b[:n]), index) != crc {
		return nil, stopBad, "fails its CRC", nil
	}
	fr.off += fs
	return b[:n], 0, "", nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// scanSegment verifies every record of the segment at path, whose first
// record is first, and finds its end. In the last segment, damage at the end
// is analysed to tell a torn tail from corruption; elsewhere any damage is
// corruption (the segment was complete and synced before the next began).
func scanSegment(path string, first uint64, last bool) (segScan, error) {
	name := filepath.Base(path)
	f, err := os.Open(path)
	if err != nil {
		return segScan{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return segScan{}, err
	}
	s := segScan{next: first, size: st.Size()}
	fr := newFrameReader(f, s.size)
	what, err := fr.header()
	if err != nil {
		return s, fmt.Errorf("wal: reading %s: %w", path, err)
	}
	if what != "" {
		s.problem = &Problem{Segment: name, Index: first, What: fmt.Sprintf("segment %s %s", name, what)}
		return s, nil
	}
	for {
		_, stop, why, err := fr.next(s.next)
		if err != nil {
			return s, fmt.Errorf("wal: reading %s: %w", path, err)
		}
		if stop == stopNone {
			s.next++
			continue
		}
		s.end = fr.off
		if stop == stopBad && !last {
			s.problem = &Problem{Segment: name, Offset: fr.off, Index: s.next, Record: true, What: why}
			return s, nil
		}
		break
	}
	if last {
		p, err := analyseTail(f, name, s.size, s.end, s.next)
		if err != nil {
			return s, fmt.Errorf("wal: reading %s: %w", path, err)
		}
		s.problem = p
	}
	return s, nil
}

// analyseTail looks at the last segment from off, where its good records end
// (off holds a zero header, a bad frame, or nothing), and returns nil if all
// of the rest is zero, a torn tail, or corruption.
//
// After a crash the last write may be missing or incomplete: a process crash
// leaves a prefix of it, a power failure during its fdatasync any subset of
// its sectors. None of it was acknowledged. So damage at off is a torn tail
// when no good record follows it, or when the damage is a hole (zeroed
// sectors: data never written) that an unsynced write could leave. A frame
// that is not zero yet fails its CRC, with good records after it, is
// corruption of data that was once good.
func analyseTail(f *os.File, name string, size, off int64, index uint64) (*Problem, error) {
	if off >= size {
		return nil, nil
	}
	// Most of the time the rest is preallocated zeros, often not even
	// written (fallocated): look for data before holding all of it.
	nonZero, err := anyData(f, off, size)
	if err != nil || !nonZero {
		return nil, err
	}
	rest := make([]byte, size-off)
	if _, err := f.ReadAt(rest, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	// What is at off?
	var what string
	hole := false
	hdrZero := len(rest) < frameHeaderSize || isZero(rest[:frameHeaderSize])
	switch {
	case hdrZero:
		hole = true
	default:
		w := binary.LittleEndian.Uint32(rest)
		n := int(w &^ lenFlag)
		switch {
		case len(rest) < frameHeaderSize:
			what = fmt.Sprintf("is cut short: only %d bytes of its header are there", len(rest))
		case w&lenFlag == 0:
			what = fmt.Sprintf("has a malformed header (% x)", rest[:frameHeaderSize])
		case frameSize(n) > len(rest):
			what = fmt.Sprintf("runs past the end of the data (length %d, only %d bytes left)", n, len(rest)-frameHeaderSize)
			hole = hasZeroSector(rest[frameHeaderSize:], off+frameHeaderSize)
		default:
			what = "fails its CRC"
			hole = hasZeroSector(rest[frameHeaderSize:frameHeaderSize+n], off+frameHeaderSize)
		}
	}
	fIdx, fOff, found := findFollower(rest, index)
	p := &Problem{Segment: name, Offset: off, Index: index, Record: true, Tail: true}
	switch {
	case !found && hdrZero:
		p.Record = false
		p.What = fmt.Sprintf("non-zero bytes at offset %d of %s after its last record (%d), but no good record: the remains of a write that was never synced", off, name, index-1)
	case !found:
		p.What = what
	case hole && hdrZero:
		p.What = fmt.Sprintf("is missing (its header is zero) yet a good-looking record %d follows at offset %d: the remains of a write that was never synced (power lost during its fdatasync)", fIdx, off+fOff)
	case hole:
		p.What = fmt.Sprintf("%s and has zeroed sectors, yet a good-looking record %d follows at offset %d: the remains of a write that was never synced (power lost during its fdatasync)", what, fIdx, off+fOff)
	default:
		p.Tail = false
		p.What = fmt.Sprintf("%s, yet good record %d follows at offset %d: this is corruption in the middle of the log, not a torn tail", what, fIdx, off+fOff)
	}
	return p, nil
}

// anyData reports whether [off, size) of f holds a non-zero byte.
func anyData(f *os.File, off, size int64) (bool, error) {
	buf := make([]byte, min(1<<20, size-off))
	for pos := off; pos < size; {
		start, end, ok, err := dataAfter(f, pos, size)
		if err != nil || !ok {
			return false, err
		}
		for start < end {
			b := buf[:min(int64(len(buf)), end-start)]
			if _, err := f.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
				return false, err
			}
			if !isZero(b) {
				return true, nil
			}
			start += int64(len(b))
		}
		pos = end
	}
	return false, nil
}

// hasZeroSector reports whether b, which starts at file offset at, holds a
// run of zeros from a sector boundary to the next boundary or to its end, of
// at least 32 bytes: data a torn write did not put there.
func hasZeroSector(b []byte, at int64) bool {
	start := int64(0)
	if r := at % sectorSize; r != 0 {
		start = sectorSize - r
	}
	for s := start; s < int64(len(b)); s += sectorSize {
		e := min(s+sectorSize, int64(len(b)))
		if e-s >= 32 && isZero(b[s:e]) {
			return true
		}
	}
	return false
}

// maxFollowerGap bounds how many records a hole may have swallowed for
// findFollower to still recognise the record after it.
const maxFollowerGap = 4096

// findFollower looks in rest (the tail of the last segment, from where the
// good records end) for a good record after the first bad one: a frame at an
// 8-byte boundary whose CRC matches one of the indexes that could be there.
func findFollower(rest []byte, index uint64) (uint64, int64, bool) {
	for p := frameHeaderSize; p+frameHeaderSize <= len(rest); p += 8 {
		w := binary.LittleEndian.Uint32(rest[p:])
		if w&lenFlag == 0 {
			continue
		}
		n := int(w &^ lenFlag)
		if n > len(rest)-p-frameHeaderSize {
			continue
		}
		crc := binary.LittleEndian.Uint32(rest[p+4:])
		pc := payloadCRC(rest[p+frameHeaderSize : p+frameHeaderSize+n])
		for k := 1; k <= min(p/8, maxFollowerGap); k++ {
			if recordCRC(pc, index+uint64(k)) == crc {
				return index + uint64(k), int64(p), true
			}
		}
	}
	return 0, 0, false
}

// scanDir scans every segment of dir. It fills r and returns the segments,
// with what was found in each.
func scanDir(dir string, r *Report) ([]segFile, []segScan, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return nil, nil, err
	}
	r.Dir = dir
	r.Segments = len(segs)
	scans := make([]segScan, len(segs))
	for i, sg := range segs {
		s, err := scanSegment(filepath.Join(dir, sg.name), sg.first, i == len(segs)-1)
		if err != nil {
			return nil, nil, err
		}
		scans[i] = s
		r.Bytes += s.size
		r.DataBytes += s.end
		if prev := scans[max(i-1, 0)]; i > 0 && prev.problem == nil && prev.next != sg.first {
			pname := segs[i-1].name
			what := fmt.Sprintf("gap: segment %s ends at offset %d before record %d, but the next segment %s starts at record %d: records %d..%d are missing",
				pname, prev.end, prev.next, sg.name, sg.first, prev.next, sg.first-1)
			if prev.next > sg.first {
				what = fmt.Sprintf("overlap: segment %s holds records up to %d, but the next segment %s starts at record %d", pname, prev.next-1, sg.name, sg.first)
			}
			r.Problems = append(r.Problems, Problem{Segment: pname, Offset: prev.end, Index: prev.next, What: what})
		}
		if s.problem != nil {
			r.Problems = append(r.Problems, *s.problem)
		}
	}
	if len(segs) > 0 {
		r.FirstIndex = segs[0].first
		r.LastIndex = scans[len(segs)-1].next - 1
		r.Records = r.LastIndex + 1 - r.FirstIndex
	}
	return segs, scans, nil
}

// Check verifies the log in dir without changing it: every record's CRC,
// that indexes run on without a gap across segments, and where the log ends.
// It does not take the log's lock: run it on a directory no process is
// writing to, or the last segment may look torn. The error wraps ErrCorrupt
// if there is corruption other than a torn tail, which the Report lists.
func Check(dir string) (Report, error) {
	var r Report
	if _, err := os.Stat(dir); err != nil {
		return r, err
	}
	if _, _, err := scanDir(dir, &r); err != nil {
		return r, err
	}
	return r, corruptError(dir, r.Problems)
}

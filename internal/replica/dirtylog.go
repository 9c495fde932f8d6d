package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"math/bits"
	"os"
	"slices"
	"sync"

	"github.com/strata-storage/strata/internal/atomicfile"
	"github.com/strata-storage/strata/internal/errdefs"
)

// DirtyRegion is the unit of the dirty-region log: a write marks the
// DirtyRegion-aligned regions it touches.
const DirtyRegion = 4 << 20

// ErrDirtyUnknown is returned for a dirty-region log that cannot be
// trusted (its file is corrupt): every region may differ until the next
// checkpoint.
var ErrDirtyUnknown = fmt.Errorf("replica: the dirty-region log is unreadable; every region may differ: %w", errdefs.ErrFailedPrecondition)

// dirtyLog is the persisted dirty-region log of one volume's replica on
// this node (architecture invariant 6). Before a fenced write, trim or
// write-zeroes changes the chain, the regions it touches are in the log's
// file, so that after a crash of the engine the regions that may have had
// writes in flight are known on every replica, and only those are
// compared.
//
// The engine clears the log by checkpoints, at quiet points of the write
// stream after every replica flushed: everything written before a
// checkpoint is then on every in-sync replica, durably. A checkpoint keeps
// the regions written since the one before (hot regions stay in the file,
// so that writing them again costs no file update) and drops the rest.
//
// File <dir>/<volume>.dirty: magic "STRD", u32 version 1, u64 region
// size, u64 bits, a bitmap of that many bits (region r is bit r%8 of byte
// r/8), and a CRC-32C (Castagnoli) of everything before it; big-endian,
// replaced crash-safely (32 KiB for every region of a 1 TiB volume). Writers that need regions added while a file update is in
// progress wait for it and share the next one (group commit).
type dirtyLog struct {
	path string

	mu      sync.Mutex
	cond    sync.Cond
	loaded  bool
	unknown bool               // the file was corrupt: every region is suspect
	onDisk  map[int64]struct{} // regions the file lists, or will once writing ends
	cur     map[int64]struct{} // regions written since the last checkpoint
	writing bool               // a file update is in progress
	writes  int                // file updates made (tests count them)
}

const (
	dirtyMagic   = 0x53545244 // "STRD"
	dirtyVersion = 1
	dirtyHeader  = 4 + 4 + 8 + 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newDirtyLog(path string) *dirtyLog {
	l := &dirtyLog{path: path, onDisk: map[int64]struct{}{}, cur: map[int64]struct{}{}}
	l.cond.L = &l.mu
	return l
}

// load reads the file once; l.mu is held. A missing file is an empty log.
func (l *dirtyLog) load() error {
	if l.loaded {
		return nil
	}
	data, err := os.ReadFile(l.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("replica: read the dirty-region log: %w", err)
	default:
		regions, perr := decodeDirty(data)
		if perr != nil {
			l.unknown = true
		}
		for _, r := range regions {
			l.onDisk[r] = struct{}{}
		}
	}
	l.loaded = true
	return nil
}

func decodeDirty(data []byte) ([]int64, error) {
	if len(data) < dirtyHeader+4 {
		return nil, fmt.Errorf("%d bytes", len(data))
	}
	body, sum := data[:len(data)-4], binary.BigEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errors.New("checksum mismatch")
	}
	if binary.BigEndian.Uint32(body) != dirtyMagic || binary.BigEndian.Uint32(body[4:]) != dirtyVersion ||
		binary.BigEndian.Uint64(body[8:]) != DirtyRegion {
		return nil, errors.New("bad header")
	}
	nbits := binary.BigEndian.Uint64(body[16:])
	bitmap := body[dirtyHeader:]
	if uint64(len(bitmap)) != (nbits+7)/8 {
		return nil, fmt.Errorf("%d bits in %d bytes", nbits, len(bitmap))
	}
	var out []int64
	for i, b := range bitmap {
		for ; b != 0; b &= b - 1 {
			out = append(out, int64(i)*8+int64(bits.TrailingZeros8(b)))
		}
	}
	return out, nil
}

// encodeDirty encodes sorted region numbers as a bitmap.
func encodeDirty(regions []int64) []byte {
	var nbits int64
	if len(regions) > 0 {
		nbits = regions[len(regions)-1] + 1
	}
	b := make([]byte, dirtyHeader, dirtyHeader+(nbits+7)/8+4)
	binary.BigEndian.PutUint32(b, dirtyMagic)
	binary.BigEndian.PutUint32(b[4:], dirtyVersion)
	binary.BigEndian.PutUint64(b[8:], DirtyRegion)
	binary.BigEndian.PutUint64(b[16:], uint64(nbits))
	b = append(b, make([]byte, (nbits+7)/8)...)
	for _, r := range regions {
		b[dirtyHeader+r/8] |= 1 << (r % 8)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// persist replaces the file with regions. l.mu is held and no file update
// is in progress; l.mu is released while the file is written, with
// l.writing set, and on success onDisk becomes regions.
func (l *dirtyLog) persist(regions map[int64]struct{}) error {
	l.writing = true
	l.mu.Unlock()
	err := atomicfile.Write(l.path, encodeDirty(slices.Sorted(maps.Keys(regions))), 0o644)
	l.mu.Lock()
	l.writing = false
	l.cond.Broadcast()
	if err != nil {
		return fmt.Errorf("replica: persist the dirty-region log: %w", err)
	}
	l.onDisk = regions
	l.writes++
	return nil
}

// mark records that [off, off+n) is about to change: when it returns nil,
// the file lists every region of the range.
func (l *dirtyLog) mark(off, n int64) error {
	if n <= 0 || off < 0 {
		return nil
	}
	first, last := off/DirtyRegion, (off+n-1)/DirtyRegion
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.load(); err != nil {
		return err
	}
	listed := func() bool {
		for r := first; r <= last; r++ {
			if _, ok := l.onDisk[r]; !ok {
				return false
			}
		}
		return true
	}
	for r := first; r <= last; r++ {
		l.cur[r] = struct{}{}
	}
	for !l.unknown && !listed() {
		if l.writing {
			l.cond.Wait()
			continue
		}
		next := maps.Clone(l.onDisk)
		maps.Copy(next, l.cur)
		if err := l.persist(next); err != nil {
			return err
		}
	}
	return nil
}

// checkpoint drops the regions not written since the previous checkpoint.
// Call it only when everything written before it is durable on every
// in-sync replica.
func (l *dirtyLog) checkpoint() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.load(); err != nil {
		return err
	}
	for l.writing {
		l.cond.Wait()
	}
	next := l.cur
	l.cur = map[int64]struct{}{}
	if !l.unknown && sameKeys(next, l.onDisk) {
		return nil // the file lists exactly these already
	}
	// While the file is replaced, only what both the old and the new file
	// list counts as listed: a mark of anything else waits for the update.
	both := map[int64]struct{}{}
	for r := range next {
		if _, ok := l.onDisk[r]; ok {
			both[r] = struct{}{}
		}
	}
	l.onDisk = both
	wasUnknown := l.unknown
	l.unknown = false
	if err := l.persist(next); err != nil {
		l.unknown = wasUnknown // the old file stays, corrupt or not
		return err
	}
	return nil
}

// regions returns the byte offsets of the listed regions, in order, or
// ErrDirtyUnknown.
func (l *dirtyLog) regions() ([]int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.load(); err != nil {
		return nil, err
	}
	if l.unknown {
		return nil, ErrDirtyUnknown
	}
	all := maps.Clone(l.onDisk)
	maps.Copy(all, l.cur)
	out := slices.Sorted(maps.Keys(all))
	for i := range out {
		out[i] *= DirtyRegion
	}
	return out, nil
}

func sameKeys(a, b map[int64]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

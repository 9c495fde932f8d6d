package chain

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"golang.org/x/sys/unix"
)

// run is a range of blocks [start, start+n).
type run struct{ start, n int64 }

func (r run) end() int64 { return r.start + r.n }

// normalize sorts runs and merges overlapping or adjacent ones.
func normalize(rs []run) []run {
	sort.Slice(rs, func(i, j int) bool { return rs[i].start < rs[j].start })
	out := rs[:0]
	for _, r := range rs {
		if r.n <= 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 && r.start <= out[k].end() {
			if r.end() > out[k].end() {
				out[k].n = r.end() - out[k].start
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// union returns the normalized union of two run lists.
func union(a, b []run) []run {
	rs := make([]run, 0, len(a)+len(b))
	rs = append(rs, a...)
	rs = append(rs, b...)
	return normalize(rs)
}

// subtract returns the blocks of a (normalized) not in b (normalized).
func subtract(a, b []run) []run {
	var out []run
	j := 0
	for _, r := range a {
		s, e := r.start, r.end()
		for j < len(b) && b[j].end() <= s {
			j++
		}
		k := j
		for s < e {
			if k >= len(b) || b[k].start >= e {
				out = append(out, run{s, e - s})
				break
			}
			if b[k].start > s {
				out = append(out, run{s, b[k].start - s})
			}
			s = b[k].end()
			k++
		}
	}
	return out
}

// layer is one layer of the pool: its data file, shared by every chain that
// lists it. Its reference count is derived from the chains' metadata.
type layer struct {
	id string

	mu   sync.Mutex
	f    *os.File // data file, opened on first use
	refs int      // chains listing the layer
	pins int      // merges using the layer
}

func (p *Pool) layerPath(id, ext string) string {
	return filepath.Join(p.dir, "layers", id+ext)
}

// file returns the layer's data file, opening it on first use.
func (l *layer) file(p *Pool) (*os.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		return l.f, nil
	}
	f, err := os.OpenFile(p.layerPath(l.id, ".data"), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("chain: layer %s: %w", l.id, err)
	}
	l.f = f
	return f, nil
}

func (l *layer) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// scanData lists the allocated blocks of a data file with SEEK_DATA and
// SEEK_HOLE. It relies on the filesystem's block size dividing BlockSize and
// on every write being whole blocks, so extents are block aligned; an extent
// that is not is rounded outwards.
func scanData(f *os.File) ([]run, error) {
	fd := int(f.Fd())
	var rs []run
	var off int64
	for {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				return rs, nil
			}
			return nil, fmt.Errorf("chain: seek data: %w", err)
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("chain: seek hole: %w", err)
		}
		s := d / BlockSize
		e := (h + BlockSize - 1) / BlockSize
		if k := len(rs) - 1; k >= 0 && rs[k].end() >= s {
			rs[k].n = e - rs[k].start
		} else {
			rs = append(rs, run{s, e - s})
		}
		off = h
	}
}

// Map file: "SMAP1\n", uvarint count and (gap, length) pairs of the allocated
// runs, the same for the zero runs, then the CRC-32C of everything before.
var (
	mapMagic = []byte("SMAP1\n")
	crcTable = crc32.MakeTable(crc32.Castagnoli)
)

func encodeMap(alloc, zero []run) []byte {
	var b bytes.Buffer
	b.Write(mapMagic)
	var tmp [binary.MaxVarintLen64]byte
	put := func(v int64) { b.Write(tmp[:binary.PutUvarint(tmp[:], uint64(v))]) }
	for _, rs := range [][]run{alloc, zero} {
		put(int64(len(rs)))
		var prev int64
		for _, r := range rs {
			put(r.start - prev)
			put(r.n)
			prev = r.end()
		}
	}
	binary.LittleEndian.PutUint32(tmp[:4], crc32.Checksum(b.Bytes(), crcTable))
	b.Write(tmp[:4])
	return b.Bytes()
}

func decodeMap(data []byte) (alloc, zero []run, err error) {
	bad := errors.New("chain: corrupt layer map")
	if len(data) < len(mapMagic)+4 || !bytes.Equal(data[:len(mapMagic)], mapMagic) {
		return nil, nil, bad
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(data[len(data)-4:]) {
		return nil, nil, bad
	}
	r := bytes.NewReader(body[len(mapMagic):])
	get := func() int64 {
		v, e := binary.ReadUvarint(r)
		if e != nil {
			err = bad
		}
		return int64(v)
	}
	var out [2][]run
	for k := range out {
		n := get()
		if err != nil || n > int64(len(body)) {
			return nil, nil, bad
		}
		rs := make([]run, 0, n)
		var prev int64
		for i := int64(0); i < n; i++ {
			s := prev + get()
			l := get()
			if err != nil {
				return nil, nil, err
			}
			rs = append(rs, run{s, l})
			prev = s + l
		}
		out[k] = rs
	}
	return out[0], out[1], nil
}

func (p *Pool) readMap(id string) (alloc, zero []run, err error) {
	data, err := os.ReadFile(p.layerPath(id, ".map"))
	if err != nil {
		return nil, nil, fmt.Errorf("chain: layer %s map: %w", id, err)
	}
	alloc, zero, err = decodeMap(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (layer %s)", err, id)
	}
	return alloc, zero, nil
}

// writeMap records a sealed layer's runs; zero runs under allocated ones are
// dropped (within a layer, data wins over zeros).
func (p *Pool) writeMap(id string, alloc, zero []run) error {
	alloc = normalize(alloc)
	zero = subtract(normalize(zero), alloc)
	return writeFileAtomic(filepath.Join(p.dir, "layers"), id+".map", encodeMap(alloc, zero))
}

// Zero log record: start block, block count (uint64, uint32) and the CRC-32C
// of those 12 bytes. A torn record at the end (never fsynced) is ignored.
const zeroRecSize = 16

func encodeZeroRec(r run) []byte {
	b := make([]byte, zeroRecSize)
	binary.LittleEndian.PutUint64(b, uint64(r.start))
	binary.LittleEndian.PutUint32(b[8:], uint32(r.n))
	binary.LittleEndian.PutUint32(b[12:], crc32.Checksum(b[:12], crcTable))
	return b
}

// readZeroLog returns the records in the first limit bytes of a zero log
// (-1: all of it) and the length of its valid prefix.
func readZeroLog(f *os.File, limit int64) ([]run, int64, error) {
	if limit < 0 {
		limit = 1 << 62
	}
	data, err := io.ReadAll(io.NewSectionReader(f, 0, limit))
	if err != nil {
		return nil, 0, fmt.Errorf("chain: zero log: %w", err)
	}
	var rs []run
	var off int64
	for ; off+zeroRecSize <= int64(len(data)); off += zeroRecSize {
		b := data[off : off+zeroRecSize]
		if crc32.Checksum(b[:12], crcTable) != binary.LittleEndian.Uint32(b[12:]) {
			break
		}
		rs = append(rs, run{int64(binary.LittleEndian.Uint64(b)), int64(binary.LittleEndian.Uint32(b[8:]))})
	}
	return rs, off, nil
}

// writeFileAtomic writes dir/name crash-safely: temp file, fsync, rename,
// fsync of the directory.
func writeFileAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("chain: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("chain: write %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func punchHole(f *os.File, off, length int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	if err != nil {
		return fmt.Errorf("chain: punch hole: %w", err)
	}
	return nil
}

func fdatasync(f *os.File) error {
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("chain: fdatasync: %w", err)
	}
	return nil
}

// allocated returns the bytes a file occupies on disk.
func allocated(path string) int64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}

package chain

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Chain is one volume's stack of layers. See the package comment.
//
// Reads and writes take c.mu shared, so that they run in parallel; trims
// and every change of the layer stack take it exclusively (stack changes
// also hold the pool's lock first). Under the shared lock the index is
// guarded by ix, held only for lookups and updates, never across I/O; a
// write updates the index after its data is in the head file, so a
// concurrent read sees either the old or the new block, never a hole.
// Read-modify-write of a partial block holds the block's stripe of rmw, so
// two sub-block writes into one block cannot lose each other.
type Chain struct {
	p    *Pool
	name string

	mu     sync.RWMutex
	ix     sync.RWMutex
	rmw    [64]sync.Mutex
	closed bool
	meta   *chainMeta // shared with p.metas; replaced, never modified in place
	idx    *index
	slots  []*layer // index value -> layer; slots[0] is unused (zeros)
	slotOf map[string]uint32

	headSlot uint32
	headF    *os.File // head data file (owned by its layer)
	zf       *os.File // head zero log
	zoff     int64    // end of the zero log's valid records
	headGen  uint64   // bumped whenever the head changes (merges check it)
}

func (p *Pool) loadChain(m *chainMeta, fresh bool) (*Chain, error) {
	c := &Chain{p: p, name: m.Name, meta: m}
	if err := c.buildIndex(fresh); err != nil {
		return nil, err
	}
	return c, nil
}

// buildIndex rebuilds the index, the slots and the head from c.meta: sealed
// layers from their maps, the head by SEEK_DATA/SEEK_HOLE plus its zero log
// (skipped when fresh: a head just created is empty).
func (c *Chain) buildIndex(fresh bool) error {
	m := c.meta
	nb := m.Size / BlockSize
	idx := newIndex(nb)
	slots := make([]*layer, len(m.Layers)+1)
	slotOf := make(map[string]uint32, len(m.Layers))
	last := len(m.Layers) - 1
	for i, id := range m.Layers {
		l := c.p.layers[id]
		v := uint32(i + 1)
		slots[v] = l
		slotOf[id] = v
		if i == last {
			break
		}
		alloc, zero, err := c.p.readMap(id)
		if err != nil {
			return fmt.Errorf("chain: volume %q: %w", m.Name, err)
		}
		apply(idx, nb, alloc, zero, v)
	}
	head := slots[last+1]
	f, err := head.file(c.p)
	if err != nil {
		return err
	}
	zf, err := os.OpenFile(c.p.layerPath(head.id, ".zero"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("chain: volume %q: zero log: %w", m.Name, err)
	}
	var zoff int64
	if !fresh {
		alloc, err := scanData(f)
		if err != nil {
			zf.Close()
			return err
		}
		var zero []run
		zero, zoff, err = readZeroLog(zf, -1)
		if err != nil {
			zf.Close()
			return err
		}
		if err := zf.Truncate(zoff); err != nil {
			zf.Close()
			return fmt.Errorf("chain: zero log: %w", err)
		}
		apply(idx, nb, alloc, zero, uint32(last+1))
	}
	if c.zf != nil {
		c.zf.Close()
	}
	c.idx, c.slots, c.slotOf = idx, slots, slotOf
	c.headSlot, c.headF, c.zf, c.zoff = uint32(last+1), f, zf, zoff
	c.headGen++
	return nil
}

// apply lays one layer over the index: its zero runs first, then its data
// (within a layer, a block written after being zeroed is data).
func apply(idx *index, nb int64, alloc, zero []run, v uint32) {
	set := func(rs []run, v uint32) {
		for _, r := range rs {
			s, e := r.start, r.end()
			if e > nb {
				e = nb
			}
			if s < e {
				idx.set(s, e-s, v)
			}
		}
	}
	set(zero, 0)
	set(alloc, v)
}

func (c *Chain) errClosed() error {
	return fmt.Errorf("chain: volume %q is closed: %w", c.name, errdefs.ErrFailedPrecondition)
}

// close releases the head's zero log. Call with c.mu held (or unreachable).
func (c *Chain) close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	var err error
	if c.headF != nil {
		err = fdatasync(c.headF)
	}
	if c.zf != nil {
		c.zf.Close()
	}
	return err
}

func (c *Chain) checkRange(off, n int64) error {
	if off < 0 || n < 0 || off+n > c.meta.Size {
		return fmt.Errorf("chain: volume %q: range [%d, %d) outside size %d: %w", c.name, off, off+n, c.meta.Size, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Name returns the chain's name.
func (c *Chain) Name() string { return c.name }

// Size returns the volume size in bytes.
func (c *Chain) Size() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.meta.Size
}

// IndexBytes estimates the memory held by the chain's block index.
func (c *Chain) IndexBytes() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	c.ix.RLock()
	defer c.ix.RUnlock()
	return c.idx.bytes()
}

// ReadAt reads len(p) bytes at off. Blocks never written read as zeros.
// Reading past Size is errdefs.ErrInvalidArgument.
func (c *Chain) ReadAt(p []byte, off int64) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, c.errClosed()
	}
	if err := c.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := c.readLocked(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *Chain) readLocked(p []byte, off int64) error {
	end := off + int64(len(p))
	for pos := off; pos < end; {
		b := pos / BlockSize
		c.ix.RLock()
		v, n := c.idx.run(b, (end-1)/BlockSize-b+1)
		c.ix.RUnlock()
		e := (b + n) * BlockSize
		if e > end {
			e = end
		}
		dst := p[pos-off : e-off]
		if v == 0 {
			clear(dst)
		} else {
			f, err := c.slots[v].file(c.p)
			if err != nil {
				return err
			}
			k, err := f.ReadAt(dst, pos)
			if err == io.EOF {
				clear(dst[k:])
			} else if err != nil {
				return fmt.Errorf("chain: volume %q: read: %w", c.name, err)
			}
		}
		pos = e
	}
	return nil
}

// WriteAt writes p at off into the head; unaligned edges are read, merged
// and written back a whole block at a time. A full pool fails with an error
// wrapping errdefs.ErrNoSpace (ENOSPC) and leaves the chain usable; the
// range it failed on is then undefined. Writes are durable after Flush.
func (c *Chain) WriteAt(p []byte, off int64) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return 0, c.errClosed()
	}
	if err := c.checkRange(off, int64(len(p))); err != nil {
		return 0, err
	}
	end := off + int64(len(p))
	pos := off
	for pos < end {
		b := pos / BlockSize
		bs := b * BlockSize
		if pos == bs && end-pos >= BlockSize {
			k := (end - pos) / BlockSize * BlockSize
			w, err := c.headF.WriteAt(p[pos-off:pos-off+k], pos)
			if full := int64(w) / BlockSize; full > 0 {
				c.ix.Lock()
				c.idx.set(b, full, c.headSlot)
				c.ix.Unlock()
			}
			if err != nil {
				return int(pos - off + int64(w)/BlockSize*BlockSize), fmt.Errorf("chain: volume %q: write: %w", c.name, err)
			}
			pos += k
			continue
		}
		e := min(end, bs+BlockSize)
		if err := c.rmwBlock(b, p[pos-off:e-off], pos-bs); err != nil {
			return int(pos - off), err
		}
		pos = e
	}
	return len(p), nil
}

// rmwBlock writes data at byte at of block b: it reads the block, merges
// data in and writes the whole block back, holding the block's stripe.
func (c *Chain) rmwBlock(b int64, data []byte, at int64) error {
	stripe := &c.rmw[b%int64(len(c.rmw))]
	stripe.Lock()
	defer stripe.Unlock()
	var blk [BlockSize]byte
	if err := c.readLocked(blk[:], b*BlockSize); err != nil {
		return err
	}
	copy(blk[at:], data)
	return c.writeBlock(b, blk[:])
}

func (c *Chain) writeBlock(b int64, blk []byte) error {
	if _, err := c.headF.WriteAt(blk, b*BlockSize); err != nil {
		return fmt.Errorf("chain: volume %q: write: %w", c.name, err)
	}
	c.ix.Lock()
	c.idx.set(b, 1, c.headSlot)
	c.ix.Unlock()
	return nil
}

// Flush makes every write and trim completed before it durable.
func (c *Chain) Flush() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return c.errClosed()
	}
	// The zero log is synced at every append (before the hole is punched).
	return fdatasync(c.headF)
}

// Trim discards the range: it reads as zeros afterwards, never as an older
// layer's data, and the head's space is given back where whole blocks are.
// Partial blocks at the edges are zeroed by read-modify-write.
func (c *Chain) Trim(off, length int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.errClosed()
	}
	if err := c.checkRange(off, length); err != nil {
		return err
	}
	end := off + length
	ab := (off + BlockSize - 1) / BlockSize
	ae := end / BlockSize
	if ab > ae { // inside one block
		return c.zeroPartial(off, end)
	}
	if off < ab*BlockSize {
		if err := c.zeroPartial(off, ab*BlockSize); err != nil {
			return err
		}
	}
	if ae*BlockSize < end {
		if err := c.zeroPartial(ae*BlockSize, end); err != nil {
			return err
		}
	}
	return c.zeroBlocks(ab, ae-ab)
}

// WriteZeroes makes the range read as zeros, like Trim.
func (c *Chain) WriteZeroes(off, length int64) error { return c.Trim(off, length) }

func (c *Chain) zeroPartial(s, e int64) error {
	if s >= e {
		return nil
	}
	b := s / BlockSize
	if c.idx.get(b) == 0 {
		return nil
	}
	var blk [BlockSize]byte
	if err := c.readLocked(blk[:], b*BlockSize); err != nil {
		return err
	}
	clear(blk[s-b*BlockSize : e-b*BlockSize])
	return c.writeBlock(b, blk[:])
}

// zeroBlocks zeroes whole blocks [b, b+n). When lower layers exist, a zero
// record is made durable before the hole is punched, so that no crash can
// expose an older layer's data.
func (c *Chain) zeroBlocks(b, n int64) error {
	if n <= 0 {
		return nil
	}
	any := false
	for x := b; x < b+n; {
		v, k := c.idx.run(x, b+n-x)
		if v != 0 {
			any = true
			break
		}
		x += k
	}
	if !any {
		return nil
	}
	if len(c.meta.Layers) > 1 {
		if err := c.appendZero([]run{{b, n}}); err != nil {
			return err
		}
	}
	if err := punchHole(c.headF, b*BlockSize, n*BlockSize); err != nil {
		return err
	}
	c.idx.set(b, n, 0)
	return nil
}

// appendZero appends records to the head's zero log and syncs it.
func (c *Chain) appendZero(rs []run) error {
	var buf []byte
	for _, r := range rs {
		for r.n > 0 {
			k := min(r.n, 1<<31)
			buf = append(buf, encodeZeroRec(run{r.start, k})...)
			r.start += k
			r.n -= k
		}
	}
	if len(buf) == 0 {
		return nil
	}
	if _, err := c.zf.WriteAt(buf, c.zoff); err != nil {
		// A partial record fails its checksum; later records overwrite it.
		return fmt.Errorf("chain: volume %q: zero log: %w", c.name, err)
	}
	if err := fdatasync(c.zf); err != nil {
		return err
	}
	c.zoff += int64(len(buf))
	if c.zoff >= zeroCompactAt {
		return c.compactZeroLog()
	}
	return nil
}

// zeroCompactAt is the zero log size (64 Ki records) beyond which appends
// try to compact it: a head trimmed again and again over the same ranges
// would otherwise grow its log without bound.
var zeroCompactAt int64 = 1 << 20 // a variable for tests

// compactZeroLog rewrites the head's zero log with its records merged,
// crash-safely (temp file, fsync, rename, fsync directory).
func (c *Chain) compactZeroLog() error {
	rs, _, err := readZeroLog(c.zf, c.zoff)
	if err != nil {
		return err
	}
	rs = normalize(rs)
	var buf []byte
	for _, r := range rs {
		for r.n > 0 {
			k := min(r.n, 1<<31)
			buf = append(buf, encodeZeroRec(run{r.start, k})...)
			r.start += k
			r.n -= k
		}
	}
	if int64(len(buf)) > c.zoff/2 {
		return nil // mostly distinct ranges: not worth it
	}
	id := c.meta.head()
	if err := writeFileAtomic(filepath.Join(c.p.dir, "layers"), id+".zero", buf); err != nil {
		return err
	}
	zf, err := os.OpenFile(c.p.layerPath(id, ".zero"), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("chain: zero log: %w", err)
	}
	c.zf.Close()
	c.zf, c.zoff = zf, int64(len(buf))
	return nil
}

// Grow raises the volume size; shrinking is errdefs.ErrFailedPrecondition.
func (c *Chain) Grow(size int64) error {
	if err := validSize(size); err != nil {
		return err
	}
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.errClosed()
	}
	if size < c.meta.Size {
		return fmt.Errorf("chain: volume %q: cannot shrink from %d to %d: %w", c.name, c.meta.Size, size, errdefs.ErrFailedPrecondition)
	}
	if size == c.meta.Size {
		return nil
	}
	m := c.meta.clone()
	m.Size = size
	if err := c.p.commit(c, m); err != nil {
		return err
	}
	c.idx.grow(size / BlockSize)
	return nil
}

// commit writes m and installs it as the chain's metadata. Call with p.mu
// (and c.mu, when c is open) held.
func (p *Pool) commit(c *Chain, m *chainMeta) error {
	if err := p.writeMeta(m); err != nil {
		return err
	}
	p.metas[m.Name] = m
	if c != nil {
		c.meta = m
	}
	return nil
}

func (c *Chain) freeSlot() uint32 {
	for v := 1; v < len(c.slots); v++ {
		if c.slots[v] == nil {
			return uint32(v)
		}
	}
	c.slots = append(c.slots, nil)
	return uint32(len(c.slots) - 1)
}

// Snapshot seals the head as snapshot name and starts a new empty head:
// O(1) in the data (no copy; the head's extents are listed into its map).
// A duplicate name is errdefs.ErrAlreadyExists.
func (c *Chain) Snapshot(name string) (SnapshotInfo, error) {
	if err := errdefs.ValidateName("snapshot", name); err != nil {
		return SnapshotInfo{}, err
	}
	// Flush first without the pool's lock: the flush under it is then short
	// and other chains are not held up by this one's dirty data.
	if err := c.Flush(); err != nil {
		return SnapshotInfo{}, err
	}
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return SnapshotInfo{}, c.errClosed()
	}
	if _, s := c.meta.snapshot(name); s != nil {
		return SnapshotInfo{}, fmt.Errorf("chain: snapshot %s@%s: %w", c.name, name, errdefs.ErrAlreadyExists)
	}
	if err := fdatasync(c.headF); err != nil {
		return SnapshotInfo{}, err
	}
	// The index holds exactly the head's blocks: no SEEK_DATA scan needed.
	alloc := c.idx.runsOf(c.headSlot)
	zero, _, err := readZeroLog(c.zf, c.zoff)
	if err != nil {
		return SnapshotInfo{}, err
	}
	oldHead := c.meta.head()
	if err := p.writeMap(oldHead, alloc, zero); err != nil {
		return SnapshotInfo{}, err
	}
	id, err := p.newHeadFiles()
	if err != nil {
		return SnapshotInfo{}, err
	}
	s := snapMeta{Name: name, Layer: oldHead, Size: c.meta.Size, Created: time.Now().UTC()}
	m := c.meta.clone()
	m.Layers = append(m.Layers, id)
	m.Snapshots = append(m.Snapshots, s)
	if err := p.commit(c, m); err != nil {
		p.removeLayer(id)
		return SnapshotInfo{}, err
	}
	p.recount()
	nl := p.layers[id]
	f, ferr := nl.file(p)
	zf, zerr := os.OpenFile(p.layerPath(id, ".zero"), os.O_RDWR, 0)
	if err := errors.Join(ferr, zerr); err != nil {
		// The snapshot is committed but this handle cannot go on: the
		// next Open loads the chain afresh.
		c.close()
		delete(p.chains, c.name)
		return SnapshotInfo{}, fmt.Errorf("chain: volume %q: new head: %w", c.name, err)
	}
	c.zf.Close()
	os.Remove(p.layerPath(oldHead, ".zero"))
	v := c.freeSlot()
	c.slots[v] = nl
	c.slotOf[id] = v
	c.headSlot, c.headF, c.zf, c.zoff = v, f, zf, 0
	c.headGen++
	return SnapshotInfo{Name: s.Name, Layer: s.Layer, Size: s.Size, Created: s.Created}, nil
}

// Snapshots lists the chain's snapshots, oldest first.
func (c *Chain) Snapshots() []SnapshotInfo {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	return c.snapshotsLocked()
}

func (c *Chain) snapshotsLocked() []SnapshotInfo {
	out := make([]SnapshotInfo, 0, len(c.meta.Snapshots))
	for _, s := range c.meta.Snapshots {
		si := SnapshotInfo{Name: s.Name, Layer: s.Layer, Size: s.Size, Created: s.Created}
		if l := c.p.layers[s.Layer]; l != nil {
			si.Clones = l.refs - 1
		}
		out = append(out, si)
	}
	return out
}

// Revert drops every write since snapshot name by starting a new empty head
// on top of it; the size goes back to the snapshot's size. The chain stays
// linear: reverting past later snapshots is errdefs.ErrFailedPrecondition
// (delete them first, like zfs rollback without -r). Layers only the dropped
// part used are removed; clones keep what they use.
func (c *Chain) Revert(name string) error {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.errClosed()
	}
	i, s := c.meta.snapshot(name)
	if s == nil {
		return fmt.Errorf("chain: snapshot %s@%s: %w", c.name, name, errdefs.ErrNotFound)
	}
	if i != len(c.meta.Snapshots)-1 {
		return fmt.Errorf("chain: cannot revert %s to %s: later snapshots exist (delete them first): %w", c.name, name, errdefs.ErrFailedPrecondition)
	}
	pos := c.meta.layerPos(s.Layer)
	id, err := p.newHeadFiles()
	if err != nil {
		return err
	}
	m := c.meta.clone()
	m.Layers = append(m.Layers[:pos+1], id)
	m.Size = s.Size
	if err := p.commit(c, m); err != nil {
		p.removeLayer(id)
		return err
	}
	p.recount()
	if err := c.buildIndex(true); err != nil {
		// Committed, but this handle cannot go on: the next Open loads
		// the chain afresh.
		c.close()
		delete(p.chains, c.name)
		return err
	}
	p.kickMergesLocked()
	return nil
}

// DeleteSnapshot removes snapshot name. Its layer is merged into its upper
// neighbour in the background and its space given back (Pool.WaitMerges
// waits for that), unless clones still use it, in which case it stays until
// the last of them is deleted.
func (c *Chain) DeleteSnapshot(name string) (DeleteSnapshotResult, error) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return DeleteSnapshotResult{}, c.errClosed()
	}
	i, s := c.meta.snapshot(name)
	if s == nil {
		return DeleteSnapshotResult{}, fmt.Errorf("chain: snapshot %s@%s: %w", c.name, name, errdefs.ErrNotFound)
	}
	l := s.Layer
	up := c.meta.Layers[c.meta.layerPos(l)+1]
	var res DeleteSnapshotResult
	for _, om := range p.metas {
		if om.Name == c.name {
			continue
		}
		if k := om.layerPos(l); k >= 0 && (k+1 >= len(om.Layers) || om.Layers[k+1] != up) {
			res.KeptForClones++
		}
	}
	m := c.meta.clone()
	m.Snapshots = append(m.Snapshots[:i], m.Snapshots[i+1:]...)
	if err := p.commit(c, m); err != nil {
		return DeleteSnapshotResult{}, err
	}
	p.kickMergesLocked()
	return res, nil
}

// ChangedExtents returns the ranges written, trimmed or zeroed after
// snapshot from up to snapshot to. from "" means the start of the chain;
// to "" means the current head. Adjacent ranges are merged. It reads layer
// maps (and scans the head when to is ""), never the whole volume.
func (c *Chain) ChangedExtents(from, to string) ([]Extent, error) {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return nil, c.errClosed()
	}
	m := c.meta
	lo, hi := 0, len(m.Layers)-1
	if from != "" {
		_, s := m.snapshot(from)
		if s == nil {
			return nil, fmt.Errorf("chain: snapshot %s@%s: %w", c.name, from, errdefs.ErrNotFound)
		}
		lo = m.layerPos(s.Layer) + 1
	}
	if to != "" {
		_, s := m.snapshot(to)
		if s == nil {
			return nil, fmt.Errorf("chain: snapshot %s@%s: %w", c.name, to, errdefs.ErrNotFound)
		}
		hi = m.layerPos(s.Layer)
	}
	if lo > hi+1 {
		return nil, fmt.Errorf("chain: snapshot %q is newer than %q: %w", from, to, errdefs.ErrInvalidArgument)
	}
	var all []run
	for i := lo; i <= hi; i++ {
		if i == len(m.Layers)-1 {
			c.ix.RLock()
			alloc := c.idx.runsOf(c.headSlot)
			c.ix.RUnlock()
			zero, _, err := readZeroLog(c.zf, c.zoff)
			if err != nil {
				return nil, err
			}
			all = append(append(all, alloc...), zero...)
			continue
		}
		alloc, zero, err := p.readMap(m.Layers[i])
		if err != nil {
			return nil, err
		}
		all = append(append(all, alloc...), zero...)
	}
	all = normalize(all)
	nb := m.Size / BlockSize
	out := []Extent{}
	for _, r := range all {
		e := min(r.end(), nb)
		if r.start >= e {
			continue
		}
		out = append(out, Extent{Offset: r.start * BlockSize, Length: (e - r.start) * BlockSize})
	}
	return out, nil
}

// Info describes the chain.
func (c *Chain) Info() Info {
	p := c.p
	p.mu.Lock()
	defer p.mu.Unlock()
	m := c.meta
	inf := Info{Name: c.name, Size: m.Size, Layers: len(m.Layers), Parent: m.Parent, Snapshots: c.snapshotsLocked()}
	for _, id := range m.Layers {
		if l := p.layers[id]; l != nil && l.refs == 1 {
			for _, ext := range []string{".data", ".map", ".zero"} {
				inf.Allocated += allocated(p.layerPath(id, ext))
			}
		}
	}
	return inf
}

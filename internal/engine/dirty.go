package engine

import (
	"math/bits"
	"sort"
	"sync"
)

// dirtyBlock is the granularity of dirty tracking: the chain's block, so
// that catching a replica up copies the blocks it missed and no more
// (4 KiB random writes copy 4 KiB each, not a whole region).
const dirtyBlock = 4096

// dirtyChunkBlocks is how many blocks one bitmap chunk covers (1 MiB): the
// map holds only chunks that saw writes, so a large volume with a few
// writes costs a few chunks.
const dirtyChunkBlocks = 256

// dirtySet records which blocks of a volume a replica missed. It is safe
// for concurrent use.
type dirtySet struct {
	mu     sync.Mutex
	chunks map[int64]*[dirtyChunkBlocks / 64]uint64
	blocks int64 // number of set bits
}

func newDirtySet() *dirtySet {
	return &dirtySet{chunks: map[int64]*[dirtyChunkBlocks / 64]uint64{}}
}

// add marks the blocks covering [off, off+length).
func (d *dirtySet) add(off, length int64) {
	if length <= 0 {
		return
	}
	first, last := off/dirtyBlock, (off+length-1)/dirtyBlock
	d.mu.Lock()
	defer d.mu.Unlock()
	for b := first; b <= last; b++ {
		c := d.chunks[b/dirtyChunkBlocks]
		if c == nil {
			c = new([dirtyChunkBlocks / 64]uint64)
			d.chunks[b/dirtyChunkBlocks] = c
		}
		i := b % dirtyChunkBlocks
		bit := uint64(1) << (i % 64)
		if c[i/64]&bit == 0 {
			c[i/64] |= bit
			d.blocks++
		}
	}
}

// addExtents marks every extent.
func (d *dirtySet) addExtents(es []Extent) {
	for _, e := range es {
		d.add(e.Offset, e.Length)
	}
}

// bytes returns how many bytes are marked.
func (d *dirtySet) bytes() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.blocks * dirtyBlock
}

// take removes and returns marked ranges, in offset order, up to about max
// bytes (whole runs of blocks; at least one run when any is marked).
func (d *dirtySet) take(max int64) []Extent {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := make([]int64, 0, len(d.chunks))
	for k := range d.chunks {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	var out []Extent
	var taken int64
	for _, k := range keys {
		c := d.chunks[k]
		for w := range c {
			for c[w] != 0 {
				if taken >= max {
					return out
				}
				i := int64(bits.TrailingZeros64(c[w]))
				c[w] &^= 1 << i
				d.blocks--
				off := (k*dirtyChunkBlocks + int64(w)*64 + i) * dirtyBlock
				if n := len(out); n > 0 && out[n-1].Offset+out[n-1].Length == off {
					out[n-1].Length += dirtyBlock
				} else {
					out = append(out, Extent{Offset: off, Length: dirtyBlock})
				}
				taken += dirtyBlock
			}
		}
		if *c == ([dirtyChunkBlocks / 64]uint64{}) {
			delete(d.chunks, k)
		}
	}
	return out
}

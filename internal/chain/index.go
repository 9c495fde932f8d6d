package chain

import "unsafe"

// The flattened index maps every block of a volume to the slot of the layer
// holding its newest copy (0: the block reads as zeros). It is cut into chunks
// of chunkBlocks blocks. A chunk is nil (all zeros), uniform (one value, no
// per-block array) or mixed: a small palette of values plus a bit-packed array
// of palette positions, ceil(log2(palette size)) bits per block (entries may
// straddle two words). Sequential writes leave uniform chunks (a few dozen
// bytes per 4 MiB); random 4 KiB writes over one layer cost 1 bit per block,
// over 17 layers 5 bits. Renumbering a layer (after a merge) rewrites
// palettes only.

const (
	chunkShift  = 10
	chunkBlocks = 1 << chunkShift
)

type palEntry struct {
	v uint32 // layer slot
	n uint32 // blocks of the chunk using this entry
}

type chunk struct {
	pal  []palEntry
	bits uint8 // 0: uniform (pal[0] for every block)
	w    []uint64
}

type index struct {
	chunks []*chunk
}

func newIndex(blocks int64) *index {
	return &index{chunks: make([]*chunk, (blocks+chunkBlocks-1)>>chunkShift)}
}

// grow makes room for blocks blocks.
func (x *index) grow(blocks int64) {
	n := int((blocks + chunkBlocks - 1) >> chunkShift)
	for len(x.chunks) < n {
		x.chunks = append(x.chunks, nil)
	}
}

func (c *chunk) pos(i int) int {
	if c.bits == 0 {
		return 0
	}
	b := uint(i) * uint(c.bits)
	w, off := b>>6, b&63
	v := c.w[w] >> off
	if off+uint(c.bits) > 64 {
		v |= c.w[w+1] << (64 - off)
	}
	return int(v & (1<<c.bits - 1))
}

func (c *chunk) setPos(i, p int) {
	b := uint(i) * uint(c.bits)
	w, off := b>>6, b&63
	m := uint64(1<<c.bits - 1)
	c.w[w] = c.w[w]&^(m<<off) | uint64(p)<<off
	if off+uint(c.bits) > 64 {
		c.w[w+1] = c.w[w+1]&^(m>>(64-off)) | uint64(p)>>(64-off)
	}
}

func (x *index) get(b int64) uint32 {
	c := x.chunks[b>>chunkShift]
	if c == nil {
		return 0
	}
	return c.pal[c.pos(int(b&(chunkBlocks-1)))].v
}

// run returns the value at block b and how many blocks from b (at most max)
// share it.
func (x *index) run(b, max int64) (uint32, int64) {
	c := x.chunks[b>>chunkShift]
	i := int(b & (chunkBlocks - 1))
	left := int64(chunkBlocks - i)
	if left > max {
		left = max
	}
	if c == nil {
		return 0, left
	}
	if c.bits == 0 {
		return c.pal[0].v, left
	}
	p := c.pos(i)
	v := c.pal[p].v
	n := int64(1)
	for n < left && c.pal[c.pos(i+int(n))].v == v {
		n++
	}
	return v, n
}

// set gives blocks [b, b+n) the value v.
func (x *index) set(b, n int64, v uint32) {
	for n > 0 {
		ci := b >> chunkShift
		i := int(b & (chunkBlocks - 1))
		m := int64(chunkBlocks - i)
		if m > n {
			m = n
		}
		x.setInChunk(ci, i, int(m), v)
		b += m
		n -= m
	}
}

func (x *index) setInChunk(ci int64, i, n int, v uint32) {
	c := x.chunks[ci]
	if n == chunkBlocks {
		if v == 0 {
			x.chunks[ci] = nil
		} else {
			x.chunks[ci] = &chunk{pal: []palEntry{{v, chunkBlocks}}}
		}
		return
	}
	if c == nil {
		if v == 0 {
			return
		}
		c = &chunk{pal: []palEntry{{0, chunkBlocks}}}
		x.chunks[ci] = c
	}
	if c.bits == 0 && c.pal[0].v == v {
		return
	}
	p := c.slotFor(v)
	for j := i; j < i+n; j++ {
		old := c.pos(j)
		if old == p {
			continue
		}
		c.pal[old].n--
		c.pal[p].n++
		c.setPos(j, p)
	}
	if c.pal[p].n == chunkBlocks {
		if v == 0 {
			x.chunks[ci] = nil
		} else {
			x.chunks[ci] = &chunk{pal: []palEntry{{v, chunkBlocks}}}
		}
	}
}

// slotFor returns the palette position for v, adding it (reusing an unused
// entry, or widening the array) if needed.
func (c *chunk) slotFor(v uint32) int {
	// At most one entry in use (n > 0) per value: remap relies on it.
	free := -1
	for p, e := range c.pal {
		if e.n > 0 && e.v == v {
			return p
		}
		if e.n == 0 && free < 0 {
			free = p
		}
	}
	if free >= 0 {
		c.pal[free].v = v
		return free
	}
	if c.bits == 0 || len(c.pal) >= 1<<c.bits {
		c.widen()
	}
	c.pal = append(c.pal, palEntry{v, 0})
	return len(c.pal) - 1
}

// widen adds one bit per block, doubling the palette's room.
func (c *chunk) widen() {
	nb := c.bits + 1
	nw := make([]uint64, (chunkBlocks*int(nb)+63)/64)
	if c.bits > 0 {
		old := *c
		c.bits, c.w = nb, nw
		for j := 0; j < chunkBlocks; j++ {
			if p := old.pos(j); p != 0 {
				c.setPos(j, p)
			}
		}
		return
	}
	c.bits, c.w = nb, nw
}

// remap renumbers slot from as slot to everywhere.
func (x *index) remap(from, to uint32) {
	for ci, c := range x.chunks {
		if c == nil {
			continue
		}
		pf, pt := -1, -1
		for p, e := range c.pal {
			if e.v == from && (e.n > 0) {
				pf = p
			}
			if e.v == to && e.n > 0 {
				pt = p
			}
		}
		if pf < 0 {
			continue
		}
		if pt < 0 || c.bits == 0 {
			c.pal[pf].v = to
		} else {
			for j := 0; j < chunkBlocks; j++ {
				if c.pos(j) == pf {
					c.setPos(j, pt)
				}
			}
			c.pal[pt].n += c.pal[pf].n
			c.pal[pf].n = 0
		}
		if c.pal[c.pos(0)].n == chunkBlocks {
			if v := c.pal[c.pos(0)].v; v == 0 {
				x.chunks[ci] = nil
			} else {
				x.chunks[ci] = &chunk{pal: []palEntry{{v, chunkBlocks}}}
			}
		}
	}
}

// bytes estimates the memory the index holds.
func (x *index) bytes() int64 {
	n := int64(cap(x.chunks)) * int64(unsafe.Sizeof((*chunk)(nil)))
	for _, c := range x.chunks {
		if c != nil {
			n += int64(unsafe.Sizeof(*c)) + int64(cap(c.pal))*int64(unsafe.Sizeof(palEntry{})) + int64(cap(c.w))*8
		}
	}
	return n
}

// runsOf lists the blocks whose value is v, in order.
func (x *index) runsOf(v uint32) []run {
	var rs []run
	add := func(s, n int64) {
		if k := len(rs) - 1; k >= 0 && rs[k].end() == s {
			rs[k].n += n
		} else {
			rs = append(rs, run{s, n})
		}
	}
	for ci, c := range x.chunks {
		if c == nil {
			continue
		}
		base := int64(ci) << chunkShift
		if c.bits == 0 {
			if c.pal[0].v == v {
				add(base, chunkBlocks)
			}
			continue
		}
		p := -1
		for i, e := range c.pal {
			if e.v == v && e.n > 0 {
				p = i
			}
		}
		if p < 0 {
			continue
		}
		for j := 0; j < chunkBlocks; j++ {
			if c.pos(j) == p {
				add(base+int64(j), 1)
			}
		}
	}
	return rs
}

package chain

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// buildDeep makes a chain of depth snapshots; layer i holds blocks i, i+depth,
// i+2*depth... of a volume of blocks blocks, each stamped with its layer.
func buildDeep(t testing.TB, p *Pool, depth, blocks int) *Chain {
	t.Helper()
	c := mustCreate(t, p, "deep", int64(blocks)*BlockSize)
	blk := make([]byte, BlockSize)
	for i := 0; i < depth; i++ {
		for b := i; b < blocks; b += depth {
			binary.LittleEndian.PutUint64(blk, uint64(i))
			binary.LittleEndian.PutUint64(blk[8:], uint64(b))
			mustWrite(t, c, blk, int64(b)*BlockSize)
		}
		if i < depth-1 {
			if _, err := c.Snapshot(fmt.Sprintf("s%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}

func checkDeep(t testing.TB, c *Chain, depth, blocks int) {
	t.Helper()
	got := readAll(t, c, 0, int64(blocks)*BlockSize)
	want := make([]byte, BlockSize)
	for b := 0; b < blocks; b++ {
		binary.LittleEndian.PutUint64(want, uint64(b%depth))
		binary.LittleEndian.PutUint64(want[8:], uint64(b))
		if !bytes.Equal(got[b*BlockSize:(b+1)*BlockSize], want) {
			t.Fatalf("block %d: wrong content", b)
		}
	}
}

// TestDepth1000: a chain with 1,000 snapshots works, reopens and reads right.
func TestDepth1000(t *testing.T) {
	depth := 1000
	if testing.Short() {
		depth = 200
	}
	p, dir := openPool(t)
	start := time.Now()
	c := buildDeep(t, p, depth, 3*depth)
	t.Logf("%d snapshots in %v", depth-1, time.Since(start))
	checkDeep(t, c, depth, 3*depth)
	if inf := c.Info(); inf.Layers != depth {
		t.Fatalf("layers = %d", inf.Layers)
	}
	p.Close()
	start = time.Now()
	p2, err := OpenPool(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	c2, err := p2.Open("deep")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reopen at depth %d in %v", depth, time.Since(start))
	checkDeep(t, c2, depth, 3*depth)
	// A clone at the deepest snapshot sees the same thing below its head.
	d, err := p2.Clone("deep", fmt.Sprintf("s%d", depth-2), "clone", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, d, 0, BlockSize)
	if binary.LittleEndian.Uint64(got) != 0 {
		t.Fatal("clone: wrong block 0")
	}
}

// BenchmarkReadDepth reads random 4 KiB blocks of a chain 1 and 1,000 layers
// deep; the flattened index makes both the same cost.
func BenchmarkReadDepth(b *testing.B) {
	for _, depth := range []int{1, 1000} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			p, _ := openPool(b)
			blocks := 4096
			c := buildDeep(b, p, depth, blocks)
			buf := make([]byte, BlockSize)
			r := rand.New(rand.NewPCG(1, 2))
			b.SetBytes(BlockSize)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.ReadAt(buf, int64(r.IntN(blocks))*BlockSize); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package chain

import (
	"math/rand/v2"
	"testing"
)

// TestIndexRandom drives the palette index with random range sets and
// remaps (enough values to reach 16 bits per block) against a plain slice.
func TestIndexRandom(t *testing.T) {
	for seed := uint64(0); seed < 40; seed++ {
		r := rand.New(rand.NewPCG(seed, 1))
		nb := int64(3*chunkBlocks + r.IntN(chunkBlocks))
		x := newIndex(nb)
		want := make([]uint32, nb)
		maxV := []int{2, 5, 20, 300}[seed%4]
		for step := 0; step < 3000; step++ {
			switch op := r.IntN(10); {
			case op < 8:
				s := int64(r.IntN(int(nb)))
				n := int64(1 + r.IntN(16))
				if r.IntN(10) == 0 {
					n = int64(1 + r.IntN(2*chunkBlocks))
				}
				n = min(n, nb-s)
				v := uint32(r.IntN(maxV))
				x.set(s, n, v)
				for b := s; b < s+n; b++ {
					want[b] = v
				}
			default:
				from, to := uint32(1+r.IntN(maxV)), uint32(1+r.IntN(maxV))
				if from == to {
					continue
				}
				x.remap(from, to)
				for b := range want {
					if want[b] == from {
						want[b] = to
					}
				}
			}
		}
		for b := int64(0); b < nb; {
			v, n := x.run(b, nb-b)
			for k := b; k < b+n; k++ {
				if want[k] != v {
					t.Fatalf("seed %d: block %d = %d, want %d", seed, k, v, want[k])
				}
			}
			if b+n < nb && n < chunkBlocks-(b%chunkBlocks) && want[b+n] == v {
				t.Fatalf("seed %d: run at %d stops early", seed, b)
			}
			b += n
		}
		for v := uint32(1); v < uint32(maxV)+1; v++ {
			var cnt int64
			for _, rr := range x.runsOf(v) {
				for k := rr.start; k < rr.end(); k++ {
					if want[k] != v {
						t.Fatalf("seed %d: runsOf(%d) has block %d", seed, v, k)
					}
				}
				cnt += rr.n
			}
			var exp int64
			for _, w := range want {
				if w == v {
					exp++
				}
			}
			if cnt != exp {
				t.Fatalf("seed %d: runsOf(%d) has %d blocks, want %d", seed, v, cnt, exp)
			}
		}
		// Palette counts agree with the blocks.
		for ci, c := range x.chunks {
			if c == nil {
				continue
			}
			cnt := make([]uint32, len(c.pal))
			for j := 0; j < chunkBlocks; j++ {
				cnt[c.pos(j)]++
			}
			for p := range c.pal {
				if cnt[p] != c.pal[p].n {
					t.Fatalf("seed %d chunk %d: palette %d count %d, blocks %d", seed, ci, p, c.pal[p].n, cnt[p])
				}
			}
		}
	}
}

func TestRuns(t *testing.T) {
	a := normalize([]run{{10, 5}, {0, 3}, {3, 2}, {14, 4}, {30, 0}})
	if len(a) != 2 || a[0] != (run{0, 5}) || a[1] != (run{10, 8}) {
		t.Fatalf("normalize: %v", a)
	}
	d := subtract([]run{{0, 20}, {30, 5}}, []run{{2, 3}, {10, 25}})
	if len(d) != 2 || d[0] != (run{0, 2}) || d[1] != (run{5, 5}) {
		t.Fatalf("subtract: %v", d)
	}
	alloc, zero := []run{{0, 1}, {5, 100000}}, []run{{2, 2}}
	a2, z2, err := decodeMap(encodeMap(alloc, zero))
	if err != nil || len(a2) != 2 || a2[1] != alloc[1] || z2[0] != zero[0] {
		t.Fatalf("map round trip: %v %v %v", a2, z2, err)
	}
	bad := encodeMap(alloc, zero)
	bad[len(bad)/2] ^= 1
	if _, _, err := decodeMap(bad); err == nil {
		t.Fatal("corrupt map accepted")
	}
}

package chain

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// writeRandom4K writes n random 4 KiB blocks of c.
func writeRandom4K(t testing.TB, c *Chain, n int) {
	t.Helper()
	blocks := int(c.Size() / BlockSize)
	r := rand.New(rand.NewPCG(3, 4))
	buf := pattern(BlockSize, 5)
	for i := 0; i < n; i++ {
		mustWrite(t, c, buf, int64(r.IntN(blocks))*BlockSize)
	}
}

// TestIndexMemory checks the index targets scaled to 256 MiB (64 MiB in
// -short): at most 32 KiB
// per GiB written sequentially, 256 KiB per GiB of random 4 KiB writes.
func TestIndexMemory(t *testing.T) {
	size := int64(256 * mib)
	if testing.Short() {
		size = 64 * mib
	}
	p, _ := openPool(t)
	seq := mustCreate(t, p, "seq", size)
	buf := pattern(mib, 1)
	for off := int64(0); off < size; off += mib {
		mustWrite(t, seq, buf, off)
	}
	perGiB := func(c *Chain) int64 { return c.IndexBytes() * (1 << 30) / size }
	if got := perGiB(seq); got > 32<<10 {
		t.Errorf("sequential: %d bytes of index per GiB", got)
	} else {
		t.Logf("sequential: %d bytes of index per GiB", got)
	}
	rnd := mustCreate(t, p, "rnd", size)
	writeRandom4K(t, rnd, int(size/BlockSize))
	if got := perGiB(rnd); got > 256<<10 {
		t.Errorf("random 4 KiB: %d bytes of index per GiB", got)
	} else {
		t.Logf("random 4 KiB: %d bytes of index per GiB", got)
	}
}

// TestCloneIsO1: cloning (and opening the clone) copies no data: a volume of
// 32 Ki random 4 KiB writes clones in milliseconds.
func TestCloneIsO1(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 256 MiB")
	}
	p, _ := openPool(t)
	c := mustCreate(t, p, "v", 1<<30)
	writeRandom4K(t, c, 32<<10)
	if _, err := c.Snapshot("s"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d, err := p.Clone("v", "s", "d", 0)
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	t.Logf("clone of 32 Ki random 4 KiB writes: %v, index %d bytes", el, d.IndexBytes())
	// The target is 50 ms (BenchmarkClone measures it at 4 GiB); the test
	// allows for a loaded CI disk, where the three fsyncs dominate.
	if el > 250*time.Millisecond {
		t.Errorf("clone took %v", el)
	}
}

// BenchmarkClone clones a snapshot of a 4 GiB volume holding 1 Mi random
// 4 KiB writes (STRATA_CHAIN_CLONE_WRITES overrides the count), including the
// open of the clone (index built from the layer map).
func BenchmarkClone(b *testing.B) {
	n := 1 << 20
	if s := os.Getenv("STRATA_CHAIN_CLONE_WRITES"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	p, _ := openPool(b)
	c := mustCreate(b, p, "v", 4<<30)
	start := time.Now()
	writeRandom4K(b, c, n)
	b.Logf("%d random writes in %v, index %d bytes", n, time.Since(start), c.IndexBytes())
	start = time.Now()
	if _, err := c.Snapshot("s"); err != nil {
		b.Fatal(err)
	}
	b.Logf("snapshot in %v", time.Since(start))
	// Each clone is timed by hand so the 4 GiB setup runs once (use
	// -benchtime=1x).
	b.ResetTimer()
	var total time.Duration
	const clones = 10
	for i := 0; i < b.N*clones; i++ {
		start := time.Now()
		d, err := p.Clone("v", "s", "d", 0)
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		if i == 0 {
			b.Logf("clone index %d bytes", d.IndexBytes())
		}
		if err := p.Delete("d"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N*clones)/1000, "ms/clone")
}

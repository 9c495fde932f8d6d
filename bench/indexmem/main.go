// Command indexmem measures the memory of the chain's extent index per GiB
// written: sequentially, at random 4 KiB offsets filling a volume, and at
// random 4 KiB offsets over a snapshot chain. It writes into a pool in a
// temporary directory (on the filesystem of -dir) and prints a table.
//
//	go run ./bench/indexmem [-dir DIR] [-gib N]
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"

	"github.com/strata-storage/strata/internal/chain"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory for the scratch pool")
	gib := flag.Int64("gib", 1, "GiB to write in each pattern")
	flag.Parse()

	tmp, err := os.MkdirTemp(*dir, "strata-indexmem-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	pool, err := chain.OpenPool(tmp)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	const bs = chain.BlockSize
	total := *gib << 30
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	type row struct {
		pattern string
		written int64
		index   int64
	}
	var rows []row

	// Sequential: 1 MiB writes from offset 0.
	c, err := pool.Create("seq", total)
	must(err)
	for off := int64(0); off < total; off += int64(len(buf)) {
		_, err := c.WriteAt(buf, off)
		must(err)
	}
	must(c.Flush())
	rows = append(rows, row{"sequential 1 MiB writes", total, c.IndexBytes()})

	// Random 4 KiB writes over a volume of the same size: as many writes as
	// blocks (about 63% of blocks end up written, the rest are holes between
	// them: the worst case for run-length structures).
	blocks := total / bs
	r := rand.New(rand.NewPCG(1, 2))
	c, err = pool.Create("rand", total)
	must(err)
	for i := int64(0); i < blocks; i++ {
		_, err := c.WriteAt(buf[:bs], r.Int64N(blocks)*bs)
		must(err)
	}
	must(c.Flush())
	rows = append(rows, row{"random 4 KiB writes", blocks * bs, c.IndexBytes()})

	// Random 4 KiB writes in 16 rounds with a snapshot after each: every
	// block's newest copy may be in any of 17 layers.
	c, err = pool.Create("layers", total)
	must(err)
	for s := 0; s < 16; s++ {
		for i := int64(0); i < blocks/16; i++ {
			_, err := c.WriteAt(buf[:bs], r.Int64N(blocks)*bs)
			must(err)
		}
		_, err := c.Snapshot(fmt.Sprintf("s%d", s))
		must(err)
	}
	rows = append(rows, row{"random 4 KiB, 16 snapshots", blocks * bs, c.IndexBytes()})

	fmt.Printf("%-30s %12s %14s %16s\n", "pattern", "written", "index bytes", "KiB per GiB")
	for _, r := range rows {
		perGiB := float64(r.index) / (float64(r.written) / (1 << 30)) / 1024
		fmt.Printf("%-30s %10dMiB %14d %16.1f\n", r.pattern, r.written>>20, r.index, perGiB)
	}
	fmt.Println("targets: <= 32 KiB/GiB sequential; <= 256 KiB/GiB (Longhorn's fixed cost) in every pattern")
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

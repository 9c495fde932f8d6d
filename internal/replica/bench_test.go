package replica

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/strata-storage/strata/internal/engine"
)

const benchVolume = 1 << 30

// benchReplicas returns the Local and the Remote of one fresh volume.
func benchReplicas(b *testing.B) (*Local, *Remote) {
	b.Helper()
	n := startNode(b)
	c := n.create("vol", benchVolume)
	l, err := OpenLocal(c, n.epochs, 1)
	if err != nil {
		b.Fatal(err)
	}
	return l, n.dial("vol", 1)
}

// benchIO runs b.N calls of size bytes spread over qd goroutines, each
// going sequentially through its own part of the volume.
func benchIO(b *testing.B, r engine.Replica, size, qd int, read bool) {
	b.SetBytes(int64(size))
	part := int64(benchVolume / qd)
	per := part / int64(size)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for g := 0; g < qd; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := pattern(size, byte(g))
			for i := int64(0); ; i++ {
				if next.Add(1) > int64(b.N) {
					return
				}
				off := int64(g)*part + (i%per)*int64(size)
				var err error
				if read {
					_, err = r.ReadAt(buf, off)
				} else {
					_, err = r.WriteAt(buf, off)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func benchWrite(b *testing.B, size int) {
	l, r := benchReplicas(b)
	for _, qd := range []int{1, 16} {
		b.Run(fmt.Sprintf("local/qd%d", qd), func(b *testing.B) { benchIO(b, l, size, qd, false) })
		b.Run(fmt.Sprintf("remote/qd%d", qd), func(b *testing.B) { benchIO(b, r, size, qd, false) })
	}
}

// BenchmarkRemoteWrite4K compares 4 KiB writes through a Local and through
// a Remote over loopback TCP, one at a time and 16 in flight.
func BenchmarkRemoteWrite4K(b *testing.B) { benchWrite(b, 4096) }

// BenchmarkRemoteWrite1M is BenchmarkRemoteWrite4K with 1 MiB writes.
func BenchmarkRemoteWrite1M(b *testing.B) { benchWrite(b, 1<<20) }

// BenchmarkRemoteRead4K compares 4 KiB reads of written data.
func BenchmarkRemoteRead4K(b *testing.B) {
	l, r := benchReplicas(b)
	// Write the parts the reads go through, so that they read data.
	buf := pattern(1<<20, 3)
	for off := int64(0); off < benchVolume; off += benchVolume / 16 {
		for k := int64(0); k < 16<<20; k += 1 << 20 {
			if _, err := l.WriteAt(buf, off+k); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, qd := range []int{1, 16} {
		b.Run(fmt.Sprintf("local/qd%d", qd), func(b *testing.B) { benchIO(b, l, 4096, qd, true) })
		b.Run(fmt.Sprintf("remote/qd%d", qd), func(b *testing.B) { benchIO(b, r, 4096, qd, true) })
	}
}

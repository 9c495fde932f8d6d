package nbd

import (
	"fmt"
	"io"
	"testing"

	"github.com/strata-storage/strata/internal/nbd/nbdtest"
)

// BenchmarkPipelined keeps 32 requests in flight on one loopback
// connection to an in-memory export.
func BenchmarkPipelined(b *testing.B) {
	const span = 64 << 20
	be := nbdtest.NewMem(span)
	for _, bc := range []struct {
		typ  uint16
		size int
	}{{cmdRead, 4096}, {cmdWrite, 4096}, {cmdRead, 1 << 20}, {cmdWrite, 1 << 20}} {
		name := map[uint16]string{cmdRead: "read", cmdWrite: "write"}[bc.typ]
		b.Run(fmt.Sprintf("%s-%dk", name, bc.size>>10), func(b *testing.B) {
			addr := startServer(b, newTestExports(map[string]Backend{"vol": be}))
			c := dialRaw(b, addr)
			c.open("vol")
			var payload []byte
			if bc.typ == cmdWrite {
				payload = make([]byte, bc.size)
			}
			buf := make([]byte, bc.size)
			b.SetBytes(int64(bc.size))
			b.ResetTimer()
			window := make(chan struct{}, 32)
			go func() {
				for i := range b.N {
					window <- struct{}{}
					off := uint64(i*bc.size) % span
					c.request(0, bc.typ, uint64(i), off, uint32(bc.size), payload)
				}
			}()
			for range b.N {
				if _, errno := c.reply(); errno != 0 {
					b.Fatalf("error %d", errno)
				}
				if bc.typ == cmdRead {
					if _, err := io.ReadFull(c.r, buf); err != nil {
						b.Fatal(err)
					}
				}
				<-window
			}
		})
	}
}

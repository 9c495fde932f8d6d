package chain

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentSubBlockWrites writes the eight 512-byte sectors of the same
// blocks from eight goroutines at once, over a lower layer, while readers
// run: every sector must survive (read-modify-write of one block must not
// lose a neighbour's sector), and readers must only see old or new bytes.
func TestConcurrentSubBlockWrites(t *testing.T) {
	p, _ := openPool(t)
	c := mustCreate(t, p, "v", 1<<20)
	const blocks = 64
	mustWrite(t, c, bytes.Repeat([]byte{0xee}, blocks*BlockSize), 0)
	if _, err := c.Snapshot("base"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, BlockSize)
			for {
				select {
				case <-stop:
					return
				default:
				}
				for b := int64(0); b < blocks; b++ {
					if _, err := c.ReadAt(buf, b*BlockSize); err != nil {
						t.Error(err)
						return
					}
					// A read racing a write of the same bytes may see a
					// mix of old and new (as on any disk), but never
					// anything else.
					for i, x := range buf {
						if s := i / 512; x != 0xee && x != byte(s+1) {
							t.Errorf("block %d sector %d reads %#x", b, s, x)
							return
						}
					}
				}
			}
		}()
	}
	var writers sync.WaitGroup
	for s := 0; s < 8; s++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			sec := bytes.Repeat([]byte{byte(s + 1)}, 512)
			for b := int64(0); b < blocks; b++ {
				if _, err := c.WriteAt(sec, b*BlockSize+int64(s)*512); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	writers.Wait()
	close(stop)
	wg.Wait()
	for b := int64(0); b < blocks; b++ {
		got := readAll(t, c, b*BlockSize, BlockSize)
		for s := 0; s < 8; s++ {
			if want := bytes.Repeat([]byte{byte(s + 1)}, 512); !bytes.Equal(got[s*512:(s+1)*512], want) {
				t.Fatalf("block %d sector %d lost: %x", b, s, got[s*512:s*512+8])
			}
		}
	}
}

// TestConcurrentWritesAndSnapshots runs aligned writers against snapshots
// and checks each writer's last block reads back.
func TestConcurrentWritesAndSnapshots(t *testing.T) {
	p, _ := openPool(t)
	c := mustCreate(t, p, "v", 4<<20)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				blk := bytes.Repeat([]byte{byte(i)}, BlockSize)
				if _, err := c.WriteAt(blk, int64(w*256+i%256)*BlockSize); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for s := 0; s < 10; s++ {
		if _, err := c.Snapshot(fmt.Sprintf("s%d", s)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for w := 0; w < 4; w++ {
		for i := 0; i < 200; i++ {
			got := readAll(t, c, int64(w*256+i)*BlockSize, BlockSize)
			if got[0] != byte(i) || got[BlockSize-1] != byte(i) {
				t.Fatalf("writer %d block %d reads %d", w, i, got[0])
			}
		}
	}
}

package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

const (
	nbdRequestMagic = 0x25609513
	nbdReplyMagic   = 0x67446698
	nbdCmdRead      = 0
	nbdCmdWrite     = 1
	nbdFlagFUA      = 1
	crashBlock      = 4096
)

// nbdCall sends one request and waits for its reply; it returns the NBD error.
func nbdCall(c net.Conn, cmd uint16, flags uint16, handle uint64, off int64, payload []byte, readLen int) ([]byte, uint32, error) {
	req := make([]byte, 28, 28+len(payload))
	binary.BigEndian.PutUint32(req[0:], nbdRequestMagic)
	binary.BigEndian.PutUint16(req[4:], flags)
	binary.BigEndian.PutUint16(req[6:], cmd)
	binary.BigEndian.PutUint64(req[8:], handle)
	binary.BigEndian.PutUint64(req[16:], uint64(off))
	n := len(payload)
	if cmd == nbdCmdRead {
		n = readLen
	}
	binary.BigEndian.PutUint32(req[24:], uint32(n))
	if _, err := c.Write(append(req, payload...)); err != nil {
		return nil, 0, err
	}
	rep := make([]byte, 16)
	if _, err := io.ReadFull(c, rep); err != nil {
		return nil, 0, err
	}
	if binary.BigEndian.Uint32(rep) != nbdReplyMagic || binary.BigEndian.Uint64(rep[8:]) != handle {
		return nil, 0, fmt.Errorf("bad reply %x", rep)
	}
	errno := binary.BigEndian.Uint32(rep[4:])
	if cmd != nbdCmdRead || errno != 0 {
		return nil, errno, nil
	}
	data := make([]byte, readLen)
	_, err := io.ReadFull(c, data)
	return data, 0, err
}

// block content: writer id, sequence number, repeated.
func crashPayload(writer, seq uint32) []byte {
	b := make([]byte, crashBlock)
	for i := 0; i < crashBlock; i += 8 {
		binary.BigEndian.PutUint32(b[i:], writer)
		binary.BigEndian.PutUint32(b[i+4:], seq)
	}
	return b
}

// TestKillNineDuringWrites kills the node with SIGKILL while four NBD clients
// issue FUA writes and snapshots are being taken, restarts it, and checks
// that every acknowledged write is there: each block holds its last
// acknowledged write or a later one from the same writer, never older data.
func TestKillNineDuringWrites(t *testing.T) {
	n := newNode(t)
	const blocksPerWriter, writers = 1024, 4
	n.run("volume", "create", "crash", "--size", fmt.Sprint(blocksPerWriter*writers*crashBlock))

	for round := 0; round < 3; round++ {
		acked := make([][]uint32, writers) // per writer, per block: last acked seq (0: none)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := 0; w < writers; w++ {
			acked[w] = make([]uint32, blocksPerWriter)
			c := nbdConnect(t, n.nbd, "crash")
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				for seq := uint32(1 + round*1_000_000); ; seq++ {
					select {
					case <-stop:
						return
					default:
					}
					b := r.IntN(blocksPerWriter)
					off := int64(w*blocksPerWriter+b) * crashBlock
					_, errno, err := nbdCall(c, nbdCmdWrite, nbdFlagFUA, uint64(seq), off, crashPayload(uint32(w+1), seq), 0)
					if err != nil {
						return // the node died: this write was not acknowledged
					}
					if errno != 0 {
						t.Errorf("writer %d: write error %d", w, errno)
						return
					}
					acked[w][b] = seq
				}
			}()
		}
		snapDone := make(chan struct{})
		go func() {
			defer close(snapDone)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				n.try("snapshot", "create", "crash", "--name", fmt.Sprintf("r%d-s%d", round, i))
			}
		}()
		time.Sleep(time.Duration(500+rand.IntN(1000)) * time.Millisecond)
		n.kill9()
		close(stop)
		wg.Wait()
		<-snapDone
		n.start()

		total := 0
		for w := range acked {
			for _, seq := range acked[w] {
				if seq != 0 {
					total++
				}
			}
		}
		if total < 100 {
			t.Fatalf("round %d: only %d blocks had acknowledged writes before the kill", round, total)
		}
		t.Logf("round %d: checking %d blocks with acknowledged writes", round, total)

		c := nbdConnect(t, n.nbd, "crash")
		for w := 0; w < writers; w++ {
			for b := 0; b < blocksPerWriter; b++ {
				off := int64(w*blocksPerWriter+b) * crashBlock
				data, errno, err := nbdCall(c, nbdCmdRead, 0, 1, off, nil, crashBlock)
				if err != nil || errno != 0 {
					t.Fatalf("read block %d: %v errno %d", off/crashBlock, err, errno)
				}
				gotW, gotSeq := binary.BigEndian.Uint32(data), binary.BigEndian.Uint32(data[4:])
				want := acked[w][b]
				if want == 0 {
					continue // never acknowledged this round; earlier rounds checked already
				}
				if gotW != uint32(w+1) || gotSeq < want || string(data) != string(crashPayload(gotW, gotSeq)) {
					t.Fatalf("round %d: block %d of writer %d holds writer %d seq %d; last acknowledged seq %d",
						round, b, w, gotW, gotSeq, want)
				}
			}
		}
		c.Close()
		n.run("snapshot", "list", "crash")
	}
}

package chain

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The crash test runs a child process (this test binary, re-executed) that
// writes and trims random blocks of a chain in batches. Before a batch it
// logs the batch's operations (intent) to a separate fsynced log; after the
// batch it flushes the chain and logs a commit. The parent kills the child
// with SIGKILL at a random moment, reopens the pool and checks that every
// block holds its last committed value, or a value of the one batch in
// flight. Modes make the child snapshot after every batch, or keep merges
// (snapshot deletes, clones) running, so kills land inside them too.

const (
	crashBlocks = 2048
	crashEnvDir = "STRATA_CHAIN_CRASH_DIR"
)

type crashOp struct {
	block uint32
	val   uint64 // 0: trim
}

func crashBlock(b uint32, val uint64) []byte {
	blk := make([]byte, BlockSize)
	if val == 0 {
		return blk
	}
	for i := 16; i < BlockSize; i++ {
		blk[i] = byte(val) + byte(i)
	}
	binary.LittleEndian.PutUint64(blk, uint64(b))
	binary.LittleEndian.PutUint64(blk[8:], val)
	return blk
}

// Log records: u32 length, u32 CRC-32C of the payload, payload: kind byte
// ('I' intent, 'C' commit), u64 batch, u32 count, count x (u32 block, u64 val).
func appendRecord(f *os.File, kind byte, batch uint64, ops []crashOp) error {
	p := []byte{kind}
	p = binary.LittleEndian.AppendUint64(p, batch)
	p = binary.LittleEndian.AppendUint32(p, uint32(len(ops)))
	for _, op := range ops {
		p = binary.LittleEndian.AppendUint32(p, op.block)
		p = binary.LittleEndian.AppendUint64(p, op.val)
	}
	h := binary.LittleEndian.AppendUint32(nil, uint32(len(p)))
	h = binary.LittleEndian.AppendUint32(h, crc32.Checksum(p, crcTable))
	if _, err := f.Write(append(h, p...)); err != nil {
		return err
	}
	return f.Sync()
}

type crashBatch struct {
	k   uint64
	ops []crashOp
}

// readCrashLog returns the committed batches in order and the operations of
// the batch in flight (intent without commit).
func readCrashLog(path string) (committed []crashBatch, pending []crashOp, err error) {
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, nil, err
	}
	intents := map[uint64][]crashOp{}
	var last uint64
	for len(data) >= 8 {
		n := binary.LittleEndian.Uint32(data)
		if int(n)+8 > len(data) || crc32.Checksum(data[8:8+n], crcTable) != binary.LittleEndian.Uint32(data[4:]) {
			break
		}
		p := data[8 : 8+n]
		data = data[8+n:]
		kind, batch, cnt := p[0], binary.LittleEndian.Uint64(p[1:]), binary.LittleEndian.Uint32(p[9:])
		var ops []crashOp
		for i := uint32(0); i < cnt; i++ {
			o := p[13+12*i:]
			ops = append(ops, crashOp{binary.LittleEndian.Uint32(o), binary.LittleEndian.Uint64(o[4:])})
		}
		switch kind {
		case 'I':
			intents[batch] = ops
			last = batch
		case 'C':
			committed = append(committed, crashBatch{batch, intents[batch]})
			delete(intents, batch)
		}
	}
	return committed, intents[last], nil
}

// TestCrashChild is the child side; it only runs when the parent asks.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("child of TestCrash only")
	}
	mode := os.Getenv("STRATA_CHAIN_CRASH_MODE")
	seed, _ := strconv.ParseUint(os.Getenv("STRATA_CHAIN_CRASH_SEED"), 10, 64)
	r := rand.New(rand.NewPCG(seed, 7))
	logf, err := os.OpenFile(filepath.Join(dir, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p, err := OpenPool(filepath.Join(dir, "pool"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Create("v", crashBlocks*BlockSize)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	var clones []string
	for k := uint64(1); ; k++ {
		n := 1 + r.IntN(32)
		if mode == "merge" && k%4 == 0 {
			n = 256 // large batches: merges have work to do
		}
		ops := make([]crashOp, n)
		start := uint32(r.IntN(crashBlocks))
		for i := range ops {
			b := uint32(r.IntN(crashBlocks))
			if n == 256 {
				b = (start + uint32(i)) % crashBlocks
			}
			val := seed<<40 | k<<12 | uint64(i) | 1
			if r.IntN(10) == 0 {
				val = 0
			}
			ops[i] = crashOp{b, val}
		}
		if err := appendRecord(logf, 'I', k, ops); err != nil {
			t.Fatal(err)
		}
		for _, op := range ops {
			if op.val == 0 {
				err = c.Trim(int64(op.block)*BlockSize, BlockSize)
			} else {
				_, err = c.WriteAt(crashBlock(op.block, op.val), int64(op.block)*BlockSize)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := appendRecord(logf, 'C', k, nil); err != nil {
			t.Fatal(err)
		}
		if mode == "snapshot" || mode == "merge" && k%2 == 0 {
			if _, err := c.Snapshot(fmt.Sprintf("s%d-%d", seed, k)); err != nil {
				t.Fatal(err)
			}
		}
		if mode == "merge" {
			snaps := c.Snapshots()
			if len(snaps) > 3 {
				victim := snaps[r.IntN(len(snaps)-1)].Name
				if _, err := c.DeleteSnapshot(victim); err != nil {
					t.Fatal(err)
				}
			}
			if len(snaps) > 0 && r.IntN(8) == 0 {
				name := fmt.Sprintf("c%d-%d", seed, k)
				if _, err := p.Clone("v", snaps[len(snaps)-1].Name, name, 0); err != nil {
					t.Fatal(err)
				}
				clones = append(clones, name)
			}
			if len(clones) > 2 {
				if err := p.Delete(clones[0]); err != nil {
					t.Fatal(err)
				}
				clones = clones[1:]
			}
		}
	}
}

func TestCrash(t *testing.T) {
	iters := 12
	if testing.Short() {
		iters = 4
	}
	dir := t.TempDir()
	expected := make([]uint64, crashBlocks)
	snapState := map[string][]uint64{}
	base := uint64(time.Now().UnixNano()) & 0xffff
	modes := []string{"write", "snapshot", "merge"}
	for it := 0; it < iters; it++ {
		seed := base + uint64(it)
		mode := modes[it%len(modes)]
		os.Remove(filepath.Join(dir, "log"))
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
		cmd.Env = append(os.Environ(), crashEnvDir+"="+dir, "STRATA_CHAIN_CRASH_MODE="+mode,
			"STRATA_CHAIN_CRASH_SEED="+strconv.FormatUint(seed, 10))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make([]byte, 6)
		if _, err := io.ReadFull(out, ready); err != nil {
			cmd.Wait()
			t.Fatalf("child did not start: %v: %s", err, stderr.String())
		}
		time.Sleep(time.Duration(20+rand.IntN(400)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		go io.Copy(io.Discard, out)
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("iteration %d (%s): child exited before the kill: %v\n%s", it, mode, err, stderr.String())
		}

		committed, pending, err := readCrashLog(filepath.Join(dir, "log"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := OpenPool(filepath.Join(dir, "pool"))
		if err != nil {
			t.Fatalf("iteration %d (%s, seed %d): open after kill: %v", it, mode, seed, err)
		}
		c, err := p.Open("v")
		if err != nil {
			t.Fatalf("iteration %d: open chain: %v", it, err)
		}
		// Replay the committed batches; a snapshot named after batch k was
		// taken right after its commit, so it holds the state after k.
		exists := map[string]bool{}
		for _, s := range c.Snapshots() {
			exists[s.Name] = true
		}
		nops := 0
		for _, bt := range committed {
			for _, op := range bt.ops {
				expected[op.block] = op.val
			}
			nops += len(bt.ops)
			if name := fmt.Sprintf("s%d-%d", seed, bt.k); exists[name] {
				snapState[name] = append([]uint64(nil), expected...)
			}
		}
		check := func(when string, allowPending bool) {
			data := readAll(t, c, 0, crashBlocks*BlockSize)
			for b := uint32(0); b < crashBlocks; b++ {
				got := data[b*BlockSize : (b+1)*BlockSize]
				if bytes.Equal(got, crashBlock(b, expected[b])) {
					continue
				}
				ok := false
				if allowPending {
					for _, op := range pending {
						if op.block == b && bytes.Equal(got, crashBlock(b, op.val)) {
							expected[b] = op.val
							ok = true
							break
						}
					}
				}
				if !ok {
					t.Fatalf("iteration %d (%s, seed %d) %s: block %d lost its flushed value %x (reads %x)",
						it, mode, seed, when, b, expected[b], binary.LittleEndian.Uint64(got[8:]))
				}
			}
		}
		check("after kill", true)
		waitMerges(t, p)
		check("after merges", false)
		// Every snapshot still holds what it held when taken, whatever
		// merges the kills interrupted.
		snaps := c.Snapshots()
		rand.Shuffle(len(snaps), func(i, j int) { snaps[i], snaps[j] = snaps[j], snaps[i] })
		for _, s := range snaps[:min(len(snaps), 16)] {
			want, ok := snapState[s.Name]
			if !ok {
				t.Fatalf("iteration %d: snapshot %s of no committed batch", it, s.Name)
			}
			d, err := p.Clone("v", s.Name, "verify", 0)
			if err != nil {
				t.Fatal(err)
			}
			data := readAll(t, d, 0, crashBlocks*BlockSize)
			for b := uint32(0); b < crashBlocks; b++ {
				if !bytes.Equal(data[b*BlockSize:(b+1)*BlockSize], crashBlock(b, want[b])) {
					t.Fatalf("iteration %d (%s, seed %d): snapshot %s block %d changed", it, mode, seed, s.Name, b)
				}
			}
			if err := p.Delete("verify"); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("iteration %d (%s): %d flushed ops, %d in flight, %d layers, %d snapshots", it, mode, nops, len(pending), c.Info().Layers, len(c.Snapshots()))
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

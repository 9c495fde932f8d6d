package replica

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/engine"
	"github.com/strata-storage/strata/internal/errdefs"
)

var (
	_ engine.Replica = (*Remote)(nil)
	_ engine.Replica = (*Local)(nil)
)

// TestRemoteConcurrentWrites writes distinct data from many goroutines at
// once through one Remote, then reads it back byte-exact through the
// server and straight from the chain.
func TestRemoteConcurrentWrites(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	c := n.create("vol", 64*mib)
	r := n.dial("vol", 1)

	const goroutines, perG = 32, 24
	sizes := []int{512, 4096, 12288, 65536, 1 << 20}
	type write struct {
		off  int64
		data []byte
	}
	writes := make([][]write, goroutines)
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each goroutine owns 2 MiB; its writes within that overlap
			// only themselves, in order.
			base := int64(g) * 2 * mib
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < perG; i++ {
				sz := sizes[rng.IntN(len(sizes))]
				off := base + rng.Int64N(2*mib-int64(sz)+1)
				data := pattern(sz, byte(g*perG+i))
				if k, err := r.WriteAt(data, off); err != nil || k != sz {
					t.Errorf("goroutine %d write %d: n=%d err=%v", g, i, k, err)
					return
				}
				writes[g] = append(writes[g], write{off, data})
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 64*mib)
	for g := range writes {
		for _, w := range writes[g] {
			copy(want[w.off:], w.data)
		}
	}
	equalBytes(t, "chain", mustRead(t, c, 0, 64*mib), want)

	// Read back through the server, concurrently and in pieces.
	got := make([]byte, 64*mib)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(g) * 2 * mib
			if _, err := r.ReadAt(got[off:off+2*mib], off); err != nil {
				t.Errorf("read %d: %v", g, err)
			}
		}()
	}
	wg.Wait()
	equalBytes(t, "remote read", got, want)
}

// TestRemoteOps checks each operation against the chain and a model.
func TestRemoteOps(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	c := n.create("vol", 8*mib)
	r := n.dial("vol", 1)
	model := make([]byte, 8*mib)

	if r.Size() != 8*mib || r.Volume() != "vol" || r.Epoch() != 1 || r.Addr() != n.addr {
		t.Fatalf("Size %d Volume %q Epoch %d Addr %q", r.Size(), r.Volume(), r.Epoch(), r.Addr())
	}
	// Unaligned writes, inside one block and across several.
	for i, w := range []struct{ off, n int64 }{
		{1, 1}, {100, 3000}, {4000, 200}, {8191, 2}, {12345, 70000}, {8*mib - 5, 5}, {3 * mib, 1},
	} {
		data := pattern(int(w.n), byte(i+10))
		mustWrite(t, r, data, w.off)
		copy(model[w.off:], data)
	}
	equalBytes(t, "unaligned remote read", mustRead(t, r, 0, 8*mib), model)
	equalBytes(t, "unaligned chain read", mustRead(t, c, 0, 8*mib), model)
	equalBytes(t, "unaligned small read", mustRead(t, r, 4001, 7), model[4001:4008])

	// Trim and write-zeroes, aligned and not.
	if err := r.Trim(50, 10000); err != nil {
		t.Fatal(err)
	}
	clear(model[50:10050])
	if err := r.WriteZeroes(12345, 4096*3+7); err != nil {
		t.Fatal(err)
	}
	clear(model[12345 : 12345+4096*3+7])
	equalBytes(t, "after trim and zeroes", mustRead(t, r, 0, 8*mib), model)
	equalBytes(t, "chain after trim and zeroes", mustRead(t, c, 0, 8*mib), model)

	// Out of range: the server's error comes back as invalid argument
	// and the connection goes on.
	if _, err := r.WriteAt([]byte{1}, 8*mib); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("write past the end: %v, want invalid argument", err)
	}
	if _, err := r.ReadAt(make([]byte, 2), 8*mib-1); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("read past the end: %v, want invalid argument", err)
	}
	if err := r.Trim(8*mib, 1); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("trim past the end: %v, want invalid argument", err)
	}
	if _, err := r.WriteAt([]byte{1}, -1); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("write at -1: %v, want invalid argument", err)
	}
	if k, err := r.ReadAt(nil, 0); k != 0 || err != nil {
		t.Errorf("empty read: %d, %v", k, err)
	}

	// Snapshot, then the chain lists it; a duplicate is already-exists.
	if err := r.Snapshot("s1"); err != nil {
		t.Fatal(err)
	}
	if s := c.Snapshots(); len(s) != 1 || s[0].Name != "s1" {
		t.Fatalf("chain snapshots after remote snapshot: %+v", s)
	}
	if err := r.Snapshot("s1"); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("duplicate snapshot: %v, want already exists", err)
	}
	if err := r.Snapshot("Bad Name"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad snapshot name: %v, want invalid argument", err)
	}
	data := pattern(4096, 99)
	mustWrite(t, r, data, 0)
	copy(model, data)
	equalBytes(t, "after snapshot", mustRead(t, c, 0, 8*mib), model)

	// Grow; shrinking is a failed precondition.
	if err := r.Grow(16 * mib); err != nil {
		t.Fatal(err)
	}
	if r.Size() != 16*mib || c.Size() != 16*mib {
		t.Fatalf("after grow: remote %d, chain %d", r.Size(), c.Size())
	}
	mustWrite(t, r, data, 16*mib-4096)
	if err := r.Grow(8 * mib); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("shrink: %v, want failed precondition", err)
	}
	// A write larger than one request is split.
	big := pattern(MaxPayload+12345, 5)
	if err := r.Grow(64 * mib); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, r, big, 3)
	equalBytes(t, "split write", mustRead(t, r, 3, int64(len(big))), big)
	equalBytes(t, "split write, chain", mustRead(t, c, 3, int64(len(big))), big)
	if r.Err() != nil {
		t.Fatalf("Remote broken after server errors: %v", r.Err())
	}
}

func TestDialErrors(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	n.create("vol", mib)
	ctx := context.Background()
	if _, err := Dial(ctx, n.addr, "missing", 1); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Dial a missing volume: %v, want not found", err)
	}
	if _, err := Dial(ctx, n.addr, "Bad", 1); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Dial a bad name: %v, want invalid argument", err)
	}
	// A port nobody listens on.
	ln := n.ln.Addr().String()
	n.stop()
	if _, err := Dial(ctx, ln, "vol", 1); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("Dial a closed port: %v, want unavailable", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Dial(cctx, ln, "vol", 1); err == nil {
		t.Error("Dial with a cancelled context succeeded")
	}
}

// TestRemoteFencing: a handle at epoch 1 writes; an Open at epoch 2
// (remote, then local) fences it: its writes fail with ErrStaleEpoch and
// their data is not in the chain. The epoch survives a restart of the
// server and its Epochs, and older epochs are refused.
func TestRemoteFencing(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	c := n.create("vol", 4*mib)
	r1 := n.dial("vol", 1)
	a, b := pattern(8192, 1), pattern(8192, 2)
	mustWrite(t, r1, a, 0)

	r2 := n.dial("vol", 2)
	if _, err := r1.WriteAt(b, 0); !errors.Is(err, ErrStaleEpoch) || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("epoch-1 write after epoch 2: %v, want ErrStaleEpoch", err)
	}
	for name, fn := range map[string]func() error{
		"read":     func() error { _, err := r1.ReadAt(make([]byte, 4), 0); return err },
		"flush":    r1.Flush,
		"trim":     func() error { return r1.Trim(0, 4096) },
		"zeroes":   func() error { return r1.WriteZeroes(0, 4096) },
		"grow":     func() error { return r1.Grow(8 * mib) },
		"snapshot": func() error { return r1.Snapshot("s") },
		"revert":   func() error { return r1.Revert("s") },
	} {
		if err := fn(); !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("epoch-1 %s after epoch 2: %v, want ErrStaleEpoch", name, err)
		}
	}
	equalBytes(t, "chain after stale write", mustRead(t, c, 0, 8192), a)
	if c.Size() != 4*mib || len(c.Snapshots()) != 0 {
		t.Fatalf("stale grow or snapshot landed: size %d, snapshots %v", c.Size(), c.Snapshots())
	}
	if r1.Err() != nil {
		t.Fatalf("a stale epoch broke the connection: %v", r1.Err())
	}
	mustWrite(t, r2, b, 0)
	equalBytes(t, "epoch-2 write", mustRead(t, c, 0, 8192), b)

	// A Local at epoch 3 on the server's node fences the remote epoch 2.
	l3, err := OpenLocal(c, n.epochs, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.WriteAt(a, 0); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("epoch-2 write after local epoch 3: %v, want ErrStaleEpoch", err)
	}
	equalBytes(t, "chain after stale write", mustRead(t, c, 0, 8192), b)
	mustWrite(t, l3, a, 0)

	// Restart the server with a new Epochs over the same directory.
	n.stop()
	n.start()
	for _, e := range []uint64{0, 1, 2} {
		_, err := Dial(context.Background(), n.addr, "vol", e)
		if !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("Dial at epoch %d after restart: %v, want ErrStaleEpoch", e, err)
		}
	}
	r3 := n.dial("vol", 3)
	mustWrite(t, r3, b, 0)
	equalBytes(t, "epoch-3 write after restart", mustRead(t, c, 0, 8192), b)
	r4 := n.dial("vol", 4)
	if _, err := r3.WriteAt(a, 0); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("epoch-3 write after epoch 4: %v", err)
	}
	mustWrite(t, r4, a, 0)
}

// TestRemoteFencingInFlight races many pipelined epoch-1 writes against a
// Dial at epoch 2: every acknowledged write is in the chain, and after the
// Dial returns nothing the epoch-1 handle sends changes the chain.
func TestRemoteFencingInFlight(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	c := n.create("vol", 16*mib)
	r1 := n.dial("vol", 1)
	const writers = 16
	var wg sync.WaitGroup
	stop := make(chan struct{})
	last := make([]map[int]int, writers)
	for w := 0; w < writers; w++ {
		last[w] = map[int]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				blk := i % 64
				off := int64(w*64+blk) * chain.BlockSize
				_, err := r1.WriteAt(pattern(chain.BlockSize, byte(w*7+i)), off)
				switch {
				case err == nil:
					last[w][blk] = i
				case errors.Is(err, ErrStaleEpoch):
				default:
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	time.Sleep(30 * time.Millisecond)
	r2 := n.dial("vol", 2)
	fenced := mustRead(t, c, 0, 16*mib)
	time.Sleep(30 * time.Millisecond)
	close(stop)
	wg.Wait()
	equalBytes(t, "chain after the fence", mustRead(t, c, 0, 16*mib), fenced)
	for w := range last {
		for blk, i := range last[w] {
			off := int64(w*64+blk) * chain.BlockSize
			equalBytes(t, "acknowledged write", fenced[off:off+chain.BlockSize], pattern(chain.BlockSize, byte(w*7+i)))
		}
	}
	mustWrite(t, r2, pattern(4096, 1), 0)
}

// TestServerKilled cuts the server (listener and connections closed)
// while calls are in flight: they fail with ErrUnavailable within the
// timeout, later calls fail at once, and no goroutine is left.
func TestServerKilled(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	n.create("vol", 16*mib)
	const timeout = 2 * time.Second
	r := n.dial("vol", 1, WithTimeout(timeout))

	// Hold every I/O of the volume inside the server: the requests are
	// then surely in flight when the server dies.
	v := n.epochs.vol("vol")
	v.mu.Lock()
	held := true
	defer func() {
		if held {
			v.mu.Unlock()
		}
	}()
	const calls = 20
	errs := make(chan error, calls)
	start := time.Now()
	for i := 0; i < calls; i++ {
		go func() {
			_, err := r.WriteAt(pattern(4096, byte(i)), int64(i)*4096)
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	n.ln.Close()
	n.ln.closeConns()
	for i := 0; i < calls; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, errdefs.ErrUnavailable) {
				t.Errorf("in-flight call: %v, want unavailable", err)
			}
		case <-time.After(timeout + time.Second):
			t.Fatalf("in-flight calls still waiting %v after the server died", time.Since(start))
		}
	}
	if time.Since(start) > timeout+time.Second {
		t.Errorf("in-flight calls took %v to fail", time.Since(start))
	}
	if r.Err() == nil || !errors.Is(r.Err(), errdefs.ErrUnavailable) {
		t.Fatalf("Err after the server died: %v", r.Err())
	}
	t0 := time.Now()
	if err := r.Flush(); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("call after break: %v", err)
	}
	if time.Since(t0) > 100*time.Millisecond {
		t.Errorf("call after break took %v, want fail-fast", time.Since(t0))
	}
	v.mu.Unlock()
	held = false
	n.kill()
}

// TestServerKilledUnderLoad kills the server while goroutines stream
// writes and reads: every call returns, successful or unavailable.
func TestServerKilledUnderLoad(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	n.create("vol", 16*mib)
	r := n.dial("vol", 1, WithTimeout(2*time.Second))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, failed int
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for i := 0; ; i++ {
				var err error
				if i%3 == 0 {
					_, err = r.ReadAt(buf, int64(g)*mib)
				} else {
					_, err = r.WriteAt(buf, int64(g)*mib)
				}
				mu.Lock()
				if err == nil {
					ok++
				} else {
					failed++
				}
				mu.Unlock()
				if err != nil {
					if !errors.Is(err, errdefs.ErrUnavailable) {
						t.Errorf("goroutine %d: %v", g, err)
					}
					return
				}
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	n.kill()
	within(t, 5*time.Second, "calls after the server died", wg.Wait)
	if ok == 0 || failed != 16 {
		t.Errorf("%d calls succeeded, %d failed; want some and 16", ok, failed)
	}
}

// TestServeShutdown cancels Serve's context with connections open: Serve
// returns, the remotes break, and every goroutine exits.
func TestServeShutdown(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	n.create("vol", mib)
	r := n.dial("vol", 1)
	ctl := n.control()
	mustWrite(t, r, pattern(4096, 1), 0)
	if _, err := ctl.List(context.Background()); err != nil {
		t.Fatal(err)
	}
	within(t, 5*time.Second, "Serve after cancel", n.stop)
	if _, err := r.WriteAt(pattern(4096, 2), 0); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("write after shutdown: %v, want unavailable", err)
	}
	if _, err := ctl.List(context.Background()); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("list after shutdown: %v, want unavailable", err)
	}
}

// TestRequestTimeout talks to a server that answers hello and then never
// replies: the call fails with ErrUnavailable after the timeout, so do
// the others in flight, and the Remote stays broken.
func TestRequestTimeout(t *testing.T) {
	checkNoLeaks(t)
	ln := rawServer(t, func(nc net.Conn) {
		hdr, _, err := readRawRequest(nc)
		if err != nil {
			return
		}
		writeRawReply(nc, hdr.handle, 0, make([]byte, 8))
		// Read and ignore everything after.
		buf := make([]byte, 64<<10)
		for {
			if _, err := nc.Read(buf); err != nil {
				return
			}
		}
	})
	const timeout = 300 * time.Millisecond
	r, err := Dial(context.Background(), ln, "vol", 1, WithTimeout(timeout))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				_, errs[i] = r.WriteAt(make([]byte, 4096), 0)
			} else {
				errs[i] = r.Flush()
			}
		}()
	}
	within(t, 3*timeout+time.Second, "calls to a silent server", wg.Wait)
	if d := time.Since(start); d < timeout {
		t.Errorf("calls failed after %v, before the timeout %v", d, timeout)
	}
	for i, err := range errs {
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Errorf("call %d: %v, want unavailable", i, err)
		}
	}
	t0 := time.Now()
	if _, err := r.ReadAt(make([]byte, 10), 0); !errors.Is(err, errdefs.ErrUnavailable) || time.Since(t0) > timeout/2 {
		t.Errorf("call on a broken Remote: %v after %v", err, time.Since(t0))
	}
	if r.Size() != 0 {
		t.Errorf("Size on a broken Remote = %d, want the last known 0", r.Size())
	}
}

// TestDialTimeout: a server that accepts and never answers hello.
func TestDialTimeout(t *testing.T) {
	checkNoLeaks(t)
	ln := rawServer(t, func(nc net.Conn) {
		buf := make([]byte, 1024)
		for {
			if _, err := nc.Read(buf); err != nil {
				return
			}
		}
	})
	start := time.Now()
	_, err := Dial(context.Background(), ln, "vol", 1, WithTimeout(200*time.Millisecond))
	if !errors.Is(err, errdefs.ErrUnavailable) || time.Since(start) > 2*time.Second {
		t.Errorf("Dial to a silent server: %v after %v", err, time.Since(start))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, ln, "vol", 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial with a context deadline: %v, want deadline exceeded", err)
	}
}

func TestControl(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	ctl := n.control()
	ctx := context.Background()

	if err := ctl.Create(ctx, "a", 4*mib); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Create(ctx, "a", 4*mib); err != nil {
		t.Fatalf("create again with the same size: %v", err)
	}
	if err := ctl.Create(ctx, "a", 8*mib); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("create again with another size: %v, want already exists", err)
	}
	if err := ctl.Create(ctx, "b", 1000); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("create with an unaligned size: %v, want invalid argument", err)
	}
	if err := ctl.Create(ctx, "Bad", mib); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("create with a bad name: %v, want invalid argument", err)
	}
	if err := ctl.Create(ctx, "b", mib); err != nil {
		t.Fatal(err)
	}
	names, err := ctl.List(ctx)
	if err != nil || len(names) != 2 || names[0] != "a" || names[1] != "b" {
		t.Fatalf("List = %v, %v", names, err)
	}
	c, err := n.pool.Open("a")
	if err != nil || c.Size() != 4*mib {
		t.Fatalf("created chain: %v", err)
	}

	// Extents pass chain.ChangedExtents through.
	r := n.dial("a", 1)
	mustWrite(t, r, pattern(8192, 1), 0)
	if err := r.Snapshot("s1"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, r, pattern(100, 2), 3*mib+5)
	if err := r.Trim(mib, 3*4096); err != nil {
		t.Fatal(err)
	}
	for _, q := range [][2]string{{"", ""}, {"", "s1"}, {"s1", ""}} {
		got, err := ctl.Extents(ctx, "a", q[0], q[1])
		if err != nil {
			t.Fatal(err)
		}
		want, err := c.ChangedExtents(q[0], q[1])
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("Extents(%q, %q) = %v, want %v", q[0], q[1], got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("Extents(%q, %q) = %v, want %v", q[0], q[1], got, want)
			}
		}
	}
	if _, err := ctl.Extents(ctx, "a", "nope", ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("extents from a missing snapshot: %v, want not found", err)
	}
	if _, err := ctl.Extents(ctx, "zz", "", ""); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("extents of a missing volume: %v, want not found", err)
	}

	// Delete: bound connections fail, a second delete is not found.
	if err := ctl.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WriteAt([]byte{1}, 0); err == nil {
		t.Error("write to a deleted volume succeeded")
	}
	if err := ctl.Delete(ctx, "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("delete again: %v, want not found", err)
	}
	if names, _ := ctl.List(ctx); len(names) != 1 || names[0] != "b" {
		t.Errorf("List after delete = %v", names)
	}
	// Data ops need a bound connection.
	if err := ctl.Err(); err != nil {
		t.Fatal(err)
	}
	call := getCall(opFlush, 0, 0)
	ctl.r.send(nil, call, time.Second)
	if !errors.Is(call.err, errdefs.ErrFailedPrecondition) {
		t.Errorf("flush on a control connection: %v, want failed precondition", call.err)
	}
	// A cancelled context returns at once, leaving the connection usable.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := ctl.List(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("list with a cancelled context: %v", err)
	}
	if _, err := ctl.List(ctx); err != nil {
		t.Errorf("list after a cancelled one: %v", err)
	}
}

// TestSnapshotOps reverts a replica over the wire and lists and deletes
// its snapshots through a control connection, against the chain itself.
func TestSnapshotOps(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	c := n.create("vol", 4*mib)
	r := n.dial("vol", 1)
	ctl := n.control()
	ctx := context.Background()

	a, b := pattern(8192, 1), pattern(8192, 2)
	mustWrite(t, r, a, 0)
	for _, s := range []string{"s1", "s2"} {
		if err := r.Snapshot(s); err != nil {
			t.Fatal(err)
		}
	}
	if names, err := ctl.Snapshots(ctx, "vol"); err != nil || strings.Join(names, ",") != "s1,s2" {
		t.Fatalf("Snapshots = %v, %v", names, err)
	}
	// Grown and written after s2: revert drops both, on the chain too.
	if err := r.Grow(8 * mib); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, r, b, 0)
	mustWrite(t, r, b, 6*mib)
	if err := r.Revert("s1"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("revert past a later snapshot: %v, want failed precondition", err)
	}
	if err := r.Revert("nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("revert to a missing snapshot: %v, want not found", err)
	}
	equalBytes(t, "after refused reverts", mustRead(t, c, 0, 8192), b)
	if err := r.Revert("s2"); err != nil {
		t.Fatal(err)
	}
	if r.Size() != 4*mib || c.Size() != 4*mib {
		t.Errorf("size after revert: remote %d, chain %d, want %d", r.Size(), c.Size(), 4*mib)
	}
	equalBytes(t, "after revert", mustRead(t, r, 0, 8192), a)
	equalBytes(t, "after revert, chain", mustRead(t, c, 0, 8192), a)

	// Deleting a snapshot keeps the content; twice is not found.
	if kept, err := ctl.DeleteSnapshot(ctx, "vol", "s1"); err != nil || kept != 0 {
		t.Fatalf("DeleteSnapshot = %d, %v", kept, err)
	}
	if _, err := ctl.DeleteSnapshot(ctx, "vol", "s1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("delete again: %v, want not found", err)
	}
	if _, err := ctl.DeleteSnapshot(ctx, "zz", "s1"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("delete a snapshot of a missing volume: %v, want not found", err)
	}
	if _, err := ctl.Snapshots(ctx, "zz"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("snapshots of a missing volume: %v, want not found", err)
	}
	if names, err := ctl.Snapshots(ctx, "vol"); err != nil || strings.Join(names, ",") != "s2" {
		t.Fatalf("Snapshots after delete = %v, %v", names, err)
	}
	equalBytes(t, "after snapshot delete", mustRead(t, r, 0, 8192), a)
	// Clone makes a thin clone of a snapshot in the server's pool.
	if err := ctl.Clone(ctx, "vol", "s2", "cl", 0); err != nil {
		t.Fatal(err)
	}
	cl, err := n.pool.Open("cl")
	if err != nil || cl.Info().Parent != "vol@s2" || cl.Size() != 4*mib {
		t.Fatalf("clone: %v %+v", err, cl.Info())
	}
	equalBytes(t, "clone", mustRead(t, cl, 0, 8192), a)
	if err := ctl.Clone(ctx, "vol", "nope", "cl2", 0); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("clone of a missing snapshot: %v, want not found", err)
	}
	if err := ctl.Clone(ctx, "vol", "s2", "cl3", mib); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("clone smaller than its snapshot: %v, want invalid argument", err)
	}
	// Revert is a data op: a control connection cannot send it.
	call := getCall(opRevert, 0, 0)
	call.payload, _ = encodeStrs(nil, "s2")
	ctl.r.send(nil, call, time.Second)
	if !errors.Is(call.err, errdefs.ErrFailedPrecondition) {
		t.Errorf("revert on a control connection: %v, want failed precondition", call.err)
	}
}

// TestChecksums compares two pools holding the same content by different
// histories (layers, trims, unaligned writes): the sums are equal, and
// differ exactly in the region where the content differs.
func TestChecksums(t *testing.T) {
	checkNoLeaks(t)
	n1, n2 := startNode(t), startNode(t)
	c1 := n1.create("vol", 8*mib)
	c2 := n2.create("vol", 8*mib)
	ctx := context.Background()
	// Pool 1: data in two layers and a trim.
	mustWrite(t, c1, pattern(3*mib, 1), 0)
	if _, err := c1.Snapshot("s"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, c1, pattern(mib, 2), 5*mib)
	if err := c1.Trim(2*mib, mib); err != nil {
		t.Fatal(err)
	}
	// Pool 2: the same bytes in one layer, zeros written explicitly.
	want := mustRead(t, c1, 0, 8*mib)
	mustWrite(t, c2, want, 0)

	ctl1, ctl2 := n1.control(), n2.control()
	const region = 512 << 10
	s1, err := ctl1.Checksums(ctx, "vol", 0, 8*mib, region)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := ctl2.Checksums(ctx, "vol", 0, 8*mib, region)
	if err != nil {
		t.Fatal(err)
	}
	if len(s1) != 16 || len(s2) != 16 {
		t.Fatalf("got %d and %d sums, want 16", len(s1), len(s2))
	}
	for i := range s1 {
		if s1[i] != s2[i] {
			t.Errorf("region %d differs for identical content", i)
		}
	}
	local, err := Checksums(c1, 0, 8*mib, region)
	if err != nil {
		t.Fatal(err)
	}
	for i := range local {
		if local[i] != s1[i] {
			t.Errorf("local and remote sums of region %d differ", i)
		}
	}
	// One byte changed in region 9.
	mustWrite(t, c2, []byte{want[9*region+77] ^ 1}, 9*region+77)
	s2, err = ctl2.Checksums(ctx, "vol", 0, 8*mib, region)
	if err != nil {
		t.Fatal(err)
	}
	for i := range s1 {
		if (s1[i] != s2[i]) != (i == 9) {
			t.Errorf("region %d: differs=%v after changing region 9", i, s1[i] != s2[i])
		}
	}
	// Unaligned range with a short last region.
	u, err := ctl1.Checksums(ctx, "vol", 1000, 3*region+17, region)
	if err != nil || len(u) != 4 {
		t.Fatalf("unaligned checksums: %d sums, %v", len(u), err)
	}
	for _, bad := range [][3]int64{{0, 9 * mib, region}, {0, mib, 0}, {-1, 10, 10}, {0, 8 * mib, 1}} {
		if _, err := ctl1.Checksums(ctx, "vol", bad[0], bad[1], bad[2]); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Checksums%v: %v, want invalid argument", bad, err)
		}
	}
	if _, err := ctl1.Checksums(ctx, "none", 0, 1, 1); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("checksums of a missing volume: %v, want not found", err)
	}
	if sums, err := ctl1.Checksums(ctx, "vol", 0, 0, 1); err != nil || len(sums) != 0 {
		t.Errorf("checksums of nothing: %v, %v", sums, err)
	}
}

// TestRemoteClose: Close fails calls in flight and later ones, returns
// once the goroutines are gone, and can be called twice.
func TestRemoteClose(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	n.create("vol", mib)
	r := n.dial("vol", 1)
	mustWrite(t, r, pattern(4096, 1), 0)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(make([]byte, 1), 0); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("read after Close: %v", err)
	}
	if len(leakedGoroutines()) > 0 {
		// The server's side may take a moment; the remote's must not.
		for _, g := range leakedGoroutines() {
			if bytes.Contains([]byte(g), []byte("replica.(*Remote)")) {
				t.Errorf("Remote goroutine after Close:\n%s", g)
			}
		}
	}
}

// TestEngineOverRemote runs an engine over a Local on one node and a
// Remote on another: after concurrent writes, a trim and a snapshot, both
// chains hold the same bytes and the same snapshot.
func TestEngineOverRemote(t *testing.T) {
	checkNoLeaks(t)
	a, b := startNode(t), startNode(t)
	ca, cb := a.create("vol", 16*mib), b.create("vol", 16*mib)
	l, err := OpenLocal(ca, a.epochs, 1)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New("vol", l, b.dial("vol", 1))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 32; i++ {
				off := int64(g)*2*mib + int64(i)*(64<<10) + int64(i%7)
				if _, err := eng.WriteAt(pattern(60<<10, byte(g+i)), off); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := eng.Trim(3*mib+100, mib); err != nil {
		t.Fatal(err)
	}
	if err := eng.Snapshot("s1"); err != nil {
		t.Fatal(err)
	}
	if err := eng.Close(); err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "replicas", mustRead(t, cb, 0, 16*mib), mustRead(t, ca, 0, 16*mib))
	if sa, sb := ca.Snapshots(), cb.Snapshots(); len(sa) != 1 || len(sb) != 1 || sa[0].Name != "s1" || sb[0].Name != "s1" {
		t.Fatalf("snapshots: %v and %v", sa, sb)
	}
	sa, err := Checksums(ca, 0, 16*mib, mib)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.control().Checksums(context.Background(), "vol", 0, 16*mib, mib)
	if err != nil {
		t.Fatal(err)
	}
	for i := range sa {
		if sa[i] != sb[i] {
			t.Errorf("region %d differs between the replicas", i)
		}
	}
}

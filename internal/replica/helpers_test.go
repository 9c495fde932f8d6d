package replica

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/chain"
)

const mib = 1 << 20

// node is one replica server over a pool in a temporary directory.
type node struct {
	t      testing.TB
	dir    string
	pool   *chain.Pool
	epochs *Epochs
	srv    *Server
	addr   string
	ln     *trackListener
	cancel context.CancelFunc
	served chan error
}

// startNode opens a pool and an epoch store in a new temporary directory
// and serves them on 127.0.0.1. Everything stops at the end of the test.
func startNode(t testing.TB) *node {
	t.Helper()
	n := &node{t: t, dir: t.TempDir()}
	p, err := chain.OpenPool(n.dir)
	if err != nil {
		t.Fatal(err)
	}
	n.pool = p
	t.Cleanup(func() { p.Close() })
	n.start()
	t.Cleanup(n.stop)
	return n
}

// start (re)starts the server with a fresh Epochs over the same directory,
// as a restarted node would.
func (n *node) start() {
	n.t.Helper()
	ep, err := OpenEpochs(filepath.Join(n.dir, "epochs"))
	if err != nil {
		n.t.Fatal(err)
	}
	n.epochs = ep
	n.srv = NewServer(n.pool, ep, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		n.t.Fatal(err)
	}
	n.ln = &trackListener{Listener: ln}
	n.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.served = make(chan error, 1)
	go func() { n.served <- n.srv.Serve(ctx, n.ln) }()
}

// stop stops the server the orderly way and waits for Serve to return.
func (n *node) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	select {
	case err := <-n.served:
		if err != nil {
			n.t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		n.t.Errorf("Serve did not return 10s after cancel")
	}
	n.cancel = nil
}

// kill closes the listener and every connection at once, as a crash or a
// partition would, and waits for Serve to return.
func (n *node) kill() {
	n.ln.Close()
	n.ln.closeConns()
	select {
	case <-n.served:
	case <-time.After(10 * time.Second):
		n.t.Errorf("Serve did not return 10s after its listener and connections closed")
	}
	n.cancel()
	n.cancel = nil
}

func (n *node) create(name string, size int64) *chain.Chain {
	n.t.Helper()
	c, err := n.pool.Create(name, size)
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

func (n *node) dial(volume string, epoch uint64, opts ...Option) *Remote {
	n.t.Helper()
	r, err := Dial(context.Background(), n.addr, volume, epoch, opts...)
	if err != nil {
		n.t.Fatalf("Dial %s epoch %d: %v", volume, epoch, err)
	}
	n.t.Cleanup(func() { r.Close() })
	return r
}

func (n *node) control() *Control {
	n.t.Helper()
	c, err := DialControl(context.Background(), n.addr)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { c.Close() })
	return c
}

// trackListener remembers the connections it accepts, so that a test can
// cut them all.
type trackListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackListener) closeConns() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*13) + byte(i>>12)
	}
	return b
}

func mustRead(t testing.TB, r interface {
	ReadAt([]byte, int64) (int, error)
}, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if k, err := r.ReadAt(b, off); err != nil || k != len(b) {
		t.Fatalf("read %d at %d: n=%d err=%v", n, off, k, err)
	}
	return b
}

func mustWrite(t testing.TB, w interface {
	WriteAt([]byte, int64) (int, error)
}, b []byte, off int64) {
	t.Helper()
	if k, err := w.WriteAt(b, off); err != nil || k != len(b) {
		t.Fatalf("write %d at %d: n=%d err=%v", len(b), off, k, err)
	}
}

func equalBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: differs at byte %d (len got %d, want %d)", what, i, len(got), len(want))
	}
}

// checkNoLeaks fails the test if goroutines of this package's servers,
// connections or remotes are still running when the test ends (after the
// other cleanups have run).
func checkNoLeaks(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			leaked := leakedGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func leakedGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, fn := range []string{"replica.(*Remote)", "replica.(*conn)", "replica.(*Server)"} {
			if strings.Contains(g, fn) {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// within fails the test if fn does not return within d.
func within(t testing.TB, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

package nbd

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
)

// socketPair returns the two ends of a unix stream socket pair, the way the
// kernel NBD attachment makes them.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	return conns[0], conns[1]
}

// TestHandshakeThenTransmit runs the client handshake against ServeConn on
// a socket pair, then a write and a read in the transmission phase.
func TestHandshakeThenTransmit(t *testing.T) {
	be := newFileBackend(t, testSize)
	ex := newTestExports(map[string]Backend{"vol": be})
	srv, cli := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { NewServer(ex).ServeConn(ctx, srv); close(done) }()
	defer func() {
		cancel()
		<-done
	}()
	cli.SetDeadline(time.Now().Add(30 * time.Second))

	exp, err := Handshake(cli, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if exp.Size != testSize {
		t.Errorf("size %d, want %d", exp.Size, testSize)
	}
	if want := transmissionFlags(be); exp.Flags != want {
		t.Errorf("flags %#x, want %#x", exp.Flags, want)
	}
	if exp.Flags&FlagReadOnly != 0 {
		t.Errorf("export is read-only")
	}

	// Transmission: write 4 KiB at 8 KiB, read it back.
	c := &rawClient{t: t, c: cli, r: bufio.NewReader(cli)}
	payload := make([]byte, 4096)
	for i := range payload {
		payload[i] = byte(i)
	}
	c.request(0, cmdWrite, 1, 8192, 4096, payload)
	c.expectReply(1, 0)
	c.request(0, cmdRead, 2, 8192, 4096, nil)
	c.expectReply(2, 0)
	if got := c.read(4096); string(got) != string(payload) {
		t.Fatal("read back differs from what was written")
	}
	if ex.opens.Load() != 1 {
		t.Errorf("%d opens, want 1", ex.opens.Load())
	}
}

func TestHandshakeUnknownExport(t *testing.T) {
	ex := newTestExports(map[string]Backend{"vol": newFileBackend(t, 1<<20)})
	srv, cli := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go NewServer(ex).ServeConn(ctx, srv)
	cli.SetDeadline(time.Now().Add(30 * time.Second))
	_, err := Handshake(cli, "missing")
	if !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("Handshake of a missing export: %v, want ErrNotFound", err)
	}
}

func TestHandshakeNotAServer(t *testing.T) {
	srv, cli := socketPair(t)
	go func() { srv.Write(make([]byte, 18)); srv.Close() }()
	cli.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := Handshake(cli, "vol"); err == nil {
		t.Fatal("Handshake with a peer that is not an NBD server succeeded")
	}
}

package nbd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

const testSize = 16 << 20

func serveOne(t *testing.T, opts ...Option) (*fileBackend, *testExports, string) {
	t.Helper()
	be := newFileBackend(t, testSize)
	ex := newTestExports(map[string]Backend{"vol": be, "other": newFileBackend(t, 1<<20)})
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return be, ex, startServer(t, ex, append([]Option{WithLogger(log)}, opts...)...)
}

func TestGoReportsExport(t *testing.T) {
	_, ex, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)

	ei, typ := c.info(optInfo, "vol", infoBlockSize, infoName)
	if typ != repAck {
		t.Fatalf("NBD_OPT_INFO: reply %#x", typ)
	}
	want := uint16(flagHasFlags | flagSendFlush | flagSendFUA | flagSendTrim | flagSendWriteZeroes | flagCanMultiConn | flagSendFastZero)
	if ei.size != testSize || ei.flags != want {
		t.Errorf("NBD_OPT_INFO: size %d flags %#x; want %d %#x", ei.size, ei.flags, testSize, want)
	}
	if !ei.hasBlockSize || ei.minBS != 1 || ei.prefBS != 4096 || ei.maxBS != 32<<20 {
		t.Errorf("block sizes %+v", ei)
	}
	if !ei.hasNameRep || ei.name != "vol" {
		t.Errorf("NBD_INFO_NAME %q", ei.name)
	}
	// INFO opens and releases at once.
	if ex.opens.Load() != 1 || ex.releases.Load() != 1 {
		t.Errorf("after INFO: %d opens %d releases", ex.opens.Load(), ex.releases.Load())
	}

	ei, typ = c.info(optGo, "vol")
	if typ != repAck || ei.size != testSize || ei.flags != want {
		t.Fatalf("NBD_OPT_GO: reply %#x size %d flags %#x", typ, ei.size, ei.flags)
	}
	c.request(0, cmdRead, 7, 0, 512, nil)
	c.expectReply(7, 0)
	if got := c.read(512); !bytes.Equal(got, make([]byte, 512)) {
		t.Errorf("fresh export does not read as zeroes")
	}
	c.request(0, cmdDisc, 8, 0, 0, nil)
	c.expectClosed()
	waitFor(t, "release", func() bool { return ex.releases.Load() == 2 })
	if ex.opens.Load() != 2 {
		t.Errorf("%d opens", ex.opens.Load())
	}
}

func TestExportNameOption(t *testing.T) {
	for _, noZeroes := range []bool{false, true} {
		t.Run(fmt.Sprintf("noZeroes=%v", noZeroes), func(t *testing.T) {
			_, ex, addr := serveOne(t)
			c := dialRaw(t, addr)
			flags := uint32(clientFlagFixedNewstyle)
			n := 10 + 124
			if noZeroes {
				flags |= clientFlagNoZeroes
				n = 10
			}
			c.hello(flags)
			c.sendOpt(optExportName, []byte("other"))
			b := c.read(n)
			if be64(b) != 1<<20 || be16(b[8:])&flagHasFlags == 0 {
				t.Fatalf("export reply % x", b[:10])
			}
			if !bytes.Equal(b[10:], make([]byte, n-10)) {
				t.Fatalf("padding not zero")
			}
			c.request(0, cmdWrite, 1, 4096, 3, []byte("abc"))
			c.expectReply(1, 0)
			c.request(0, cmdRead, 2, 4096, 3, nil)
			c.expectReply(2, 0)
			if got := c.read(3); string(got) != "abc" {
				t.Fatalf("read back %q", got)
			}
			c.c.Close()
			waitFor(t, "release", func() bool { return ex.releases.Load() == 1 })
		})
	}
}

func TestUnknownExport(t *testing.T) {
	_, ex, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)
	for _, opt := range []uint32{optInfo, optGo} {
		if _, typ := c.info(opt, "nope"); typ != repErrUnknown {
			t.Errorf("option %d on a missing export: reply %#x, want NBD_REP_ERR_UNKNOWN", opt, typ)
		}
	}
	// The connection is still usable.
	if _, typ := c.info(optGo, "vol"); typ != repAck {
		t.Fatalf("NBD_OPT_GO after an error: %#x", typ)
	}

	// NBD_OPT_EXPORT_NAME cannot report the error: the server hangs up.
	c2 := dialRaw(t, addr)
	c2.hello(clientFlagFixedNewstyle)
	c2.sendOpt(optExportName, []byte("nope"))
	c2.expectClosed()

	// Other Open errors.
	for _, tc := range []struct {
		err  error
		want uint32
	}{
		{fmt.Errorf("etcd: %w", errdefs.ErrUnavailable), repErrShutdown},
		{errdefs.ErrPermissionDenied, repErrPolicy},
		{fmt.Errorf("bad name: %w", errdefs.ErrInvalidArgument), repErrUnknown},
		{syscall.EIO, repErrUnknown},
	} {
		ex.mu.Lock()
		ex.openErr = tc.err
		ex.mu.Unlock()
		c := dialRaw(t, addr)
		c.hello(clientFlagFixedNewstyle)
		if _, typ := c.info(optGo, "vol"); typ != tc.want {
			t.Errorf("Open error %v: reply %#x, want %#x", tc.err, typ, tc.want)
		}
	}
}

func TestOptList(t *testing.T) {
	_, _, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)
	c.sendOpt(optList, nil)
	var names []string
	for {
		opt, typ, data := c.optReply()
		if opt != optList {
			t.Fatalf("reply for option %d", opt)
		}
		if typ == repAck {
			break
		}
		if typ != repServer || int(be32(data)) != len(data)-4 {
			t.Fatalf("reply %#x % x", typ, data)
		}
		names = append(names, string(data[4:]))
	}
	if fmt.Sprint(names) != "[other vol]" {
		t.Errorf("NBD_OPT_LIST = %v", names)
	}
	c.sendOpt(optList, []byte("x"))
	if _, typ, _ := c.optReply(); typ != repErrInvalid {
		t.Errorf("NBD_OPT_LIST with data: %#x", typ)
	}
}

func TestOptAbort(t *testing.T) {
	_, ex, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)
	c.sendOpt(optAbort, nil)
	if opt, typ, _ := c.optReply(); opt != optAbort || typ != repAck {
		t.Fatalf("NBD_OPT_ABORT: %d %#x", opt, typ)
	}
	c.expectClosed()
	if ex.opens.Load() != 0 {
		t.Errorf("abort opened an export")
	}
}

func TestUnknownOptions(t *testing.T) {
	_, _, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)
	for _, opt := range []uint32{optStructuredReply, optStartTLS, optListMetaContext, optSetMetaContext, optExtendedHeaders, optPeekExport, 99, 1 << 31} {
		c.sendOpt(opt, []byte("some data"))
		if o, typ, _ := c.optReply(); o != opt || typ != repErrUnsup {
			t.Errorf("option %d: reply to %d %#x, want NBD_REP_ERR_UNSUP", opt, o, typ)
		}
	}
	if _, typ := c.info(optGo, "vol"); typ != repAck {
		t.Fatalf("NBD_OPT_GO after unknown options: %#x", typ)
	}
}

func TestMalformedInfo(t *testing.T) {
	_, _, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.hello(clientFlagFixedNewstyle)
	for _, data := range [][]byte{
		nil,
		{0, 0, 0, 3, 'v', 'o', 'l'},             // no info count
		{0xff, 0xff, 0xff, 0xff, 0, 0},          // name longer than the data
		{0, 0, 0, 3, 'v', 'o', 'l', 0, 2, 0, 3}, // count says 2, data has 1
		append(goData("vol", infoBlockSize), 0, 0, 0), // trailing bytes
	} {
		c.sendOpt(optGo, data)
		if _, typ, _ := c.optReply(); typ != repErrInvalid {
			t.Errorf("NBD_OPT_GO % x: reply %#x, want NBD_REP_ERR_INVALID", data, typ)
		}
	}
}

func TestHostileHandshake(t *testing.T) {
	_, ex, addr := serveOne(t)
	for _, tc := range []struct {
		name string
		send func(c *rawClient)
	}{
		{"unknown client flags", func(c *rawClient) { c.hello(1 << 5) }},
		{"bad option magic", func(c *rawClient) {
			c.hello(clientFlagFixedNewstyle)
			c.write(bytes.Repeat([]byte{0x55}, 16))
		}},
		{"oversized option", func(c *rawClient) {
			c.hello(clientFlagFixedNewstyle)
			var h [16]byte
			put64(h[:], optMagic)
			put32(h[8:], optGo)
			put32(h[12:], 0xffffffff)
			c.write(h[:])
		}},
		{"oversized export name", func(c *rawClient) {
			c.hello(clientFlagFixedNewstyle)
			c.sendOpt(optExportName, bytes.Repeat([]byte("a"), 5000))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			tc.send(c)
			c.expectClosed()
		})
	}
	if ex.opens.Load() != 0 {
		t.Errorf("hostile handshakes opened %d exports", ex.opens.Load())
	}
}

func TestHandshakeTimeout(t *testing.T) {
	_, _, addr := serveOne(t, WithHandshakeTimeout(100*time.Millisecond))
	for _, stall := range []func(c *rawClient){
		func(c *rawClient) {},
		func(c *rawClient) { c.hello(clientFlagFixedNewstyle) },
		func(c *rawClient) { c.hello(clientFlagFixedNewstyle); c.write([]byte("IHAVE")) },
	} {
		c := dialRaw(t, addr)
		stall(c)
		c.expectClosed()
	}
}

func TestUnknownCommand(t *testing.T) {
	be, _, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.open("vol")
	for i, typ := range []uint16{cmdCache, cmdBlockStatus, 8, 99, 0xffff} {
		c.request(0, typ, uint64(i), 0, 4096, nil)
		c.expectReply(uint64(i), errInval)
	}
	// Flags the command does not take.
	c.request(cmdFlagDF, cmdRead, 10, 0, 4096, nil)
	c.expectReply(10, errInval)
	c.request(cmdFlagNoHole, cmdTrim, 11, 0, 4096, nil)
	c.expectReply(11, errInval)
	c.request(1<<9, cmdFlush, 12, 0, 0, nil)
	c.expectReply(12, errInval)
	c.request(cmdFlagNoHole, cmdWrite, 13, 0, 4, []byte("data"))
	c.expectReply(13, errInval)
	if n := be.calls(); n != 0 {
		t.Errorf("refused requests made %d backend calls", n)
	}
	// Still in sync with the stream.
	c.request(0, cmdRead, 20, 0, 4, nil)
	c.expectReply(20, 0)
	c.read(4)
}

func TestOutOfRange(t *testing.T) {
	be, _, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.open("vol")
	for i, tc := range []struct {
		typ    uint16
		off    uint64
		length uint32
		want   uint32
	}{
		{cmdRead, testSize, 1, errInval},
		{cmdRead, testSize - 512, 1024, errInval},
		{cmdRead, 1<<64 - 512, 1024, errInval}, // offset+length wraps
		{cmdRead, 1 << 63, 512, errInval},
		{cmdWrite, testSize - 512, 1024, errNoSpc},
		{cmdWrite, 1<<64 - 512, 1024, errNoSpc},
		{cmdTrim, testSize, 4096, errInval},
		{cmdWriteZeroes, testSize - 1, 2, errNoSpc},
		{cmdWriteZeroes, 0, 0xffffffff, errNoSpc},
	} {
		var payload []byte
		if tc.typ == cmdWrite {
			payload = bytes.Repeat([]byte{0xee}, int(tc.length))
		}
		c.request(0, tc.typ, uint64(i), tc.off, tc.length, payload)
		c.expectReply(uint64(i), tc.want)
	}
	if n := be.calls(); n != 0 {
		t.Errorf("out-of-range requests made %d backend calls", n)
	}
	// The last bytes of the export are reachable.
	c.request(0, cmdWrite, 100, testSize-4, 4, []byte("tail"))
	c.expectReply(100, 0)
	c.request(0, cmdRead, 101, testSize-4, 4, nil)
	c.expectReply(101, 0)
	if got := c.read(4); string(got) != "tail" {
		t.Errorf("read %q", got)
	}
}

func TestOversizedLength(t *testing.T) {
	be, _, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.open("vol")
	// A read over the maximum is refused; the connection survives.
	c.request(0, cmdRead, 1, 0, MaxPayload+1, nil)
	c.expectReply(1, errInval)
	c.request(0, cmdRead, 2, 0, 0xffffffff, nil)
	c.expectReply(2, errInval)
	// A write over the maximum is refused and the server hangs up: its
	// payload cannot be trusted.
	c.request(0, cmdWrite, 3, 0, 0xffffffff, nil)
	c.expectReply(3, errInval)
	c.expectClosed()
	if n := be.calls(); n != 0 {
		t.Errorf("oversized requests made %d backend calls", n)
	}
}

func TestBadRequestMagic(t *testing.T) {
	be, ex, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.open("vol")
	c.write(bytes.Repeat([]byte{0xab}, requestBytes))
	c.expectClosed()
	waitFor(t, "release", func() bool { return ex.releases.Load() == 1 })
	if be.calls() != 0 {
		t.Errorf("backend called")
	}
}

func TestDisconnectMidPayload(t *testing.T) {
	be, ex, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.open("vol")
	c.request(0, cmdWrite, 1, 0, 1<<20, bytes.Repeat([]byte{1}, 1000))
	c.c.Close()
	waitFor(t, "release", func() bool { return ex.releases.Load() == 1 })
	if be.writes.Load() != 0 {
		t.Errorf("a partial write reached the backend")
	}
}

func TestStalledPayload(t *testing.T) {
	be := newFileBackend(t, 1<<20)
	ex2 := newTestExports(map[string]Backend{"vol": be})
	addr := startServer(t, ex2, func(c *config) { c.payloadTimeout = 100 * time.Millisecond })
	c := dialRaw(t, addr)
	c.open("vol")
	c.request(0, cmdWrite, 1, 0, 4096, []byte("only a little"))
	c.expectClosed()
	waitFor(t, "release", func() bool { return ex2.releases.Load() == 1 })
}

func TestFUA(t *testing.T) {
	be, _, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.open("vol")
	c.request(0, cmdWrite, 1, 0, 4, []byte("abcd"))
	c.expectReply(1, 0)
	if n := be.flushes.Load(); n != 0 {
		t.Fatalf("write without FUA flushed %d times", n)
	}
	c.request(cmdFlagFUA, cmdWrite, 2, 0, 4, []byte("efgh"))
	c.expectReply(2, 0)
	if n := be.flushes.Load(); n != 1 {
		t.Fatalf("FUA write: %d flushes before the reply, want 1", n)
	}
	c.request(cmdFlagFUA, cmdTrim, 3, 4096, 4096, nil)
	c.expectReply(3, 0)
	c.request(cmdFlagFUA|cmdFlagNoHole, cmdWriteZeroes, 4, 8192, 4096, nil)
	c.expectReply(4, 0)
	c.request(0, cmdFlush, 5, 0, 0, nil)
	c.expectReply(5, 0)
	if n := be.flushes.Load(); n != 4 {
		t.Fatalf("%d flushes, want 4", n)
	}
	if be.trims.Load() != 1 || be.zeroes.Load() != 1 {
		t.Fatalf("trims %d zeroes %d", be.trims.Load(), be.zeroes.Load())
	}
}

func TestTrimAndZeroes(t *testing.T) {
	be, _, addr := serveOne(t)
	c := dialRaw(t, addr)
	c.open("vol")
	data := bytes.Repeat([]byte{0x5a}, 3*4096)
	c.request(0, cmdWrite, 1, 0, uint32(len(data)), data)
	c.expectReply(1, 0)
	c.request(cmdFlagNoHole, cmdWriteZeroes, 2, 4096, 4096, nil)
	c.expectReply(2, 0)
	c.request(0, cmdRead, 3, 0, uint32(len(data)), nil)
	c.expectReply(3, 0)
	got := c.read(len(data))
	want := append(append(bytes.Repeat([]byte{0x5a}, 4096), make([]byte, 4096)...), bytes.Repeat([]byte{0x5a}, 4096)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("write zeroes did not zero exactly its range")
	}
	// Zero-length trims and zeroes succeed without the backend.
	c.request(0, cmdTrim, 4, 0, 0, nil)
	c.expectReply(4, 0)
	c.request(0, cmdWriteZeroes, 5, 0, 0, nil)
	c.expectReply(5, 0)
	if be.trims.Load() != 0 || be.zeroes.Load() != 1 {
		t.Fatalf("trims %d zeroes %d", be.trims.Load(), be.zeroes.Load())
	}

	// Fast zero: done when the backend says zeroing is cheap, refused
	// with ENOTSUP (and nothing changed) when not.
	c.request(cmdFlagFastZero, cmdWriteZeroes, 6, 0, 4096, nil)
	c.expectReply(6, 0)
	be.fastZero.Store(false)
	c.request(cmdFlagFastZero, cmdWriteZeroes, 7, 8192, 4096, nil)
	c.expectReply(7, errNotSup)
	if be.zeroes.Load() != 2 {
		t.Fatalf("zeroes %d, want 2", be.zeroes.Load())
	}
}

// errBackend fails writes with a chosen error.
type errBackend struct {
	*fileBackend
	err error
}

func (b errBackend) WriteAt(p []byte, off int64) (int, error) { return 0, b.err }
func (b errBackend) Flush() error                             { return b.err }

func TestBackendErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want uint32
	}{
		{syscall.ENOSPC, errNoSpc},
		{fmt.Errorf("pool full: %w", errdefs.ErrNoSpace), errNoSpc},
		{syscall.EDQUOT, errNoSpc},
		{syscall.EIO, errIO},
		{fmt.Errorf("replica lost: %w", errdefs.ErrUnavailable), errIO},
		{syscall.EROFS, errPerm},
	} {
		be := errBackend{newFileBackend(t, 1<<20), tc.err}
		addr := startServer(t, newTestExports(map[string]Backend{"vol": be}))
		c := dialRaw(t, addr)
		c.open("vol")
		c.request(0, cmdWrite, 1, 0, 4, []byte("abcd"))
		c.expectReply(1, tc.want)
		c.request(0, cmdFlush, 2, 0, 0, nil)
		c.expectReply(2, tc.want)
		// Reads still work.
		c.request(0, cmdRead, 3, 0, 4, nil)
		c.expectReply(3, 0)
		c.read(4)
	}
}

// A short read with no error from the backend is still an error.
type shortBackend struct{ *fileBackend }

func (b shortBackend) ReadAt(p []byte, off int64) (int, error) { return len(p) / 2, nil }

func TestShortRead(t *testing.T) {
	addr := startServer(t, newTestExports(map[string]Backend{"vol": shortBackend{newFileBackend(t, 1<<20)}}))
	c := dialRaw(t, addr)
	c.open("vol")
	c.request(0, cmdRead, 1, 0, 4096, nil)
	c.expectReply(1, errIO)
	c.request(0, cmdRead, 2, 0, 0, nil) // zero length: no backend call, no data
	c.expectReply(2, 0)
}

func TestOutOfOrderReplies(t *testing.T) {
	be, _, addr := serveOne(t)
	gate := make(chan struct{})
	be.beforeRead = func(off int64) {
		if off == 0 {
			<-gate
		}
	}
	c := dialRaw(t, addr)
	c.open("vol")
	c.request(0, cmdRead, 1, 0, 512, nil)    // blocks in the backend
	c.request(0, cmdRead, 2, 4096, 512, nil) // overtakes it
	c.expectReply(2, 0)
	c.read(512)
	close(gate)
	c.expectReply(1, 0)
	c.read(512)
}

func TestManyRequestsInFlight(t *testing.T) {
	_, _, addr := serveOne(t, WithMaxInFlight(8), WithWorkers(4))
	c := dialRaw(t, addr)
	c.open("vol")
	const n = 300
	pattern := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 4096+i) }
	off := func(i int) uint64 { return uint64(i) * 16384 }

	// Pipeline all writes from one goroutine while another reads replies:
	// the server must not deadlock when the client sends faster than the
	// in-flight cap.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			p := pattern(i)
			c.request(0, cmdWrite, uint64(i), off(i), uint32(len(p)), p)
		}
	}()
	seen := map[uint64]bool{}
	for range n {
		h, e := c.reply()
		if e != 0 || seen[h] || h >= n {
			t.Fatalf("write reply handle %d error %d", h, e)
		}
		seen[h] = true
	}
	wg.Wait()

	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			c.request(0, cmdRead, uint64(1000+i), off(i), uint32(4096+i), nil)
		}
	}()
	for range n {
		h, e := c.reply()
		i := int(h) - 1000
		if e != 0 || i < 0 || i >= n {
			t.Fatalf("read reply handle %d error %d", h, e)
		}
		if got := c.read(4096 + i); !bytes.Equal(got, pattern(i)) {
			t.Fatalf("read %d: wrong data", i)
		}
	}
	wg.Wait()
}

func TestManyConnections(t *testing.T) {
	_, ex, addr := serveOne(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialRaw(t, addr)
			c.open("vol")
			p := bytes.Repeat([]byte{byte(i + 1)}, 65536)
			c.request(cmdFlagFUA, cmdWrite, 1, uint64(i)<<16, uint32(len(p)), p)
			c.expectReply(1, 0)
			c.request(0, cmdRead, 2, uint64(i)<<16, uint32(len(p)), nil)
			c.expectReply(2, 0)
			if !bytes.Equal(c.read(len(p)), p) {
				t.Errorf("connection %d read wrong data", i)
			}
			c.request(0, cmdDisc, 3, 0, 0, nil)
			c.expectClosed()
		}()
	}
	wg.Wait()
	waitFor(t, "releases", func() bool { return ex.releases.Load() == 8 })
}

func TestShutdown(t *testing.T) {
	be := newFileBackend(t, 1<<20)
	ex := newTestExports(map[string]Backend{"vol": be})
	gate := make(chan struct{})
	be.beforeRead = func(off int64) { <-gate }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(ex).Serve(ctx, ln) }()

	idle := dialRaw(t, ln.Addr().String()) // in the handshake
	idle.hello(clientFlagFixedNewstyle)
	busy := dialRaw(t, ln.Addr().String()) // a read in flight
	busy.open("vol")
	busy.request(0, cmdRead, 1, 0, 512, nil)
	waitFor(t, "read in flight", func() bool { return be.reads.Load() == 1 })

	cancel()
	idle.expectClosed()
	select {
	case <-done:
		t.Fatal("Serve returned with a request in flight")
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	// The request in flight is answered before the server hangs up.
	busy.expectReply(1, 0)
	busy.read(512)
	busy.expectClosed()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if ex.releases.Load() != 1 {
		t.Fatalf("%d releases", ex.releases.Load())
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("listener still open")
	}
}

func TestServeListenerClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- NewServer(newTestExports(nil)).Serve(context.Background(), ln) }()
	ln.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Serve returned nil after its listener failed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestClientNotReadingReplies(t *testing.T) {
	be := newFileBackend(t, 64<<20)
	ex := newTestExports(map[string]Backend{"vol": be})
	addr := startServer(t, ex, func(c *config) { c.payloadTimeout = 200 * time.Millisecond })
	c := dialRaw(t, addr)
	c.open("vol")
	// 64 MiB of replies that nobody reads: more than the socket buffers.
	for i := range 64 {
		c.request(0, cmdRead, uint64(i), uint64(i)<<20, 1<<20, nil)
	}
	waitFor(t, "the server to drop the client", func() bool { return ex.releases.Load() == 1 })
}

func TestMaxConnections(t *testing.T) {
	_, ex, addr := serveOne(t, WithMaxConnections(1))
	first := dialRaw(t, addr)
	first.open("vol")
	over := dialRaw(t, addr)
	over.expectClosed()
	first.request(0, cmdDisc, 1, 0, 0, nil)
	first.expectClosed()
	waitFor(t, "the first connection to end", func() bool { return ex.releases.Load() == 1 })
	// Serve counts the connection as gone just after its release; retry
	// until the slot is free.
	waitFor(t, "a free slot", func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(time.Second))
		var b [18]byte
		_, err = io.ReadFull(c, b[:])
		return err == nil
	})
}

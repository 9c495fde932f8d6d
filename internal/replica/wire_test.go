package replica

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/errdefs"
)

// rawServer runs handler on every connection to a new listener and returns
// its address; everything is closed and waited for at the end of the test.
func rawServer(t testing.TB, handler func(nc net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				handler(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func readRawRequest(r io.Reader) (reqHeader, []byte, error) {
	var b [reqHeaderLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return reqHeader{}, nil, err
	}
	h, err := parseReqHeader(b[:])
	if err != nil {
		return h, nil, err
	}
	p := make([]byte, h.plen)
	_, err = io.ReadFull(r, p)
	return h, p, err
}

func writeRawReply(w io.Writer, handle uint64, status uint16, data []byte) error {
	var b [replyHeaderLen]byte
	rh := replyHeader{status: status, handle: handle, plen: uint32(len(data))}
	rh.put(b[:])
	_, err := w.Write(append(b[:], data...))
	return err
}

// frame encodes one request.
func frame(o op, flags uint16, handle, off, length uint64, payload []byte) []byte {
	h := reqHeader{op: o, flags: flags, handle: handle, off: off, length: length, plen: uint32(len(payload))}
	b := make([]byte, reqHeaderLen, reqHeaderLen+len(payload))
	h.put(b)
	return append(b, payload...)
}

func strs(ss ...string) []byte {
	b, err := encodeStrs(nil, ss...)
	if err != nil {
		panic(err)
	}
	return b
}

func helloFrame(volume string, epoch uint64) []byte {
	return frame(opHello, 0, 1, epoch, protoVersion, strs(volume))
}

// rawReply reads one reply: header and payload.
func rawReply(t testing.TB, nc net.Conn) (replyHeader, []byte) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [replyHeaderLen]byte
	if _, err := io.ReadFull(nc, b[:]); err != nil {
		t.Fatalf("read reply: %v", err)
	}
	rh, err := parseReplyHeader(b[:])
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, rh.plen)
	if _, err := io.ReadFull(nc, p); err != nil {
		t.Fatalf("read reply payload: %v", err)
	}
	return rh, p
}

// expectClosed waits for the server to close the connection.
func expectClosed(t testing.TB, nc net.Conn) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, nc)
	if err != nil {
		t.Fatalf("connection not closed by the server (read %d bytes): %v", n, err)
	}
}

// TestMalformedFrames sends broken requests to a real server: each gets an
// error reply or a closed connection, the server neither panics nor hangs,
// and goes on serving.
func TestMalformedFrames(t *testing.T) {
	checkNoLeaks(t)
	n := startNode(t)
	n.create("vol", mib)

	conn := func(hello bool) net.Conn {
		t.Helper()
		nc, err := net.Dial("tcp", n.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		if hello {
			if _, err := nc.Write(helloFrame("vol", 1)); err != nil {
				t.Fatal(err)
			}
			if rh, p := rawReply(t, nc); rh.status != statusOK || len(p) != 8 {
				t.Fatalf("hello: status %d, %q", rh.status, p)
			}
		}
		return nc
	}
	badMagic := frame(opFlush, 0, 7, 0, 0, nil)
	copy(badMagic, "XXXX")

	// Before hello.
	for name, tc := range map[string]struct {
		send   []byte
		status uint16 // of the reply; 0: none, the connection is just closed
		hangUp bool   // the client must hang up for the frame to end
	}{
		"bad magic":           {send: badMagic},
		"garbage":             {send: bytes.Repeat([]byte{0xff}, 100)},
		"not hello":           {send: frame(opFlush, 0, 3, 0, 0, nil), status: statusInvalidArgument},
		"hello version":       {send: frame(opHello, 0, 3, 1, 99, strs("vol")), status: statusInvalidArgument},
		"hello flags":         {send: frame(opHello, 1, 3, 1, protoVersion, strs("vol")), status: statusInvalidArgument},
		"hello payload":       {send: frame(opHello, 0, 3, 1, protoVersion, []byte{0, 9, 'v'}), status: statusInvalidArgument},
		"hello huge payload":  {send: frame(opHello, 0, 3, 1, protoVersion, make([]byte, maxHelloPayload+1))[:reqHeaderLen], status: statusInvalidArgument},
		"hello missing":       {send: frame(opHello, 0, 3, 1, protoVersion, strs("nope")), status: statusNotFound},
		"hello bad name":      {send: frame(opHello, 0, 3, 1, protoVersion, strs("../x")), status: statusInvalidArgument},
		"truncated header":    {send: helloFrame("vol", 1)[:20], hangUp: true},
		"truncated payload":   {send: helloFrame("vol", 1)[:reqHeaderLen+2], hangUp: true},
		"empty":               {hangUp: true},
		"hello then bad data": {send: append(frame(opHello, 0, 3, 1, protoVersion, strs("vol")), badMagic...), status: statusOK},
	} {
		t.Run("before hello/"+name, func(t *testing.T) {
			nc := conn(false)
			if _, err := nc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			if tc.status != 0 || name == "hello then bad data" {
				rh, p := rawReply(t, nc)
				if rh.status != tc.status || rh.handle != 3 {
					t.Fatalf("reply status %d handle %d (%s), want status %d handle 3", rh.status, rh.handle, p, tc.status)
				}
			}
			if tc.hangUp {
				nc.(*net.TCPConn).CloseWrite()
			}
			expectClosed(t, nc)
		})
	}

	// After hello: error replies, and the connection goes on.
	for name, tc := range map[string]struct {
		send   []byte
		status uint16
	}{
		"unknown op":        {frame(999, 0, 5, 0, 0, []byte("abcdef")), statusInvalidArgument},
		"op zero":           {frame(0, 0, 5, 0, 0, nil), statusInvalidArgument},
		"flags":             {frame(opFlush, 4, 5, 0, 0, nil), statusInvalidArgument},
		"second hello":      {frame(opHello, 0, 5, 1, protoVersion, strs("vol")), statusInvalidArgument},
		"read too long":     {frame(opRead, 0, 5, 0, MaxPayload+1, nil), statusInvalidArgument},
		"read out of range": {frame(opRead, 0, 5, mib, 1, nil), statusInvalidArgument},
		"read huge offset":  {frame(opRead, 0, 5, 1<<63, 1, nil), statusInvalidArgument},
		"trim huge length":  {frame(opTrim, 0, 5, 0, 1<<63, nil), statusInvalidArgument},
		"trim overflow":     {frame(opTrim, 0, 5, 1<<62, 1<<62, nil), statusInvalidArgument},
		"snapshot payload":  {frame(opSnapshot, 0, 5, 0, 0, []byte{0}), statusInvalidArgument},
		"snapshot extra":    {frame(opSnapshot, 0, 5, 0, 0, append(strs("s"), 1)), statusInvalidArgument},
		"create no name":    {frame(opCreate, 0, 5, 0, mib, nil), statusInvalidArgument},
		"checksums short":   {frame(opChecksums, 0, 5, 0, 1, []byte{1, 2}), statusInvalidArgument},
		"extents two":       {frame(opExtents, 0, 5, 0, 0, strs("vol", "")), statusInvalidArgument},
		"grow huge":         {frame(opGrow, 0, 5, 0, 1<<63, nil), statusInvalidArgument},
	} {
		t.Run("after hello/"+name, func(t *testing.T) {
			nc := conn(true)
			if _, err := nc.Write(append(tc.send, frame(opSize, 0, 6, 0, 0, nil)...)); err != nil {
				t.Fatal(err)
			}
			got := map[uint64]replyHeader{}
			for i := 0; i < 2; i++ {
				rh, p := rawReply(t, nc)
				if rh.status != 0 && len(p) == 0 {
					t.Errorf("error reply without a message")
				}
				got[rh.handle] = rh
			}
			if got[5].status != tc.status {
				t.Errorf("status %d, want %d", got[5].status, tc.status)
			}
			if got[6].status != statusOK {
				t.Errorf("next request: status %d", got[6].status)
			}
		})
	}

	// After hello: the connection is closed.
	for name, send := range map[string][]byte{
		"bad magic":         badMagic,
		"payload too large": frame(opWrite, 0, 5, 0, 0, nil)[:reqHeaderLen],
		"truncated header":  frame(opFlush, 0, 5, 0, 0, nil)[:10],
		"truncated payload": frame(opWrite, 0, 5, 0, 0, make([]byte, 100))[:reqHeaderLen+50],
	} {
		t.Run("after hello/"+name, func(t *testing.T) {
			nc := conn(true)
			if name == "payload too large" {
				binary.BigEndian.PutUint32(send[32:], MaxPayload+1)
			}
			if _, err := nc.Write(send); err != nil {
				t.Fatal(err)
			}
			if name == "payload too large" {
				if rh, _ := rawReply(t, nc); rh.status != statusInvalidArgument || rh.handle != 5 {
					t.Errorf("reply status %d handle %d", rh.status, rh.handle)
				}
			}
			if name == "truncated header" || name == "truncated payload" {
				nc.(*net.TCPConn).CloseWrite()
			}
			expectClosed(t, nc)
		})
	}

	// The server still serves.
	r := n.dial("vol", 1)
	mustWrite(t, r, pattern(4096, 1), 0)
}

func TestRequestHeaderRoundTrip(t *testing.T) {
	h := reqHeader{op: opChecksums, flags: 0, handle: 1<<63 + 5, off: 12345, length: 1 << 40, plen: 99}
	var b [reqHeaderLen]byte
	h.put(b[:])
	got, err := parseReqHeader(b[:])
	if err != nil || got != h {
		t.Fatalf("parse(put(%+v)) = %+v, %v", h, got, err)
	}
	rh := replyHeader{status: statusStaleEpoch, handle: 42, plen: 7}
	var rb [replyHeaderLen]byte
	rh.put(rb[:])
	if got, err := parseReplyHeader(rb[:]); err != nil || got != rh {
		t.Fatalf("reply round trip: %+v, %v", got, err)
	}
	if _, err := parseReqHeader(b[:10]); err == nil {
		t.Error("short header parsed")
	}
	b[0] = 0
	if _, err := parseReqHeader(b[:]); !errors.Is(err, errBadMagic) {
		t.Errorf("bad magic: %v", err)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	for _, target := range []error{
		errdefs.ErrInvalidArgument, errdefs.ErrNotFound, errdefs.ErrAlreadyExists,
		errdefs.ErrFailedPrecondition, errdefs.ErrNoSpace, errdefs.ErrUnavailable, ErrStaleEpoch,
	} {
		err := errorOf(statusOf(target), "x")
		if !errors.Is(err, target) {
			t.Errorf("%v did not survive the wire: %v", target, err)
		}
	}
	if err := errorOf(statusOf(errors.New("boom")), "boom"); errors.Unwrap(err) != nil || err.Error() != "boom" {
		t.Errorf("internal error: %v", err)
	}
}

// FuzzParseRequest feeds arbitrary bytes to the frame parsers: they never
// panic, and what they accept encodes back to the same bytes.
func FuzzParseRequest(f *testing.F) {
	f.Add(helloFrame("vol", 1))
	f.Add(frame(opWrite, 0, 2, 4096, 0, []byte("data")))
	f.Add(frame(opExtents, 0, 3, 0, 0, strs("vol", "a", "")))
	f.Add([]byte("STRQ"))
	f.Add([]byte{0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := parseReqHeader(b); err == nil {
			var out [reqHeaderLen]byte
			h.put(out[:])
			if !bytes.Equal(out[:], b[:reqHeaderLen]) {
				t.Fatalf("request header round trip: %x != %x", out, b[:reqHeaderLen])
			}
			_ = h.op.String()
			_ = h.op.dataOp()
		}
		if h, err := parseReplyHeader(b); err == nil {
			var out [replyHeaderLen]byte
			h.put(out[:])
			if !bytes.Equal(out[:], b[:replyHeaderLen]) {
				t.Fatalf("reply header round trip: %x != %x", out, b[:replyHeaderLen])
			}
		}
		if ss, err := decodeStrs(b, -1); err == nil {
			out, err := encodeStrs(nil, ss...)
			if err != nil || !bytes.Equal(out, b) {
				t.Fatalf("strings round trip: %q -> %x, %v", ss, out, err)
			}
		}
		decodeStrs(b, 1)
		decodeStrs(b, 3)
	})
}

// FuzzServerConn runs a server connection over arbitrary bytes (after a
// valid hello, for some inputs): it must end, without panicking, once the
// client hangs up.
func FuzzServerConn(f *testing.F) {
	hello := helloFrame("vol", 1)
	f.Add(true, []byte{})
	f.Add(true, frame(opWrite, 0, 2, 4096, 0, []byte("data")))
	f.Add(true, append(frame(opRead, 0, 2, 0, 4096, nil), frame(opFlush, 0, 3, 0, 0, nil)...))
	f.Add(true, frame(opChecksums, 0, 2, 0, mib, append(binary.BigEndian.AppendUint64(nil, 4096), strs("vol")...)))
	f.Add(true, frame(opExtents, 0, 2, 0, 0, strs("vol", "", "")))
	f.Add(true, frame(opSnapshot, 0, 2, 0, 0, strs("s")))
	f.Add(true, frame(999, 0, 2, 0, 0, []byte("x")))
	f.Add(false, hello)
	f.Add(false, frame(opHello, 0, 1, 0, protoVersion, strs("")))
	f.Add(false, []byte("STRQ"))

	dir := f.TempDir()
	pool, err := chain.OpenPool(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { pool.Close() })
	f.Fuzz(func(t *testing.T, withHello bool, b []byte) {
		if bigRequest(b) {
			t.Skip("creates or grows a volume past what a fuzz run should hold")
		}
		if _, err := pool.Create("vol", mib); err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
			t.Fatal(err)
		}
		edir, err := os.MkdirTemp(dir, "epochs")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(edir)
		ep, err := OpenEpochs(edir)
		if err != nil {
			t.Fatal(err)
		}
		s := NewServer(pool, ep, nil)
		cli, srv := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.serveConn(context.Background(), srv)
		}()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, cli)
		}()
		if withHello {
			b = append(append([]byte(nil), hello...), b...)
		}
		cli.SetWriteDeadline(time.Now().Add(5 * time.Second))
		cli.Write(b) // the server may hang up first
		cli.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("server connection did not end after the client hung up")
		}
		<-drained
	})
}

// bigRequest reports whether b, read as a stream of requests, creates or
// grows a volume past 64 MiB.
func bigRequest(b []byte) bool {
	for len(b) >= reqHeaderLen {
		h, err := parseReqHeader(b)
		if err != nil {
			return false
		}
		if (h.op == opCreate || h.op == opGrow) && h.length > 64*mib {
			return true
		}
		if uint64(h.plen) > uint64(len(b)-reqHeaderLen) {
			return false
		}
		b = b[reqHeaderLen+int(h.plen):]
	}
	return false
}

// TestBadReplies: a server that breaks the protocol after hello breaks
// the Remote (errdefs.ErrUnavailable); nothing panics or hangs.
func TestBadReplies(t *testing.T) {
	checkNoLeaks(t)
	for name, reply := range map[string]func(h reqHeader) []byte{
		"bad magic": func(h reqHeader) []byte {
			b := make([]byte, replyHeaderLen)
			(&replyHeader{handle: h.handle}).put(b)
			b[0] = 'X'
			return b
		},
		"unknown handle": func(h reqHeader) []byte {
			b := make([]byte, replyHeaderLen)
			(&replyHeader{handle: h.handle + 100}).put(b)
			return b
		},
		"short read": func(h reqHeader) []byte {
			b := make([]byte, replyHeaderLen, replyHeaderLen+10)
			(&replyHeader{handle: h.handle, plen: 10}).put(b)
			return append(b, make([]byte, 10)...)
		},
		"huge payload": func(h reqHeader) []byte {
			b := make([]byte, replyHeaderLen)
			(&replyHeader{handle: h.handle, plen: MaxPayload + 1}).put(b)
			return b
		},
		"huge message": func(h reqHeader) []byte {
			b := make([]byte, replyHeaderLen)
			(&replyHeader{handle: h.handle, status: statusInternal, plen: maxMessage + 1}).put(b)
			return b
		},
		"reserved": func(h reqHeader) []byte {
			b := make([]byte, replyHeaderLen)
			(&replyHeader{handle: h.handle}).put(b)
			b[7] = 1
			return b
		},
		"truncated": func(h reqHeader) []byte {
			b := make([]byte, replyHeaderLen)
			(&replyHeader{handle: h.handle, plen: 4096}).put(b)
			return append(b, 1, 2, 3)
		},
	} {
		t.Run(name, func(t *testing.T) {
			addr := rawServer(t, func(nc net.Conn) {
				h, _, err := readRawRequest(nc)
				if err != nil {
					return
				}
				writeRawReply(nc, h.handle, 0, make([]byte, 8))
				if h, _, err = readRawRequest(nc); err != nil {
					return
				}
				nc.Write(reply(h))
				if name == "truncated" {
					return // hang up
				}
				io.Copy(io.Discard, nc)
			})
			r, err := Dial(context.Background(), addr, "vol", 1, WithTimeout(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			start := time.Now()
			_, err = r.ReadAt(make([]byte, 4096), 0)
			if !errors.Is(err, errdefs.ErrUnavailable) || time.Since(start) > 2*time.Second {
				t.Fatalf("read: %v after %v, want unavailable at once", err, time.Since(start))
			}
			if r.Err() == nil {
				t.Fatal("Remote not broken")
			}
		})
	}
}

package nbd

import (
	"bufio"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// rawClient speaks the protocol byte by byte, so tests can also break it.
type rawClient struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawClient{t: t, c: c, r: bufio.NewReader(c)}
}

func (c *rawClient) read(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		c.t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// hello reads the server greeting and answers with client flags.
func (c *rawClient) hello(clientFlags uint32) {
	c.t.Helper()
	b := c.read(18)
	if be64(b) != nbdMagic || be64(b[8:]) != optMagic {
		c.t.Fatalf("bad greeting % x", b)
	}
	if f := be16(b[16:]); f != flagFixedNewstyle|flagNoZeroes {
		c.t.Fatalf("handshake flags %#x", f)
	}
	var f [4]byte
	put32(f[:], clientFlags)
	c.write(f[:])
}

func (c *rawClient) sendOpt(opt uint32, data []byte) {
	c.t.Helper()
	b := make([]byte, 16+len(data))
	put64(b, optMagic)
	put32(b[8:], opt)
	put32(b[12:], uint32(len(data)))
	copy(b[16:], data)
	c.write(b)
}

func (c *rawClient) optReply() (opt, typ uint32, data []byte) {
	c.t.Helper()
	h := c.read(20)
	if m := be64(h); m != repMagic {
		c.t.Fatalf("option reply magic %#x", m)
	}
	return be32(h[8:]), be32(h[12:]), c.read(int(be32(h[16:])))
}

func goData(name string, infos ...uint16) []byte {
	b := make([]byte, 4+len(name)+2+2*len(infos))
	put32(b, uint32(len(name)))
	copy(b[4:], name)
	put16(b[4+len(name):], uint16(len(infos)))
	for i, in := range infos {
		put16(b[6+len(name)+2*i:], in)
	}
	return b
}

// exportInfo is what NBD_OPT_INFO or NBD_OPT_GO told about an export.
type exportInfo struct {
	size                     uint64
	flags                    uint16
	minBS, prefBS, maxBS     uint32
	name                     string
	hasBlockSize, hasNameRep bool
}

// info sends NBD_OPT_INFO or NBD_OPT_GO and reads the replies up to the
// final one, whose type it returns.
func (c *rawClient) info(opt uint32, name string, infos ...uint16) (exportInfo, uint32) {
	c.t.Helper()
	c.sendOpt(opt, goData(name, infos...))
	var ei exportInfo
	for {
		o, typ, data := c.optReply()
		if o != opt {
			c.t.Fatalf("reply to option %d, want %d", o, opt)
		}
		if typ != repInfo {
			return ei, typ
		}
		switch be16(data) {
		case infoExport:
			if len(data) != 12 {
				c.t.Fatalf("NBD_INFO_EXPORT of %d bytes", len(data))
			}
			ei.size, ei.flags = be64(data[2:]), be16(data[10:])
		case infoBlockSize:
			if len(data) != 14 {
				c.t.Fatalf("NBD_INFO_BLOCK_SIZE of %d bytes", len(data))
			}
			ei.minBS, ei.prefBS, ei.maxBS = be32(data[2:]), be32(data[6:]), be32(data[10:])
			ei.hasBlockSize = true
		case infoName:
			ei.name, ei.hasNameRep = string(data[2:]), true
		}
	}
}

// open does the handshake and NBD_OPT_GO for export name.
func (c *rawClient) open(name string) exportInfo {
	c.t.Helper()
	c.hello(clientFlagFixedNewstyle | clientFlagNoZeroes)
	ei, typ := c.info(optGo, name, infoBlockSize)
	if typ != repAck {
		c.t.Fatalf("NBD_OPT_GO %q: reply %#x", name, typ)
	}
	return ei
}

func (c *rawClient) request(flags, typ uint16, handle, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	b := make([]byte, requestBytes+len(payload))
	put32(b, requestMagic)
	put16(b[4:], flags)
	put16(b[6:], typ)
	put64(b[8:], handle)
	put64(b[16:], off)
	put32(b[24:], length)
	copy(b[requestBytes:], payload)
	c.write(b)
}

// reply reads one simple reply header.
func (c *rawClient) reply() (handle uint64, errno uint32) {
	c.t.Helper()
	h := c.read(replyBytes)
	if m := be32(h); m != simpleRepMagic {
		c.t.Fatalf("reply magic %#x", m)
	}
	return be64(h[8:]), be32(h[4:])
}

// expectReply reads one reply and checks its handle and error.
func (c *rawClient) expectReply(handle uint64, errno uint32) {
	c.t.Helper()
	h, e := c.reply()
	if h != handle || e != errno {
		c.t.Fatalf("reply handle %d error %d; want handle %d error %d", h, e, handle, errno)
	}
}

// expectClosed checks that the server hangs up (after anything it still sends).
func (c *rawClient) expectClosed() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("server did not close the connection")
	}
}

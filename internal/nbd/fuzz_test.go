package nbd

import (
	"context"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzServer feeds arbitrary bytes to the server as a client stream, from
// the client flags on, and checks that the server neither panics nor hangs:
// once the client has sent everything and hung up, the connection must end.
// The seeds reach every option and command; the corpus under
// testdata/fuzz/FuzzServer holds the same streams.
func FuzzServer(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	be := newFileBackend(f, 1<<20)
	ex := newTestExports(map[string]Backend{"vol": be, "": be})
	srv := NewServer(ex, WithHandshakeTimeout(2*time.Second), WithWorkers(4), WithMaxInFlight(8))
	srv.cfg.payloadTimeout = 2 * time.Second

	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			srv.serveConn(context.Background(), server)
		}()
		go io.Copy(io.Discard, client) // replies; ends when client closes
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		client.Write(stream) // fails early if the server hangs up first
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("server still serving 10 s after the client hung up")
		}
	})
}

// fuzzSeeds are client streams, valid and not.
func fuzzSeeds() [][]byte {
	flags := func(f uint32) []byte { b := make([]byte, 4); put32(b, f); return b }
	opt := func(o uint32, data []byte) []byte {
		b := make([]byte, 16+len(data))
		put64(b, optMagic)
		put32(b[8:], o)
		put32(b[12:], uint32(len(data)))
		copy(b[16:], data)
		return b
	}
	req := func(fl, typ uint16, handle, off uint64, length uint32, payload []byte) []byte {
		b := make([]byte, requestBytes+len(payload))
		put32(b, requestMagic)
		put16(b[4:], fl)
		put16(b[6:], typ)
		put64(b[8:], handle)
		put64(b[16:], off)
		put32(b[24:], length)
		copy(b[requestBytes:], payload)
		return b
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	hello := flags(clientFlagFixedNewstyle | clientFlagNoZeroes)
	goVol := opt(optGo, goData("vol", infoBlockSize, infoName))
	payload := make([]byte, 512)
	for i := range payload {
		payload[i] = byte(i)
	}
	return [][]byte{
		// every command, then a clean disconnect
		cat(hello, goVol,
			req(0, cmdWrite, 1, 0, 512, payload),
			req(cmdFlagFUA, cmdWrite, 2, 4096, 512, payload),
			req(0, cmdRead, 3, 0, 4096, nil),
			req(0, cmdFlush, 4, 0, 0, nil),
			req(0, cmdTrim, 5, 0, 4096, nil),
			req(cmdFlagNoHole, cmdWriteZeroes, 6, 8192, 4096, nil),
			req(cmdFlagFastZero, cmdWriteZeroes, 7, 8192, 4096, nil),
			req(0, cmdDisc, 8, 0, 0, nil)),
		// options before GO
		cat(hello, opt(optList, nil), opt(optInfo, goData("vol")), opt(optStructuredReply, nil),
			opt(optInfo, goData("missing")), opt(99, []byte("x")), goVol,
			req(0, cmdRead, 1, 0, 512, nil)),
		cat(hello, opt(optAbort, nil)),
		// old-style export name, with zero padding
		cat(flags(clientFlagFixedNewstyle), opt(optExportName, []byte("vol")),
			req(0, cmdRead, 1, 1<<20-512, 512, nil), req(0, cmdWrite, 2, 1<<20, 512, payload)),
		// errors in transmission
		cat(hello, goVol,
			req(0, 99, 1, 0, 0, nil),
			req(0, cmdRead, 2, 1<<63, 512, nil),
			req(0, cmdRead, 3, 0, MaxPayload+1, nil),
			req(cmdFlagDF, cmdRead, 4, 0, 512, nil),
			req(0, cmdWrite, 5, 0, 0xffffffff, nil)),
		// a write that stops mid-payload
		cat(hello, goVol, req(0, cmdWrite, 1, 0, 1<<20, payload)),
		// bad magic in each phase
		cat(hello, goVol, []byte("garbage garbage garbage garbage")),
		cat(hello, []byte("IHAVEOPX\x00\x00\x00\x07\x00\x00\x00\x00")),
		cat(hello, opt(optGo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})),
		flags(0xffffffff),
		{},
	}
}

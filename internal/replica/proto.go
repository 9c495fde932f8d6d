package replica

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"syscall"

	"github.com/strata-storage/strata/internal/errdefs"
)

// MaxPayload is the largest payload of a request or reply, and so the
// largest read or write one request carries; Remote splits longer ones.
const MaxPayload = 32 << 20

const (
	reqMagic       = 0x53545251 // "STRQ"
	replyMagic     = 0x53545250 // "STRP"
	reqHeaderLen   = 36
	replyHeaderLen = 20
	protoVersion   = 1

	// maxMessage bounds the message of an error reply.
	maxMessage = 4096
	// maxHelloPayload bounds the hello's payload (a volume name).
	maxHelloPayload = 4096
	// maxChecksumRegions bounds the regions of one checksums request, so
	// that the reply fits in MaxPayload.
	maxChecksumRegions = MaxPayload / sha256.Size
	// maxExtentsPerReply bounds one extents reply (16 MiB).
	maxExtentsPerReply = 1 << 20
)

// op is a request's operation.
type op uint16

const (
	opHello op = 1 + iota
	opRead
	opWrite
	opFlush
	opTrim
	opZeroes
	opSize
	opGrow
	opSnapshot
	opCreate
	opDelete
	opList
	opChecksums
	opExtents
	opRevert
	opSnapshots
	opDeleteSnapshot
	opCheckpoint
	opDirty
	opClone
	opEnd // first unknown op
)

var opNames = [...]string{
	opHello: "hello", opRead: "read", opWrite: "write", opFlush: "flush",
	opTrim: "trim", opZeroes: "write-zeroes", opSize: "size", opGrow: "grow",
	opSnapshot: "snapshot", opCreate: "create", opDelete: "delete",
	opList: "list", opChecksums: "checksums", opExtents: "extents",
	opRevert: "revert", opSnapshots: "snapshots", opDeleteSnapshot: "delete-snapshot",
	opCheckpoint: "checkpoint", opDirty: "dirty", opClone: "clone",
}

func (o op) String() string {
	if o > 0 && o < opEnd {
		return opNames[o]
	}
	return fmt.Sprintf("op %d", uint16(o))
}

// dataOp reports whether o works on the connection's volume through its
// fence, and so needs a hello with a volume.
func (o op) dataOp() bool {
	return o >= opRead && o <= opSnapshot || o == opRevert || o == opCheckpoint
}

// reqHeader is a request header; see the package comment.
type reqHeader struct {
	op     op
	flags  uint16
	handle uint64
	off    uint64
	length uint64
	plen   uint32
}

var errBadMagic = errors.New("bad magic")

func (h *reqHeader) put(b []byte) {
	_ = b[reqHeaderLen-1]
	binary.BigEndian.PutUint32(b[0:], reqMagic)
	binary.BigEndian.PutUint16(b[4:], uint16(h.op))
	binary.BigEndian.PutUint16(b[6:], h.flags)
	binary.BigEndian.PutUint64(b[8:], h.handle)
	binary.BigEndian.PutUint64(b[16:], h.off)
	binary.BigEndian.PutUint64(b[24:], h.length)
	binary.BigEndian.PutUint32(b[32:], h.plen)
}

// parseReqHeader decodes a request header. Only a bad magic is an error
// here: everything else is the server's to judge, with the handle known.
func parseReqHeader(b []byte) (reqHeader, error) {
	if len(b) < reqHeaderLen {
		return reqHeader{}, fmt.Errorf("short request header (%d bytes)", len(b))
	}
	if m := binary.BigEndian.Uint32(b); m != reqMagic {
		return reqHeader{}, fmt.Errorf("request magic %#x: %w", m, errBadMagic)
	}
	return reqHeader{
		op:     op(binary.BigEndian.Uint16(b[4:])),
		flags:  binary.BigEndian.Uint16(b[6:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		off:    binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint64(b[24:]),
		plen:   binary.BigEndian.Uint32(b[32:]),
	}, nil
}

// replyHeader is a reply header; see the package comment.
type replyHeader struct {
	status uint16
	handle uint64
	plen   uint32
}

func (h *replyHeader) put(b []byte) {
	_ = b[replyHeaderLen-1]
	binary.BigEndian.PutUint32(b[0:], replyMagic)
	binary.BigEndian.PutUint16(b[4:], h.status)
	binary.BigEndian.PutUint16(b[6:], 0)
	binary.BigEndian.PutUint64(b[8:], h.handle)
	binary.BigEndian.PutUint32(b[16:], h.plen)
}

func parseReplyHeader(b []byte) (replyHeader, error) {
	if len(b) < replyHeaderLen {
		return replyHeader{}, fmt.Errorf("short reply header (%d bytes)", len(b))
	}
	if m := binary.BigEndian.Uint32(b); m != replyMagic {
		return replyHeader{}, fmt.Errorf("reply magic %#x: %w", m, errBadMagic)
	}
	if z := binary.BigEndian.Uint16(b[6:]); z != 0 {
		return replyHeader{}, fmt.Errorf("reply reserved field %#x is not zero", z)
	}
	return replyHeader{
		status: binary.BigEndian.Uint16(b[4:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		plen:   binary.BigEndian.Uint32(b[16:]),
	}, nil
}

// appendStr appends s as a str (2-byte length, bytes).
func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// encodeStrs encodes ss as consecutive strs; a string longer than 65535
// bytes is errdefs.ErrInvalidArgument.
func encodeStrs(prefix []byte, ss ...string) ([]byte, error) {
	b := prefix
	for _, s := range ss {
		if len(s) > math.MaxUint16 {
			return nil, fmt.Errorf("replica: string of %d bytes is too long: %w", len(s), errdefs.ErrInvalidArgument)
		}
		b = appendStr(b, s)
	}
	return b, nil
}

// decodeStrs decodes a payload of strs: exactly n of them when n >= 0, as
// many as there are when n < 0. Bytes left over are an error.
func decodeStrs(b []byte, n int) ([]string, error) {
	var out []string
	for len(b) > 0 && (n < 0 || len(out) < n) {
		if len(b) < 2 {
			return nil, fmt.Errorf("truncated string length: %w", errdefs.ErrInvalidArgument)
		}
		l := int(binary.BigEndian.Uint16(b))
		if len(b)-2 < l {
			return nil, fmt.Errorf("string of %d bytes overruns the payload: %w", l, errdefs.ErrInvalidArgument)
		}
		out = append(out, string(b[2:2+l]))
		b = b[2+l:]
	}
	if len(b) > 0 {
		return nil, fmt.Errorf("%d bytes after the last string: %w", len(b), errdefs.ErrInvalidArgument)
	}
	if n >= 0 && len(out) != n {
		return nil, fmt.Errorf("payload holds %d strings, want %d: %w", len(out), n, errdefs.ErrInvalidArgument)
	}
	return out, nil
}

// Reply status codes; see the package comment.
const (
	statusOK uint16 = iota
	statusInvalidArgument
	statusNotFound
	statusAlreadyExists
	statusFailedPrecondition
	statusNoSpace
	statusUnavailable
	statusStaleEpoch
	statusInternal
)

// statusOf maps an error to its reply status. ErrStaleEpoch comes before
// ErrFailedPrecondition, which it wraps.
func statusOf(err error) uint16 {
	switch {
	case err == nil:
		return statusOK
	case errors.Is(err, ErrStaleEpoch):
		return statusStaleEpoch
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return statusInvalidArgument
	case errors.Is(err, errdefs.ErrNotFound):
		return statusNotFound
	case errors.Is(err, errdefs.ErrAlreadyExists):
		return statusAlreadyExists
	case errors.Is(err, errdefs.ErrFailedPrecondition):
		return statusFailedPrecondition
	case errors.Is(err, errdefs.ErrNoSpace), errors.Is(err, syscall.EDQUOT):
		return statusNoSpace
	case errors.Is(err, errdefs.ErrUnavailable):
		return statusUnavailable
	default:
		return statusInternal
	}
}

// wireError is an error the server replied with: its message, and the
// sentinel its status stands for.
type wireError struct {
	msg    string
	target error // nil for statusInternal
}

func (e *wireError) Error() string { return e.msg }
func (e *wireError) Unwrap() error { return e.target }

// errorOf rebuilds the error of an error reply.
func errorOf(status uint16, msg string) error {
	var target error
	switch status {
	case statusInvalidArgument:
		target = errdefs.ErrInvalidArgument
	case statusNotFound:
		target = errdefs.ErrNotFound
	case statusAlreadyExists:
		target = errdefs.ErrAlreadyExists
	case statusFailedPrecondition:
		target = errdefs.ErrFailedPrecondition
	case statusNoSpace:
		target = errdefs.ErrNoSpace
	case statusUnavailable:
		target = errdefs.ErrUnavailable
	case statusStaleEpoch:
		target = ErrStaleEpoch
	}
	if msg == "" {
		msg = fmt.Sprintf("error status %d", status)
	}
	return &wireError{msg: msg, target: target}
}

// errMessage is the payload of an error reply for err.
func errMessage(err error) []byte {
	msg := err.Error()
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	return []byte(msg)
}

// Payload buffers come from pools of power-of-two sizes, 4 KiB to
// MaxPayload, so that a busy connection does not allocate per request.
const (
	minBufShift = 12
	maxBufShift = 25 // MaxPayload
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func bufClass(n int) int {
	return max(bits.Len(uint(n-1)), minBufShift) - minBufShift
}

// getBuf returns a buffer of length n (0 < n <= MaxPayload).
func getBuf(n int) *[]byte {
	cls := bufClass(n)
	if p, _ := bufPools[cls].Get().(*[]byte); p != nil {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(cls+minBufShift))
	return &b
}

// putBuf gives back a buffer of getBuf; nil is ignored.
func putBuf(p *[]byte) {
	if p == nil {
		return
	}
	cls := bufClass(cap(*p))
	if cls >= len(bufPools) || cap(*p) != 1<<(cls+minBufShift) {
		return
	}
	bufPools[cls].Put(p)
}

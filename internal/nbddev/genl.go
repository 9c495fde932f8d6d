package nbddev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The nbd generic netlink family (include/uapi/linux/nbd-netlink.h and
// nbd.h). Attributes are in host byte order.
const (
	familyName  = "nbd"
	genlVersion = 1

	cmdConnect     = 1
	cmdDisconnect  = 2
	cmdReconfigure = 3

	attrIndex             = 1 // u32
	attrSizeBytes         = 2 // u64
	attrBlockSizeBytes    = 3 // u64
	attrServerFlags       = 5 // u64
	attrClientFlags       = 6 // u64
	attrSockets           = 7 // nested: sockItem
	attrBackendIdentifier = 10

	sockItem = 1 // nested: sockFD
	sockFD   = 1 // u32

	// clientFlagDisconnectOnClose makes the last close of the device
	// disconnect it, as LO_FLAGS_AUTOCLEAR does for a loop device.
	clientFlagDisconnectOnClose = 1 << 1
)

// genlHdrLen is the size of struct genlmsghdr: command, version, reserved.
const genlHdrLen = 4

// netlinkTimeout bounds the wait for the kernel's answer to one request.
const netlinkTimeout = 30 * time.Second

// attrs builds the attributes of a netlink message.
type attrs []byte

func (a *attrs) put(typ uint16, payload []byte) {
	var h [unix.SizeofNlAttr]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(unix.SizeofNlAttr+len(payload)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	*a = append(*a, h[:]...)
	*a = append(*a, payload...)
	for len(*a)%unix.NLA_ALIGNTO != 0 {
		*a = append(*a, 0)
	}
}

func (a *attrs) u32(typ uint16, v uint32) {
	a.put(typ, binary.NativeEndian.AppendUint32(nil, v))
}

func (a *attrs) u64(typ uint16, v uint64) {
	a.put(typ, binary.NativeEndian.AppendUint64(nil, v))
}

func (a *attrs) str(typ uint16, s string) { a.put(typ, append([]byte(s), 0)) }

// parseAttrs returns the attributes of b by type (the last of each type).
func parseAttrs(b []byte) map[uint16][]byte {
	out := map[uint16][]byte{}
	for len(b) >= unix.SizeofNlAttr {
		l := int(binary.NativeEndian.Uint16(b[0:]))
		typ := binary.NativeEndian.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofNlAttr || l > len(b) {
			break
		}
		out[typ] = b[unix.SizeofNlAttr:l]
		l = (l + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1)
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return out
}

// genl is a generic netlink socket talking to one family.
type genl struct {
	fd     int
	family uint16
}

var seq atomic.Uint32

// openGenl opens a generic netlink socket and resolves the nbd family.
// Resolving it makes the kernel load the nbd module when it can; a kernel
// without the module answers ENOENT.
func openGenl() (*genl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(netlinkTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	g := &genl{fd: fd, family: unix.GENL_ID_CTRL}
	var a attrs
	a.str(unix.CTRL_ATTR_FAMILY_NAME, familyName)
	reply, err := g.request(unix.CTRL_CMD_GETFAMILY, 1, a)
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("the kernel has no nbd module (modprobe nbd): %w", err)
		}
		return nil, fmt.Errorf("resolve the nbd netlink family: %w", err)
	}
	id, ok := reply[unix.CTRL_ATTR_FAMILY_ID]
	if !ok || len(id) < 2 {
		unix.Close(fd)
		return nil, errors.New("resolve the nbd netlink family: no family id in the answer")
	}
	g.family = binary.NativeEndian.Uint16(id)
	return g, nil
}

func (g *genl) close() { unix.Close(g.fd) }

// request sends one command and waits for the kernel's acknowledgement; it
// returns the attributes of the answer the kernel sent before it, if any.
func (g *genl) request(cmd, version uint8, a attrs) (map[uint16][]byte, error) {
	s := seq.Add(1)
	msg := make([]byte, unix.SizeofNlMsghdr+genlHdrLen, unix.SizeofNlMsghdr+genlHdrLen+len(a))
	msg = append(msg, a...)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], g.family)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], s)
	msg[unix.SizeofNlMsghdr] = cmd
	msg[unix.SizeofNlMsghdr+1] = version
	if err := unix.Sendto(g.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}
	var reply map[uint16][]byte
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(g.fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		b := buf[:n]
		for len(b) >= unix.SizeofNlMsghdr {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			typ := binary.NativeEndian.Uint16(b[4:])
			mseq := binary.NativeEndian.Uint32(b[8:])
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return nil, errors.New("netlink receive: malformed message")
			}
			body := b[unix.SizeofNlMsghdr:l]
			b = b[min((l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b)):]
			if mseq != s {
				continue // an answer to an earlier request that timed out
			}
			switch {
			case typ == unix.NLMSG_ERROR:
				if len(body) < 4 {
					return nil, errors.New("netlink receive: short error message")
				}
				if e := int32(binary.NativeEndian.Uint32(body)); e != 0 {
					return nil, unix.Errno(-e)
				}
				return reply, nil
			case typ == unix.NLMSG_DONE:
				return reply, nil
			case len(body) >= genlHdrLen:
				// A copy: the next receive reuses buf.
				reply = parseAttrs(bytes.Clone(body[genlHdrLen:]))
			}
		}
	}
}

// Package nbddev attaches volumes as block devices of this host through the
// kernel's NBD client, /dev/nbdN, served by this process.
//
// For each device the package makes a unix socket pair, serves one end with
// an nbd.Server (the node's own export table, so the volume is opened the
// way an NBD client opens it), runs the client side of the handshake on the
// other end in Go (fixed newstyle, NBD_OPT_GO) and hands that end to the
// kernel with the nbd generic netlink family (NBD_CMD_CONNECT): the kernel
// picks a free device, or makes one. Growth is NBD_CMD_RECONFIGURE with the
// new size.
//
// Like a loop device attached with LO_FLAGS_AUTOCLEAR, the device is
// disconnected by its last close (NBD_CFLAG_DISCONNECT_ON_CLOSE): this
// process keeps it open while it is attached, and Detach closes it, so a
// device still mounted or open elsewhere stays until its last user lets go.
// Every device carries a backend identifier (/sys/block/nbdN/backend) made
// of the attacher's identity and the volume's name, which is how Cleanup
// finds the devices a dead process left.
//
// The devices work only while this process runs: when it dies, their
// socket closes and I/O on them fails.
package nbddev

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/mountinfo"
	"github.com/strata-storage/strata/internal/nbd"
)

// blockSize is the devices' logical block size: 512, as a loop device's,
// so that a filesystem made through either one mounts through the other.
const blockSize = 512

// detachWait bounds how long Detach waits for the kernel to let go of a
// device and for the connection to end (shorter in tests).
var detachWait = 10 * time.Second

// Available says whether the kernel's NBD client can be used: the nbd
// generic netlink family exists, or the kernel loaded the nbd module when
// asked for it. The error says why not.
func Available() error {
	g, err := openGenl()
	if err != nil {
		return fmt.Errorf("nbddev: %w", err)
	}
	g.close()
	return nil
}

// Attacher attaches the exports of an NBD server as /dev/nbdN. It is safe
// for concurrent use.
type Attacher struct {
	srv *nbd.Server
	// prefix starts the backend identifier of every device it attaches.
	prefix string
}

// New returns an Attacher of the exports srv serves. identity names the
// owner of the devices among the processes of this host (a node's state
// directory): Cleanup(identity) removes what an Attacher of the same
// identity left when its process died.
func New(srv *nbd.Server, identity string) *Attacher {
	return &Attacher{srv: srv, prefix: backendPrefix(identity)}
}

func backendPrefix(identity string) string { return "strata:" + identity + ":" }

// Device is a volume attached as /dev/nbdN. Its methods are safe for
// concurrent use.
type Device struct {
	mu      sync.Mutex
	index   int
	path    string
	backend string
	fd      int // our descriptor of the device; -1 once closed
	cancel  context.CancelFunc
	served  chan struct{}
	done    bool
}

// Attach attaches export name as a free /dev/nbdN, read-only when readOnly.
// An export the server does not have wraps errdefs.ErrNotFound. ctx bounds
// the handshake; it is not kept.
func (a *Attacher) Attach(ctx context.Context, name string, readOnly bool) (_ *Device, retErr error) {
	defer func() {
		if retErr != nil {
			retErr = fmt.Errorf("nbddev: attach %s: %w", name, retErr)
		}
	}()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket pair: %w", err)
	}
	kernelFD := fds[1]
	defer func() {
		if kernelFD >= 0 {
			unix.Close(kernelFD)
		}
	}()
	srvConn, err := fileConn(fds[0])
	if err != nil {
		unix.Close(kernelFD)
		kernelFD = -1
		return nil, err
	}
	serveCtx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		a.srv.ServeConn(serveCtx, srvConn)
	}()
	d := &Device{fd: -1, cancel: cancel, served: served}
	defer func() {
		if retErr != nil {
			d.abort()
		}
	}()

	exp, err := handshake(ctx, kernelFD, name)
	if err != nil {
		return nil, err
	}
	if exp.Size <= 0 || exp.Size%blockSize != 0 {
		return nil, fmt.Errorf("export size %d is not a positive multiple of %d: %w", exp.Size, blockSize, errdefs.ErrInvalidArgument)
	}
	flags := exp.Flags
	if readOnly {
		flags |= nbd.FlagReadOnly
	}
	// The kernel does blocking I/O on the socket.
	if err := unix.SetNonblock(kernelFD, false); err != nil {
		return nil, err
	}
	tag := make([]byte, 6)
	rand.Read(tag)
	d.backend = a.prefix + name + ":" + hex.EncodeToString(tag)

	g, err := openGenl()
	if err != nil {
		return nil, err
	}
	defer g.close()
	var at attrs
	at.u64(attrSizeBytes, uint64(exp.Size))
	at.u64(attrBlockSizeBytes, blockSize)
	at.u64(attrServerFlags, uint64(flags))
	at.str(attrBackendIdentifier, d.backend)
	var item, socks attrs
	item.u32(sockFD, uint32(kernelFD))
	socks.put(sockItem, item)
	at.put(attrSockets, socks)
	// No request timeout (the kernel waits as long as a request takes, as
	// FUSE does) and no dead connection timeout: nothing reconnects a
	// socket this process lost, so I/O should fail at once.
	reply, err := g.request(cmdConnect, genlVersion, at)
	if err != nil {
		return nil, fmt.Errorf("NBD_CMD_CONNECT: %w", err)
	}
	// The kernel answers with the device's index; some kernels send the
	// answer after the acknowledgement, so the identifier finds it too.
	d.index = -1
	if idx := reply[attrIndex]; len(idx) >= 4 {
		d.index = int(binary.NativeEndian.Uint32(idx))
	} else if ns := devicesWith(func(b string) bool { return b == d.backend }); len(ns) == 1 {
		d.index = ns[0]
	}
	d.path = fmt.Sprintf("/dev/nbd%d", d.index)
	if d.index < 0 || sysfs(d.index, "backend") != d.backend {
		// Detach and Cleanup recognize the device by its identifier.
		d.path = ""
		return nil, fmt.Errorf("NBD_CMD_CONNECT: no /sys/block/nbdN/backend shows %q (the kernel NBD client needs Linux 5.14 or later): %w",
			d.backend, errdefs.ErrFailedPrecondition)
	}
	// The kernel holds the socket now.
	unix.Close(kernelFD)
	kernelFD = -1

	// Open the device before asking for the disconnect on last close: a
	// udev probe that opened and closed it first would disconnect it.
	mode := unix.O_RDWR
	if readOnly {
		mode = unix.O_RDONLY
	}
	if d.fd, err = openNode(d.path, mode); err != nil {
		return nil, err
	}
	var rc attrs
	rc.u32(attrIndex, uint32(d.index))
	rc.str(attrBackendIdentifier, d.backend)
	rc.u64(attrClientFlags, clientFlagDisconnectOnClose)
	if _, err := g.request(cmdReconfigure, genlVersion, rc); err != nil {
		return nil, fmt.Errorf("NBD_CMD_RECONFIGURE %s: %w", d.path, err)
	}
	return d, nil
}

// abort undoes a failed Attach: it disconnects the device if the kernel
// has it and ends the connection.
func (d *Device) abort() {
	if d.path != "" {
		if d.fd >= 0 {
			unix.Close(d.fd)
			d.fd = -1
		}
		disconnect(d.index)
		waitDetached(d.index, d.backend, detachWait)
	}
	d.cancel()
	<-d.served
}

// handshake runs the client side of the NBD handshake on fd.
func handshake(ctx context.Context, fd int, name string) (nbd.Export, error) {
	// The net.Conn works on a duplicate of fd, closed here; fd stays.
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nbd.Export{}, err
	}
	c, err := fileConn(dup)
	if err != nil {
		return nbd.Export{}, err
	}
	defer c.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	exp, err := nbd.Handshake(c, name)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w: %w", err, ctx.Err())
	}
	return exp, err
}

// fileConn makes a net.Conn of fd, which it takes over.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "nbd-server")
	defer f.Close()
	return net.FileConn(f)
}

// openNode opens the device node; devtmpfs makes the node of a device the
// kernel has just added a moment later.
func openNode(path string, mode int) (int, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		fd, err := unix.Open(path, mode|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) || time.Now().After(deadline) {
			return -1, fmt.Errorf("open %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Path returns the device's path, /dev/nbdN.
func (d *Device) Path() string { return d.path }

// Grow makes the device size bytes long, online (NBD_CMD_RECONFIGURE).
// The same size is a no-op; a smaller one is refused.
func (d *Device) Grow(size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done || d.fd < 0 {
		return fmt.Errorf("nbddev: grow %s: not attached: %w", d.path, errdefs.ErrFailedPrecondition)
	}
	cur, err := deviceSize(d.index)
	if err != nil {
		return fmt.Errorf("nbddev: grow %s: %w", d.path, err)
	}
	switch {
	case size == cur:
		return nil
	case size < cur:
		return fmt.Errorf("nbddev: grow %s: cannot shrink from %d to %d bytes: %w", d.path, cur, size, errdefs.ErrFailedPrecondition)
	case size%blockSize != 0:
		return fmt.Errorf("nbddev: grow %s: size %d is not a multiple of %d: %w", d.path, size, blockSize, errdefs.ErrInvalidArgument)
	}
	g, err := openGenl()
	if err != nil {
		return fmt.Errorf("nbddev: grow %s: %w", d.path, err)
	}
	defer g.close()
	var a attrs
	a.u32(attrIndex, uint32(d.index))
	a.str(attrBackendIdentifier, d.backend)
	a.u64(attrSizeBytes, uint64(size))
	if _, err := g.request(cmdReconfigure, genlVersion, a); err != nil {
		return fmt.Errorf("nbddev: grow %s: NBD_CMD_RECONFIGURE: %w", d.path, err)
	}
	if got, err := deviceSize(d.index); err != nil || got != size {
		return fmt.Errorf("nbddev: grow %s: the kernel kept %d bytes, not %d (its NBD client cannot resize a device attached through netlink): %w",
			d.path, got, size, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// Detach writes back the device's page cache and closes this process's
// descriptor of it, which disconnects it when no one else has it open, then
// waits for the kernel to let go and the connection to end. While the
// device is open elsewhere (a filesystem mounted from it, a process) it
// returns an error wrapping errdefs.ErrFailedPrecondition after a while;
// the device then disconnects on its last close, and a later Detach
// finishes. Once Detach has returned nil, it returns nil again.
func (d *Device) Detach() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return nil
	}
	if d.fd >= 0 {
		unix.Fsync(d.fd)
		unix.Close(d.fd)
		d.fd = -1
	}
	if !waitDetached(d.index, d.backend, detachWait) {
		return fmt.Errorf("nbddev: %s is still in use (a filesystem mounted from it, or a process with the device open): %w", d.path, errdefs.ErrFailedPrecondition)
	}
	select {
	case <-d.served:
	case <-time.After(detachWait):
		// The kernel has let go; the connection is of no use any more.
		d.cancel()
		<-d.served
	}
	d.cancel()
	d.done = true
	return nil
}

// Index returns N of /dev/nbdN.
func (d *Device) Index() int { return d.index }

// Cleanup removes the devices an Attacher of identity left when its process
// died (kill -9, a crash): it lazily unmounts (MNT_DETACH) the filesystems
// mounted from each, which frees their targets, and disconnects the device,
// which fails the I/O still waiting on it. Call it when the daemon starts,
// before it attaches anything. Devices of other owners are left alone.
func Cleanup(identity string) error {
	prefix := backendPrefix(identity)
	stale := devicesWith(func(b string) bool { return strings.HasPrefix(b, prefix) })
	if len(stale) == 0 {
		return nil
	}
	ms, err := mountinfo.Read()
	if err != nil {
		return fmt.Errorf("nbddev: cleanup: %w", err)
	}
	var errs []error
	for _, n := range stale {
		if err := mountinfo.DetachDevice(ms, sysfs(n, "dev")); err != nil {
			errs = append(errs, fmt.Errorf("nbddev: %w", err))
		}
		if err := disconnect(n); err != nil {
			errs = append(errs, fmt.Errorf("nbddev: disconnect stale /dev/nbd%d: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// devicesWith returns the numbers of the nbd devices whose backend
// identifier passes match.
func devicesWith(match func(backend string) bool) []int {
	dirs, _ := filepath.Glob("/sys/block/nbd*")
	var out []int
	for _, dir := range dirs {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "nbd"))
		if err != nil {
			continue
		}
		if b := sysfs(n, "backend"); b != "" && match(b) {
			out = append(out, n)
		}
	}
	return out
}

// disconnect asks the kernel to disconnect device n (NBD_CMD_DISCONNECT).
func disconnect(n int) error {
	g, err := openGenl()
	if err != nil {
		return err
	}
	defer g.close()
	var a attrs
	a.u32(attrIndex, uint32(n))
	_, err = g.request(cmdDisconnect, genlVersion, a)
	return err
}

// waitDetached waits until device n no longer carries backend, and reports
// whether that happened within wait.
func waitDetached(n int, backend string, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for sysfs(n, "backend") == backend {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// sysfs reads attribute attr of device n, "" when it has none.
func sysfs(n int, attr string) string {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/nbd%d/%s", n, attr))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// deviceSize returns the size of device n in bytes.
func deviceSize(n int) (int64, error) {
	sectors, err := strconv.ParseInt(sysfs(n, "size"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size of /dev/nbd%d: %w", n, err)
	}
	return sectors * 512, nil
}

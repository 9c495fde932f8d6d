package fusefile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const (
	// maxIO is the largest READ/WRITE the kernel sends us (1 MiB, the
	// kernel's limit with the default fs.fuse.max_pages_limit).
	maxIO = 1 << 20
	// fuseSubtype names our FUSE mounts in /proc/self/mountinfo
	// ("fuse.strata-fusefile"), which is how Cleanup recognizes them.
	fuseSubtype = "strata-fusefile"
)

// WriteZeroer is an optional ability of a Device: WriteZeroes makes the range
// read as zeroes, cheaper than writing zero buffers (for example by recording
// the range as zeroed). Without it, zero-range requests from the loop device
// are served by writing zeroes.
type WriteZeroer interface {
	WriteZeroes(off, length int64) error
}

// fileNode is the one regular file of the FUSE mount; its content is the
// device. The kernel calls its methods from many goroutines at once; its
// only mutable field is the size (atomic, raised by Mounted.Grow), so it is
// as safe for concurrent use as the Device.
type fileNode struct {
	fs.Inode
	dev      Device
	sz       atomic.Int64
	readOnly bool
	mtime    time.Time
}

var (
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeSetattrer = (*fileNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeWriter    = (*fileNode)(nil)
	_ fs.NodeFsyncer   = (*fileNode)(nil)
	_ fs.NodeFlusher   = (*fileNode)(nil)
	_ fs.NodeAllocater = (*fileNode)(nil)
)

func (n *fileNode) fillAttr(out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | 0o600
	if n.readOnly {
		out.Mode = syscall.S_IFREG | 0o400
	}
	size := n.sz.Load()
	out.Size = uint64(size)
	out.Blocks = (uint64(size) + 511) / 512
	out.Blksize = 4096
	out.Nlink = 1
	out.SetTimes(nil, &n.mtime, &n.mtime)
}

func (n *fileNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fillAttr(&out.Attr)
	return 0
}

// Setattr refuses size changes: the file is the device and its size is the
// volume's. Mode and time changes are accepted and ignored.
func (n *fileNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok && int64(sz) != n.sz.Load() {
		return syscall.EPERM
	}
	n.fillAttr(&out.Attr)
	return 0
}

// Open returns FOPEN_DIRECT_IO so that the kernel keeps no page cache for the
// file: every read reaches the device, so nothing stale survives a snapshot
// revert or any change made below us. FOPEN_PARALLEL_DIRECT_WRITES lets the
// loop device's writes run concurrently instead of one at a time.
func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		return nil, 0, syscall.EPERM
	}
	if n.readOnly && flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES, 0
}

func (n *fileNode) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	size := n.sz.Load()
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	want := int(min(int64(len(dest)), size-off))
	got, err := n.dev.ReadAt(dest[:want], off)
	if err != nil && !(errors.Is(err, io.EOF) && got == want) {
		return nil, toErrno(err)
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n *fileNode) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.readOnly {
		return 0, syscall.EROFS
	}
	if off < 0 {
		return 0, syscall.EINVAL
	}
	size := n.sz.Load()
	if off >= size {
		return 0, syscall.ENOSPC
	}
	want := int(min(int64(len(data)), size-off))
	got, err := n.dev.WriteAt(data[:want], off)
	if err != nil {
		if got > 0 {
			return uint32(got), 0
		}
		return 0, toErrno(err)
	}
	return uint32(got), 0
}

func (n *fileNode) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	return toErrno(n.dev.Flush())
}

// Flush is close(2) of a file descriptor (the loop device's, when it is
// detached): make what was written durable.
func (n *fileNode) Flush(ctx context.Context, fh fs.FileHandle) syscall.Errno {
	if n.readOnly {
		return 0
	}
	return toErrno(n.dev.Flush())
}

// Allocate serves fallocate(2). The loop device turns discards into
// PUNCH_HOLE and write-zeroes into PUNCH_HOLE or ZERO_RANGE. Never return
// ENOSYS here: the kernel would stop sending fallocate for good.
func (n *fileNode) Allocate(ctx context.Context, fh fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	if n.readOnly {
		return syscall.EROFS
	}
	start := int64(off)
	if start < 0 || int64(size) < 0 {
		return syscall.EINVAL
	}
	end := min(start+int64(size), n.sz.Load())
	if start >= end {
		return 0
	}
	const keep = unix.FALLOC_FL_KEEP_SIZE
	switch mode &^ keep {
	case unix.FALLOC_FL_PUNCH_HOLE:
		return toErrno(n.dev.Trim(start, end-start))
	case unix.FALLOC_FL_ZERO_RANGE, unix.FALLOC_FL_WRITE_ZEROES:
		return toErrno(n.writeZeroes(start, end-start))
	case 0:
		// Preallocation: the device is thin and cannot reserve space;
		// claiming success would promise what we cannot keep.
		return syscall.EOPNOTSUPP
	default:
		return syscall.EOPNOTSUPP
	}
}

func (n *fileNode) writeZeroes(off, length int64) error {
	if z, ok := n.dev.(WriteZeroer); ok {
		return z.WriteZeroes(off, length)
	}
	buf := make([]byte, min(length, maxIO))
	for length > 0 {
		chunk := min(length, int64(len(buf)))
		if _, err := n.dev.WriteAt(buf[:chunk], off); err != nil {
			return err
		}
		off += chunk
		length -= chunk
	}
	return nil
}

// toErrno maps a device error to the errno the kernel passes on to the loop
// device: an errno in the chain (ENOSPC, EROFS) keeps its meaning, anything
// else is an I/O error.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		return errno
	}
	return syscall.EIO
}

// fuseServer is the FUSE mount serving one device as mnt/<name>.
type fuseServer struct {
	mnt  string
	node *fileNode
	srv  *fuse.Server
	done chan struct{} // closed when Serve has returned
}

// startFUSE mounts a FUSE filesystem at mnt with one file, name, whose
// content is dev, and serves it until stop.
//
// The mount is made here rather than by go-fuse so that the /dev/fuse
// descriptor is close-on-exec from the start: a child process (mkfs, blkid,
// anything the daemon runs) that inherited it would keep the connection
// alive after the daemon dies, and the mount would hang instead of failing.
func startFUSE(mnt, name string, dev Device, readOnly bool) (*fuseServer, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	data := fmt.Sprintf("fd=%d,rootmode=%o,user_id=%d,group_id=%d,max_read=%d",
		fd, syscall.S_IFDIR, unix.Geteuid(), unix.Getegid(), maxIO)
	if err := unix.Mount("strata:"+name, mnt, "fuse."+fuseSubtype, unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount fuse at %s: %w", mnt, err)
	}

	root := &fs.Inode{}
	node := &fileNode{dev: dev, readOnly: readOnly, mtime: time.Now()}
	node.sz.Store(dev.Size())
	timeout := time.Second
	opts := &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		MountOptions: fuse.MountOptions{
			FsName:        "strata:" + name,
			Name:          fuseSubtype,
			MaxWrite:      maxIO,
			MaxBackground: 64,
			DisableXAttrs: true,
			// Splice only helps replies read from a file descriptor; ours
			// come from memory, and a 1 MiB reply does not fit the default
			// pipe-max-size anyway.
			DisableSplice: true,
			// The loop device submits direct I/O asynchronously; let the
			// kernel keep several requests in flight.
			ExtraCapabilities: fuse.CAP_ASYNC_DIO,
		},
		OnAdd: func(ctx context.Context) {
			child := root.NewPersistentInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG})
			root.AddChild(name, child, false)
		},
	}
	// The magic mountpoint /dev/fd/N makes go-fuse serve a descriptor we
	// mounted ourselves; it then owns (and closes) fd.
	srv, err := fuse.NewServer(fs.NewNodeFS(root, opts), fmt.Sprintf("/dev/fd/%d", fd), &opts.MountOptions)
	if err != nil {
		unix.Unmount(mnt, unix.MNT_DETACH)
		return nil, fmt.Errorf("start fuse server at %s: %w", mnt, err)
	}
	s := &fuseServer{mnt: mnt, node: node, srv: srv, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		srv.Serve()
	}()
	if err := srv.WaitMount(); err != nil {
		s.abort()
		return nil, fmt.Errorf("start fuse server at %s: %w", mnt, err)
	}
	return s, nil
}

// stop unmounts the FUSE filesystem and waits for the server to exit. It
// fails (and keeps serving) while the file is open, for instance while a
// loop device still uses it; it retries that for up to wait.
func (s *fuseServer) stop(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	delay := 5 * time.Millisecond
	for {
		err := unix.Unmount(s.mnt, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // EINVAL: no longer a mountpoint, someone unmounted it
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("unmount fuse at %s: %w", s.mnt, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 200*time.Millisecond)
	}
	<-s.done
	return nil
}

// abort tears the FUSE mount down on a failed Mount, after everything
// above it was undone. Should the file still be held (a process outside our
// control keeps the loop device open), the mount is detached lazily and the
// server keeps serving until the kernel lets go of the file, then exits:
// waiting for that could block Mount forever.
func (s *fuseServer) abort() {
	if err := s.stop(5 * time.Second); err != nil {
		unix.Unmount(s.mnt, unix.MNT_DETACH)
	}
}

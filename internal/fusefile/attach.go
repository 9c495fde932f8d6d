package fusefile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Attacher makes a device a block device of the host by other means than
// a FUSE file and a loop device: the kernel's NBD client
// (internal/nbddev). Mount and Map use it when their options name one;
// everything above the block device (mkfs, mount, growth, unmount) is the
// same.
type Attacher interface {
	// Attach makes volume name a block device, read-only when readOnly.
	Attach(ctx context.Context, name string, readOnly bool) (Attached, error)
}

// Attached is a block device an Attacher made.
type Attached interface {
	// Path returns the device's path, /dev/nbdN.
	Path() string
	// Grow makes the device size bytes long, online.
	Grow(size int64) error
	// Detach writes back and removes the device. While it is open
	// elsewhere it returns an error wrapping errdefs.ErrFailedPrecondition
	// and a later call finishes; once it has returned nil it returns nil.
	Detach() error
}

// attachment is a device made a block device, by a loop device on a FUSE
// file or by an Attacher: what Mount and Map share. Its fields are guarded
// by the owner's mutex.
type attachment struct {
	dev      Device
	name     string
	stateDir string // StateDir/<name>; "" with an Attacher
	fuseFile string
	fuse     *fuseServer
	loop     *loopDevice
	ext      Attached // the Attacher's device, instead of fuse and loop
	loopPath string   // the block device, loop or the Attacher's
	directIO bool
	readOnly bool
	claimed  []string // paths in inUse, released by release

	loopAttached bool // the block device is attached
	done         bool
}

// attachBlock makes the block device: with at, at's device; without, a
// loop device on the FUSE file serveFile made. Its undo goes on rev.
func (a *attachment) attachBlock(ctx context.Context, at Attacher, rev *reverter) error {
	if at == nil {
		return a.attachLoop(rev)
	}
	ext, err := at.Attach(ctx, a.name, a.readOnly)
	if err != nil {
		return err
	}
	rev.Add(func() { ext.Detach() })
	a.ext, a.loopPath, a.loopAttached = ext, ext.Path(), true
	return nil
}

// serveFile serves dev as the file stateRoot/<name>/fuse/<name> and
// registers its undo on rev. The caller has claimed the FUSE mount point.
// With an Attacher there is no FUSE file: it returns the attachment to
// make the Attacher's device on.
func serveFile(dev Device, name, stateRoot string, readOnly bool, at Attacher, rev *reverter) (*attachment, error) {
	if at != nil {
		return &attachment{dev: dev, name: name, readOnly: readOnly}, nil
	}
	stateDir := filepath.Join(stateRoot, name)
	mnt := filepath.Join(stateDir, "fuse")
	if mp, err := isMountPoint(mnt); err != nil {
		return nil, err
	} else if mp {
		return nil, fmt.Errorf("%s is still mounted (a crashed daemon? run Cleanup): %w", mnt, errdefs.ErrFailedPrecondition)
	}
	createdState, err := mkdirAll(mnt, 0o700)
	if err != nil {
		return nil, err
	}
	rev.Add(func() { removeCreated(createdState) })
	fsrv, err := startFUSE(mnt, name, dev, readOnly)
	if err != nil {
		return nil, err
	}
	rev.Add(fsrv.abort)
	return &attachment{
		dev:      dev,
		name:     name,
		stateDir: stateDir,
		fuseFile: filepath.Join(mnt, name),
		fuse:     fsrv,
		readOnly: readOnly,
	}, nil
}

// attachLoop attaches a loop device to the FUSE file and registers its
// detach on rev.
func (a *attachment) attachLoop(rev *reverter) error {
	loop, err := attachLoop(a.fuseFile, a.readOnly)
	if err != nil {
		return err
	}
	rev.Add(func() {
		loop.detach()
		waitLoopDetached(loop.number, a.fuseFile, unmountWait)
	})
	a.loop, a.loopPath, a.directIO, a.loopAttached = loop, loop.path, loop.directIO, true
	return nil
}

// release detaches the loop device, stops FUSE and flushes the device;
// user names what is above the device in errors (a target, or the device
// itself). A later call picks up where a failed one stopped.
func (a *attachment) release(user string) error {
	if a.ext != nil && a.loopAttached {
		if err := a.ext.Detach(); err != nil {
			return fmt.Errorf("fusefile: detach the device of %s: %w", user, err)
		}
		a.loopAttached = false
	}
	if a.loopAttached {
		// Write back the device's page cache first: once detached, the
		// loop device fails the writeback of its last close.
		if a.loop.fd >= 0 {
			unix.Fsync(a.loop.fd)
		}
		a.loop.detach()
		if !waitLoopDetached(a.loop.number, a.fuseFile, unmountWait) {
			return fmt.Errorf("fusefile: %s is still in use (a bind mount of %s elsewhere, or a process with the device open): %w", a.loopPath, user, errdefs.ErrFailedPrecondition)
		}
		a.loopAttached = false
	}
	if a.fuse != nil {
		if err := a.fuse.stop(unmountWait); err != nil {
			return fmt.Errorf("fusefile: %w", err)
		}
		a.fuse = nil
	}
	if err := a.dev.Flush(); err != nil {
		return fmt.Errorf("fusefile: flush %s: %w", a.name, err)
	}
	if a.stateDir != "" {
		os.Remove(filepath.Join(a.stateDir, "fuse"))
		os.Remove(a.stateDir)
	}
	release(a.claimed...)
	return nil
}

// growDevice gives the FUSE file and the loop device the device's size,
// when it has grown; user names the attachment in errors.
func (a *attachment) growDevice(user string) error {
	if a.done || !a.loopAttached {
		return fmt.Errorf("grow %s: not attached: %w", user, errdefs.ErrFailedPrecondition)
	}
	if a.ext != nil {
		if err := a.ext.Grow(a.dev.Size()); err != nil {
			return fmt.Errorf("grow %s: %w", user, err)
		}
		return nil
	}
	node := a.fuse.node
	size, old := a.dev.Size(), node.sz.Load()
	switch {
	case size < old:
		return fmt.Errorf("grow %s: device shrank from %d to %d bytes: %w", user, old, size, errdefs.ErrFailedPrecondition)
	case size == old:
		return nil
	case size%512 != 0:
		return fmt.Errorf("grow %s: size %d is not a multiple of 512: %w", user, size, errdefs.ErrInvalidArgument)
	}
	node.sz.Store(size)
	// A negative offset invalidates the attributes only (no page cache is
	// kept for the file: it is opened with direct I/O).
	if errno := node.NotifyContent(-1, 0); errno != 0 && errno != unix.ENOENT {
		return fmt.Errorf("grow %s: invalidate FUSE attributes: %w", user, errno)
	}
	if err := unix.IoctlSetInt(a.loop.fd, unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("grow %s: loop device %s capacity: %w", user, a.loopPath, err)
	}
	return nil
}

// LoopDevice returns the path of the loop device, /dev/loopN, or of the
// Attacher's device (BlockDevice).
func (a *attachment) LoopDevice() string { return a.loopPath }

// BlockDevice returns the path of the block device: the loop device, or
// the Attacher's device (/dev/nbdN).
func (a *attachment) BlockDevice() string { return a.loopPath }

// Device returns the path of the FUSE file the loop device is attached to,
// "" with an Attacher.
func (a *attachment) Device() string { return a.fuseFile }

// DirectIO reports whether the loop device does direct I/O on the FUSE file.
func (a *attachment) DirectIO() bool { return a.directIO }

// MapOptions says how to map a device.
type MapOptions struct {
	Name     string // volume name: names the FUSE file
	StateDir string // directory for the FUSE mountpoint, as in Options
	ReadOnly bool
	// Attach, when set, makes the block device instead of FUSE and a
	// loop device.
	Attach Attacher
}

// Mapped is a device mapped as a block device of the host: a loop device
// over the FUSE file, with no filesystem made or mounted. Its methods are
// safe for concurrent use.
type Mapped struct {
	mu sync.Mutex
	attachment
}

// Map serves dev through FUSE and attaches a loop device to it (or has
// opts.Attach make the block device), for raw block access (BlockDevice). Nothing is read from or written to the device.
// A name that is mounted or mapped already is errdefs.ErrFailedPrecondition.
// The device works only while this process runs (see the package comment).
func Map(ctx context.Context, dev Device, opts MapOptions) (_ *Mapped, retErr error) {
	if err := validateDevice(dev, opts.Name, opts.StateDir); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			retErr = fmt.Errorf("fusefile: map %s: %w", opts.Name, retErr)
		}
	}()
	rev := &reverter{}
	defer rev.Fail()
	stateRoot, err := canonicalDir(opts.StateDir, 0o700)
	if err != nil {
		return nil, err
	}
	mnt := filepath.Join(stateRoot, opts.Name, "fuse")
	if err := claim(mnt); err != nil {
		return nil, err
	}
	rev.Add(func() { release(mnt) })
	att, err := serveFile(dev, opts.Name, stateRoot, opts.ReadOnly, opts.Attach, rev)
	if err != nil {
		return nil, err
	}
	if err := att.attachBlock(ctx, opts.Attach, rev); err != nil {
		return nil, err
	}
	rev.Success()
	att.claimed = []string{mnt}
	return &Mapped{attachment: *att}, nil
}

// Unmap detaches the loop device, stops FUSE and flushes the device. While
// the block device is open (a process, or a mounted filesystem) it returns
// an error wrapping errdefs.ErrFailedPrecondition after waiting a while;
// the device then detaches on its last close, and a later Unmap finishes.
// Once Unmap has returned nil, it returns nil again and dev is not called
// any more.
func (m *Mapped) Unmap() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return nil
	}
	if err := m.release(m.loopPath); err != nil {
		return err
	}
	m.done = true
	return nil
}

// Grow makes a device that has grown usable through the loop device,
// online: the FUSE file takes the device's new size and the loop device
// re-reads its capacity. Growing to the same size is a no-op; a device
// smaller than the file is refused.
func (m *Mapped) Grow() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.growDevice(m.loopPath)
}

// ReadOnly reports whether the device was mapped read-only.
func (m *Mapped) ReadOnly() bool { return m.readOnly }

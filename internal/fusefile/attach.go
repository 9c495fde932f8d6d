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

// attachment is a device served as a FUSE file with a loop device on it:
// what Mount and Map share. Its fields are guarded by the owner's mutex.
type attachment struct {
	dev      Device
	name     string
	stateDir string // StateDir/<name>
	fuseFile string
	fuse     *fuseServer
	loop     *loopDevice
	loopPath string
	directIO bool
	readOnly bool
	claimed  []string // paths in inUse, released by release

	loopAttached bool
	done         bool
}

// serveFile serves dev as the file stateRoot/<name>/fuse/<name> and
// registers its undo on rev. The caller has claimed the FUSE mount point.
func serveFile(dev Device, name, stateRoot string, readOnly bool, rev *reverter) (*attachment, error) {
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
	os.Remove(filepath.Join(a.stateDir, "fuse"))
	os.Remove(a.stateDir)
	release(a.claimed...)
	return nil
}

// growDevice gives the FUSE file and the loop device the device's size,
// when it has grown; user names the attachment in errors.
func (a *attachment) growDevice(user string) error {
	if a.done || !a.loopAttached {
		return fmt.Errorf("grow %s: not attached: %w", user, errdefs.ErrFailedPrecondition)
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

// LoopDevice returns the path of the loop device, /dev/loopN.
func (a *attachment) LoopDevice() string { return a.loopPath }

// Device returns the path of the FUSE file the loop device is attached to.
func (a *attachment) Device() string { return a.fuseFile }

// DirectIO reports whether the loop device does direct I/O on the FUSE file.
func (a *attachment) DirectIO() bool { return a.directIO }

// MapOptions says how to map a device.
type MapOptions struct {
	Name     string // volume name: names the FUSE file
	StateDir string // directory for the FUSE mountpoint, as in Options
	ReadOnly bool
}

// Mapped is a device mapped as a block device of the host: a loop device
// over the FUSE file, with no filesystem made or mounted. Its methods are
// safe for concurrent use.
type Mapped struct {
	mu sync.Mutex
	attachment
}

// Map serves dev through FUSE and attaches a loop device to it, for raw
// block access (LoopDevice). Nothing is read from or written to the device.
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
	att, err := serveFile(dev, opts.Name, stateRoot, opts.ReadOnly, rev)
	if err != nil {
		return nil, err
	}
	if err := att.attachLoop(rev); err != nil {
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

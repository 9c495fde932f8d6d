// Package fusefile mounts a block device on the host without the nbd kernel
// module: the device is exposed as one file through FUSE, a loop device is
// attached to that file, a filesystem is made on first use, and it is
// mounted at the target directory. Map stops after the loop device, for raw
// block access. With an Attacher in the options (the kernel's NBD client,
// internal/nbddev), the Attacher's device replaces the FUSE file and the
// loop device, and the rest is the same.
//
// The FUSE server runs inside the calling process. Everything mounted here
// works only while that process runs: when it dies, the kernel aborts the
// FUSE connection, I/O on the mounted filesystem fails (ext4 remounts itself
// read-only, xfs shuts down) and the mounts stay behind until Cleanup removes
// them. Call Cleanup(stateDir) when the daemon starts, before any Mount.
//
// Layout: opts.StateDir/<name>/fuse is the FUSE mount point, and
// opts.StateDir/<name>/fuse/<name> the file the loop device is attached to.
// The FUSE file is opened with FOPEN_DIRECT_IO, so the kernel caches none of
// the device's data outside the mounted filesystem itself; requests are up to
// 1 MiB. The loop device does direct I/O on it when the kernel allows, and
// turns discards into fallocate(PUNCH_HOLE), which reaches Device.Trim.
//
// Mounts live in the caller's mount namespace: a daemon in a container needs
// the target's parent mounted with shared propagation for the host and other
// containers to see them.
//
// The process serves the I/O of a filesystem it may itself be writing back
// under memory pressure; as with every user-space block device, give the
// daemon enough memory headroom (and, where possible, PR_SET_IO_FLUSHER).
package fusefile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Device is the volume behind a mount. Its methods are called from many
// goroutines at once and must be safe for concurrent use. Trim must leave the
// range reading as zeroes (the loop device sends write-zeroes requests as
// punch-hole too).
type Device interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	Trim(off, length int64) error
	Size() int64
}

// Options says how to mount.
type Options struct {
	Name     string // volume name: names the FUSE file and the loop device's backing file
	StateDir string // directory for the FUSE mountpoint (one subdirectory per mount)
	Target   string // where to mount the filesystem
	FSType   string // "ext4" (default) or "xfs": made when the device has no filesystem
	ReadOnly bool
	// Attach, when set, makes the block device instead of FUSE and a
	// loop device (the kernel's NBD client).
	Attach Attacher
}

// Mounted is one mounted volume. Its methods are safe for concurrent use.
type Mounted struct {
	mu sync.Mutex
	attachment
	target    string
	fsType    string
	formatted bool

	targetMounted bool
}

// unmountWait bounds how long Unmount waits for the loop device to let go
// of the FUSE file.
const unmountWait = 10 * time.Second

// inUse holds the FUSE mount points and targets of this process's mounts, so
// that two Mounts of one name or one target cannot race, and so that Cleanup
// leaves live mounts alone.
var inUse = struct {
	sync.Mutex
	paths map[string]bool
}{paths: map[string]bool{}}

func claim(paths ...string) error {
	inUse.Lock()
	defer inUse.Unlock()
	for _, p := range paths {
		if inUse.paths[p] {
			return fmt.Errorf("%s is in use by another mount: %w", p, errdefs.ErrFailedPrecondition)
		}
	}
	for _, p := range paths {
		inUse.paths[p] = true
	}
	return nil
}

func release(paths ...string) {
	inUse.Lock()
	defer inUse.Unlock()
	for _, p := range paths {
		delete(inUse.paths, p)
	}
}

func claimed(path string) bool {
	inUse.Lock()
	defer inUse.Unlock()
	return inUse.paths[path]
}

func validate(dev Device, opts *Options) (fsType string, explicit bool, err error) {
	if err := validateDevice(dev, opts.Name, opts.StateDir); err != nil {
		return "", false, err
	}
	if opts.Target == "" {
		return "", false, fmt.Errorf("fusefile: no target: %w", errdefs.ErrInvalidArgument)
	}
	switch opts.FSType {
	case "":
		return "ext4", false, nil
	case "ext4", "xfs":
		return opts.FSType, true, nil
	default:
		return "", false, fmt.Errorf("fusefile: filesystem %q: only ext4 and xfs: %w", opts.FSType, errdefs.ErrInvalidArgument)
	}
}

// validateDevice checks what Mount and Map both need.
func validateDevice(dev Device, name, stateDir string) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("fusefile: "+format+": %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	if dev == nil {
		return bad("no device")
	}
	if name == "" || name == "." || name == ".." || len(name) > 200 || strings.ContainsAny(name, "/\x00") {
		return bad("bad volume name %q", name)
	}
	if stateDir == "" {
		return bad("no state directory")
	}
	if s := dev.Size(); s <= 0 || s%512 != 0 {
		return bad("device size %d is not a positive multiple of 512", s)
	}
	return nil
}

// Mount serves dev through FUSE, attaches a loop device, makes a filesystem
// when the device has none, and mounts it at opts.Target. On any failure the
// steps already done are undone.
//
// A device that has a filesystem is never formatted: what is there is
// mounted (grown first to fill the device, when the device has grown since
// it was made), and an explicit opts.FSType naming another type is an error
// wrapping errdefs.ErrFailedPrecondition. A device with data that is not a
// filesystem (a partition table, or anything non-zero in its first MiB) is
// refused the same way. A read-only mount of a device without a filesystem
// is refused too. Errors wrap errdefs.ErrInvalidArgument for bad options and
// errdefs.ErrFailedPrecondition when the target is already a mount point or
// the volume is already mounted. ctx bounds mkfs and blkid; it is not kept.
//
// The filesystem stays usable only while this process runs (see the package
// comment). ext4 is mounted with errors=remount-ro, xfs with nouuid.
func Mount(ctx context.Context, dev Device, opts Options) (_ *Mounted, retErr error) {
	fsType, explicit, err := validate(dev, &opts)
	if err != nil {
		return nil, err
	}
	target, err := filepath.Abs(opts.Target)
	if err != nil {
		return nil, fmt.Errorf("fusefile: target %q: %w", opts.Target, errdefs.ErrInvalidArgument)
	}
	defer func() {
		if retErr != nil {
			retErr = fmt.Errorf("fusefile: mount %s at %s: %w", opts.Name, target, retErr)
		}
	}()
	rev := &reverter{}
	defer rev.Fail()

	// Paths are compared with /proc/self/mountinfo, which shows them with
	// symbolic links resolved.
	stateRoot, err := canonicalDir(opts.StateDir, 0o700)
	if err != nil {
		return nil, err
	}
	stateDir := filepath.Join(stateRoot, opts.Name)
	mnt := filepath.Join(stateDir, "fuse")

	// The target.
	created, err := mkdirAll(target, 0o755)
	if err != nil {
		return nil, err
	}
	rev.Add(func() { removeCreated(created) })
	if target, err = filepath.EvalSymlinks(target); err != nil {
		return nil, err
	}
	if st, err := os.Stat(target); err != nil {
		return nil, err
	} else if !st.IsDir() {
		return nil, fmt.Errorf("target is not a directory: %w", errdefs.ErrInvalidArgument)
	}
	if err := claim(mnt, target); err != nil {
		return nil, err
	}
	claimedTarget := target
	rev.Add(func() { release(mnt, claimedTarget) })
	if mp, err := isMountPoint(target); err != nil {
		return nil, err
	} else if mp {
		return nil, fmt.Errorf("target is already a mount point: %w", errdefs.ErrFailedPrecondition)
	}

	// The FUSE file, then the loop device (or the Attacher's device).
	att, err := serveFile(dev, opts.Name, stateRoot, opts.ReadOnly, opts.Attach, rev)
	if err != nil {
		return nil, err
	}
	// Put back the zeroes a failed mkfs may have overwritten, so that the
	// next attempt does not take its leftovers for data. This runs once the
	// block device is gone: its last close writes back its page cache.
	restoreHeader := false
	rev.Add(func() {
		if restoreHeader {
			dev.WriteAt(make([]byte, min(dev.Size(), headerSize)), 0)
			dev.Flush()
		}
	})
	if err := att.attachBlock(ctx, opts.Attach, rev); err != nil {
		return nil, err
	}
	blockDev := att.loopPath

	// The filesystem.
	found, other, err := probe(ctx, blockDev)
	if err != nil {
		return nil, err
	}
	formatted := false
	switch {
	case other != "":
		return nil, fmt.Errorf("device holds %s, not a filesystem; refusing to format it: %w", other, errdefs.ErrFailedPrecondition)
	case found == "":
		zero, err := headerIsZero(dev)
		if err != nil {
			return nil, err
		}
		if !zero {
			return nil, fmt.Errorf("device has data but no filesystem blkid recognizes; refusing to format it: %w", errdefs.ErrFailedPrecondition)
		}
		if opts.ReadOnly {
			return nil, fmt.Errorf("device has no filesystem and the mount is read-only: %w", errdefs.ErrFailedPrecondition)
		}
		restoreHeader = true
		if err := mkfs(ctx, fsType, blockDev); err != nil {
			return nil, err
		}
		found, formatted = fsType, true
	case explicit && found != fsType:
		return nil, fmt.Errorf("device holds a %s filesystem, not %s: %w", found, fsType, errdefs.ErrFailedPrecondition)
	case !opts.ReadOnly:
		// The volume may have grown while it was not mounted: the
		// filesystem grows to fill it. ext4 grows best before the mount
		// (no CAP_SYS_RESOURCE needed), xfs only mounted (below). A
		// failure leaves the filesystem as it was: it is mounted all the
		// same, and Grow reports the failure.
		growOffline(ctx, dev, found, blockDev)
	}
	kernelType, data, err := mountArgs(found)
	if err != nil {
		return nil, err
	}
	var flags uintptr
	if opts.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := unix.Mount(blockDev, target, kernelType, flags, data); err != nil {
		return nil, fmt.Errorf("mount %s (%s) at %s: %w", blockDev, kernelType, target, err)
	}
	restoreHeader = false

	rev.Success()
	att.claimed = []string{mnt, claimedTarget}
	m := &Mounted{
		attachment:    *att,
		target:        target,
		fsType:        found,
		formatted:     formatted,
		targetMounted: true,
	}
	if !opts.ReadOnly && !formatted {
		growMounted(ctx, dev, found, blockDev, target) // see growOffline above
	}
	return m, nil
}

// busyGrace is how long Unmount retries a busy target.
const busyGrace = 2 * time.Second

// Unmount undoes Mount in reverse: unmount, detach the loop device, stop FUSE.
//
// It syncs the filesystem, unmounts the target, detaches the loop device,
// unmounts FUSE, waits for the FUSE server to exit and flushes the device.
// While the target is busy (a process has a file open or its working
// directory in it) for longer than busyGrace, it returns an error wrapping
// errdefs.ErrFailedPrecondition and leaves the mount working. A later call
// picks up where an earlier one stopped; once it has succeeded, calling it
// again returns nil. The target directory is left in place. Once Unmount
// has returned nil, dev is not called any more.
func (m *Mounted) Unmount() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return nil
	}
	if m.targetMounted {
		if fd, err := unix.Open(m.target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			unix.Syncfs(fd)
			unix.Close(fd)
		}
		// A process that has just exited may hold its files a moment
		// longer (a database's last children): busy is retried briefly.
		err := unix.Unmount(m.target, 0)
		for deadline := time.Now().Add(busyGrace); errors.Is(err, unix.EBUSY) && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			err = unix.Unmount(m.target, 0)
		}
		switch {
		case err == nil, errors.Is(err, unix.EINVAL):
			// EINVAL: not mounted any more; someone unmounted it.
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("fusefile: unmount %s: target is busy: %w", m.target, errdefs.ErrFailedPrecondition)
		default:
			return fmt.Errorf("fusefile: unmount %s: %w", m.target, err)
		}
		m.targetMounted = false
	}
	if err := m.release(m.target); err != nil {
		return err
	}
	m.done = true
	return nil
}

// Target returns the directory the filesystem is mounted at.
func (m *Mounted) Target() string { return m.target }

// FSType returns the type of the mounted filesystem as blkid names it
// ("ext4", "xfs", or "ext2"/"ext3" mounted by the ext4 driver).
func (m *Mounted) FSType() string { return m.fsType }

// Formatted reports whether Mount made the filesystem (the device had none).
func (m *Mounted) Formatted() bool { return m.formatted }

// waitLoopDetached waits until loop device n no longer has backing as its
// backing file, and reports whether it happened within wait.
func waitLoopDetached(n int, backing string, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for loopBackingFile(n) == backing {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// canonicalDir makes dir if missing and returns its absolute path with
// symbolic links resolved.
func canonicalDir(dir string, perm os.FileMode) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%q: %w", dir, errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(abs, perm); err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// mkdirAll is os.MkdirAll that returns the directories it created, deepest
// last, so that a failed Mount can remove exactly those.
func mkdirAll(path string, perm os.FileMode) ([]string, error) {
	var missing []string
	for p := path; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := os.MkdirAll(path, perm); err != nil {
		return nil, err
	}
	created := make([]string, 0, len(missing))
	for i := len(missing) - 1; i >= 0; i-- {
		created = append(created, missing[i])
	}
	return created, nil
}

// removeCreated removes directories made by mkdirAll, deepest first; a
// directory that is not empty stays.
func removeCreated(dirs []string) {
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i])
	}
}

package fusefile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/mountinfo"
)

// Cleanup removes what mounts of a dead process left under stateDir. Call it
// when the daemon starts, before it mounts anything.
//
// When the process that served a mount dies, the kernel aborts its FUSE
// connection: the FUSE mount point answers "transport endpoint is not
// connected", the loop device above it fails every I/O, and the filesystem
// mounted from that loop device at the volume's target is dead (ext4 has
// remounted itself read-only, xfs has shut down). For every such stale FUSE
// mount under stateDir, Cleanup
//
//   - lazily unmounts (MNT_DETACH) every filesystem mounted from a loop device
//     backed by the stale FUSE file, which frees the volume's target for a new
//     Mount; processes that still have files open there keep them, failing
//     with I/O errors, until they close them;
//   - marks those loop devices for detaching (they detach on their last close);
//   - lazily unmounts the FUSE mount point and removes the empty
//     stateDir/<name>/fuse and stateDir/<name> directories.
//
// Mounts of this process and FUSE mounts whose server still answers are left
// alone. Telling the two apart means a stat of the FUSE mount point: one
// whose server is alive but hung (a stopped process) makes Cleanup wait. Cleanup also removes empty state directories left by a Mount that
// was interrupted. Data that had not reached the device before the crash is
// lost; what was flushed is there for the next Mount.
func Cleanup(stateDir string) error {
	root, err := filepath.Abs(stateDir)
	if err == nil {
		root, err = filepath.EvalSymlinks(root)
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fusefile: cleanup %s: %w", stateDir, err)
	}
	ms, err := mounts()
	if err != nil {
		return fmt.Errorf("fusefile: cleanup %s: %w", stateDir, err)
	}
	var errs []error
	for _, m := range ms {
		if m.FSType != "fuse."+fuseSubtype || !strings.HasPrefix(m.MountPoint, root+"/") {
			continue
		}
		if claimed(m.MountPoint) || !stale(m.MountPoint) {
			continue
		}
		if err := cleanupStale(m.MountPoint, ms); err != nil {
			errs = append(errs, err)
		}
	}
	// Directories of Mounts interrupted before FUSE was mounted.
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		mnt := filepath.Join(dir, "fuse")
		if !e.IsDir() || claimed(mnt) {
			continue
		}
		if mp, _ := isMountPoint(mnt); mp {
			continue
		}
		if os.Remove(mnt) == nil {
			os.Remove(dir)
		}
	}
	return errors.Join(errs...)
}

// stale reports whether the FUSE mount at mnt has lost its server.
func stale(mnt string) bool {
	var st unix.Stat_t
	err := unix.Stat(mnt, &st)
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED)
}

func cleanupStale(mnt string, ms []mountinfo.Mount) error {
	name := filepath.Base(filepath.Dir(mnt))
	backing := filepath.Join(mnt, name)
	var errs []error
	for _, n := range loopsBackedBy(backing) {
		if err := mountinfo.DetachDevice(ms, loopDevNumber(n)); err != nil {
			errs = append(errs, fmt.Errorf("fusefile: %w", err))
		}
		if fd, err := unix.Open(fmt.Sprintf("/dev/loop%d", n), unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
			unix.Close(fd)
		}
	}
	if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("fusefile: unmount stale %s: %w", mnt, err))
	} else {
		os.Remove(mnt)
		os.Remove(filepath.Dir(mnt))
	}
	return errors.Join(errs...)
}

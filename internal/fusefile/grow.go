package fusefile

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Grow makes a device that has grown usable through the mount, online:
// the FUSE file takes the device's new size (and the kernel's cached
// attributes are dropped), the loop device re-reads its capacity, and the
// filesystem is grown to fill it (resize2fs for ext4, xfs_growfs for xfs).
// Growing to the same size is a no-op; a device smaller than the file is
// refused.
func (m *Mounted) Grow(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done || !m.targetMounted {
		return fmt.Errorf("grow %s: not mounted: %w", m.target, errdefs.ErrFailedPrecondition)
	}
	node := m.fuse.node
	size, old := m.dev.Size(), node.sz.Load()
	switch {
	case size < old:
		return fmt.Errorf("grow %s: device shrank from %d to %d bytes: %w", m.target, old, size, errdefs.ErrFailedPrecondition)
	case size == old:
		return nil
	case size%512 != 0:
		return fmt.Errorf("grow %s: size %d is not a multiple of 512: %w", m.target, size, errdefs.ErrInvalidArgument)
	}
	node.sz.Store(size)
	// A negative offset invalidates the attributes only (no page cache is
	// kept for the file: it is opened with direct I/O).
	if errno := node.NotifyContent(-1, 0); errno != 0 && errno != unix.ENOENT {
		return fmt.Errorf("grow %s: invalidate FUSE attributes: %w", m.target, errno)
	}
	if err := unix.IoctlSetInt(m.loop.fd, unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("grow %s: loop device %s capacity: %w", m.target, m.loopPath, err)
	}
	if m.readOnly {
		return nil
	}
	var err error
	switch m.fsType {
	case "xfs":
		_, err = run(ctx, "xfs_growfs", m.target)
	default:
		_, err = run(ctx, "resize2fs", m.loopPath)
	}
	if err != nil {
		hint := ""
		if !hasCapSysResource() {
			hint = " (online growth of ext4 needs the CAP_SYS_RESOURCE capability, which this process lacks; the device has grown: run resize2fs " + m.loopPath + " with it, or unmount and mount again)"
		}
		return fmt.Errorf("grow the %s filesystem at %s%s: %w", m.fsType, m.target, hint, err)
	}
	return nil
}

// hasCapSysResource reports whether this process has CAP_SYS_RESOURCE in its
// effective set (ext4's online resize ioctl requires it).
func hasCapSysResource() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_RESOURCE) != 0
}

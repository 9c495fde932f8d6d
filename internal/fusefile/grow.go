package fusefile

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Grow makes the whole device usable through the mount, online: when the
// device has grown, the FUSE file takes its new size (and the kernel's
// cached attributes are dropped) and the loop device re-reads its capacity;
// then a filesystem smaller than the device is grown to fill it (resize2fs
// for ext4, xfs_growfs for xfs), also when the device grew while it was not
// mounted. A filesystem that fills the device already is left alone; a
// device smaller than the file is refused.
func (m *Mounted) Grow(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done || !m.targetMounted {
		return fmt.Errorf("grow %s: not mounted: %w", m.target, errdefs.ErrFailedPrecondition)
	}
	if err := m.growDevice(m.target); err != nil {
		return err
	}
	if m.readOnly {
		return nil
	}
	if err := growMounted(ctx, m.dev, m.fsType, m.loopPath, m.target); err != nil {
		hint := ""
		if m.fsType != "xfs" && !hasCapSysResource() {
			hint = " (online growth of ext4 needs the CAP_SYS_RESOURCE capability, which this process lacks; the device has grown: run resize2fs " + m.loopPath + " with it, or unmount and mount again)"
		}
		return fmt.Errorf("grow the %s filesystem at %s%s: %w", m.fsType, m.target, hint, err)
	}
	return nil
}

// growMounted grows the filesystem mounted at target from blockDev to fill
// the device, when it is smaller.
func growMounted(ctx context.Context, dev Device, fsType, blockDev, target string) error {
	if !fsSmaller(dev, fsType) {
		return nil
	}
	var err error
	switch fsType {
	case "xfs":
		_, err = run(ctx, "xfs_growfs", target)
	default:
		_, err = run(ctx, "resize2fs", blockDev)
	}
	return err
}

// growOffline grows an ext2/3/4 filesystem that is not mounted to fill the
// device: e2fsck -f -p (resize2fs insists on a checked filesystem), then
// resize2fs. Unlike online growth this needs no CAP_SYS_RESOURCE. xfs grows
// only mounted (growMounted).
func growOffline(ctx context.Context, dev Device, fsType, blockDev string) error {
	if !isExt(fsType) || !fsSmaller(dev, fsType) {
		return nil
	}
	// Exit codes 1 and 2: errors were corrected.
	var exit *exec.ExitError
	if _, err := run(ctx, "e2fsck", "-f", "-p", blockDev); err != nil && !(errors.As(err, &exit) && exit.ExitCode() < 4) {
		return err
	}
	_, err := run(ctx, "resize2fs", blockDev)
	return err
}

func isExt(fsType string) bool { return fsType == "ext4" || fsType == "ext3" || fsType == "ext2" }

// fsSmaller says whether the filesystem on dev leaves at least one of its
// blocks of the device unused, from its superblock; false when it cannot
// tell.
func fsSmaller(dev Device, fsType string) bool {
	size, block := superblockSize(dev, fsType)
	return block > 0 && size+block <= dev.Size()
}

// superblockSize reads the size and block size of the filesystem on dev from its
// superblock (ext2/3/4 or xfs); 0, 0 when it cannot.
func superblockSize(dev Device, fsType string) (size, block int64) {
	switch {
	case isExt(fsType):
		// The superblock is at 1024; little-endian.
		sb := make([]byte, 1024)
		if n, _ := dev.ReadAt(sb, 1024); n < len(sb) || binary.LittleEndian.Uint16(sb[0x38:]) != 0xef53 {
			return 0, 0
		}
		blocks := int64(binary.LittleEndian.Uint32(sb[0x4:]))
		if binary.LittleEndian.Uint32(sb[0x60:])&0x80 != 0 { // INCOMPAT_64BIT
			blocks |= int64(binary.LittleEndian.Uint32(sb[0x150:])) << 32
		}
		logBlock := binary.LittleEndian.Uint32(sb[0x18:])
		if logBlock > 6 {
			return 0, 0
		}
		block = 1024 << logBlock
		return blocks * block, block
	case fsType == "xfs":
		// The superblock is at 0; big-endian.
		sb := make([]byte, 16)
		if n, _ := dev.ReadAt(sb, 0); n < len(sb) || string(sb[:4]) != "XFSB" {
			return 0, 0
		}
		block = int64(binary.BigEndian.Uint32(sb[4:]))
		blocks := binary.BigEndian.Uint64(sb[8:])
		if block <= 0 || blocks > 1<<50 {
			return 0, 0
		}
		return int64(blocks) * block, block
	}
	return 0, 0
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

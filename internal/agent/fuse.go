package agent

import (
	"errors"
	"log/slog"

	"github.com/strata-storage/strata/internal/fusefile"
	"github.com/strata-storage/strata/internal/nbddev"
)

// MountInfo describes one mount the agent made.
type MountInfo struct {
	Volume string
	Target string
	FSType string
	// Device is the block device the filesystem is on: /dev/nbdN (the
	// kernel's NBD client), or a loop device over the volume's FUSE file.
	Device string
	// Formatted says the mount made the filesystem (the volume had none).
	Formatted bool
}

// mountInfo describes m.
func mountInfo(name string, m *fusefile.Mounted) MountInfo {
	return MountInfo{Volume: name, Target: m.Target(), FSType: m.FSType(), Device: m.BlockDevice(), Formatted: m.Formatted()}
}

// cleanupFuse removes what the mounts of a process that died (kill -9, a
// crash) left under dir: stale FUSE mounts, their loop devices, and the
// dead filesystems above them; and the /dev/nbdN devices that process
// attached (named after dir), with the filesystems mounted from them.
func cleanupFuse(dir string, log *slog.Logger) error {
	return errors.Join(fusefile.Cleanup(dir), nbddev.Cleanup(dir))
}

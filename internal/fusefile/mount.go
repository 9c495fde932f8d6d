// Package fusefile mounts a block device on the host without the nbd kernel
// module: the device is exposed as one file through FUSE, a loop device is
// attached to that file, a filesystem is made on first use, and it is
// mounted at the target directory.
package fusefile

import (
	"context"
	"errors"
)

// Device is the volume behind a mount.
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
}

// Mounted is one mounted volume.
type Mounted struct{}

// Mount serves dev through FUSE, attaches a loop device, makes a filesystem
// when the device has none, and mounts it at opts.Target. On any failure the
// steps already done are undone.
func Mount(ctx context.Context, dev Device, opts Options) (*Mounted, error) {
	return nil, errors.New("fusefile: not implemented yet")
}

// Unmount undoes Mount in reverse: unmount, detach the loop device, stop FUSE.
func (m *Mounted) Unmount() error { return errors.New("fusefile: not implemented yet") }

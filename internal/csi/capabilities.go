package csi

import (
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/strata-storage/strata/internal/errdefs"
)

// access is what a volume capability asks for.
type access struct {
	block bool
	fs    string // mount: "", "ext4" or "xfs"
	// readOnly: a reader-only access mode.
	readOnly bool
	// singleWriter: SINGLE_NODE_SINGLE_WRITER, published at one target at
	// a time.
	singleWriter bool
}

// checkCapability reads a volume capability and refuses what the driver
// cannot do: access modes for several nodes (a volume lives on one node),
// filesystems other than ext4 and xfs, mount options. Errors wrap
// errdefs.ErrInvalidArgument.
func checkCapability(c *csi.VolumeCapability) (access, error) {
	var a access
	if c == nil {
		return a, fmt.Errorf("volume capability is required: %w", errdefs.ErrInvalidArgument)
	}
	switch m := c.GetAccessMode().GetMode(); m {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
		a.readOnly = true
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER:
		a.singleWriter = true
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		return a, fmt.Errorf("access mode %s is not supported: a volume is used on the node that holds it, one node at a time: %w", m, errdefs.ErrInvalidArgument)
	default:
		return a, fmt.Errorf("access mode %s is not supported (use a SINGLE_NODE mode): %w", m, errdefs.ErrInvalidArgument)
	}
	switch t := c.GetAccessType().(type) {
	case *csi.VolumeCapability_Block:
		a.block = true
	case *csi.VolumeCapability_Mount:
		m := t.Mount
		if fs := m.GetFsType(); fs != "" {
			if err := checkFS(fs); err != nil {
				return a, err
			}
			a.fs = fs
		}
		if len(m.GetMountFlags()) > 0 {
			return a, fmt.Errorf("mount options %v are not supported: Strata mounts ext4 with errors=remount-ro and xfs with nouuid (remove mountOptions from the StorageClass): %w", m.GetMountFlags(), errdefs.ErrInvalidArgument)
		}
		if m.GetVolumeMountGroup() != "" {
			return a, fmt.Errorf("volume mount group is not supported: %w", errdefs.ErrInvalidArgument)
		}
	default:
		return a, fmt.Errorf("volume capability needs an access type, mount or block: %w", errdefs.ErrInvalidArgument)
	}
	return a, nil
}

// checkCapabilities checks every capability of a request, at least one,
// and returns the filesystem they ask for ("" when none does). Two
// filesystems are refused.
func checkCapabilities(cs []*csi.VolumeCapability) (fs string, block bool, err error) {
	if len(cs) == 0 {
		return "", false, fmt.Errorf("volume capabilities are required: %w", errdefs.ErrInvalidArgument)
	}
	for _, c := range cs {
		a, err := checkCapability(c)
		if err != nil {
			return "", false, err
		}
		if a.fs != "" && fs != "" && a.fs != fs {
			return "", false, fmt.Errorf("capabilities ask for two filesystems, %s and %s: %w", fs, a.fs, errdefs.ErrInvalidArgument)
		}
		if a.fs != "" {
			fs = a.fs
		}
		block = block || a.block
	}
	return fs, block, nil
}

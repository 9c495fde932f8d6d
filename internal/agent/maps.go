package agent

import (
	"context"
	"fmt"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/fusefile"
)

// MapInfo describes a volume mapped as a block device of this node.
type MapInfo struct {
	Volume string
	// Device is the block device: /dev/nbdN (the kernel's NBD client), or
	// the loop device over the volume's FUSE file, /dev/loopN.
	Device   string
	ReadOnly bool
}

// Map makes the volume a raw block device of this node (/dev/nbdN, or a
// loop device over its FUSE file: see Config.Attach), with no filesystem
// made or mounted. Mapping a mapped
// volume returns its device (whatever readOnly asks: unmap it first to
// change that). A mounted volume is errdefs.ErrFailedPrecondition.
func (a *Agent) Map(ctx context.Context, name string, readOnly bool) (MapInfo, error) {
	v, unlock, err := a.lockOp(name)
	if err != nil {
		return MapInfo{}, err
	}
	defer unlock()
	v.mu.Lock()
	if m := v.mapped; m != nil {
		v.mu.Unlock()
		return MapInfo{Volume: name, Device: m.BlockDevice(), ReadOnly: m.ReadOnly()}, nil
	}
	if v.busy != "" {
		v.mu.Unlock()
		return MapInfo{}, fmt.Errorf("volume %q is %s: %w", name, v.busy, errdefs.ErrUnavailable)
	}
	if len(v.mounts) > 0 {
		targets := v.mountTargetsLocked()
		v.mu.Unlock()
		return MapInfo{}, fmt.Errorf("volume %q is mounted at %s; unmount it first (strata volume unmount %s): %w",
			name, targets[0], targets[0], errdefs.ErrFailedPrecondition)
	}
	eng, err := a.engineLocked(v)
	v.mu.Unlock()
	if err != nil {
		return MapInfo{}, err
	}
	m, err := fusefile.Map(ctx, eng, fusefile.MapOptions{Name: name, StateDir: a.fuseDir, ReadOnly: readOnly, Attach: a.attach})
	if err != nil {
		return MapInfo{}, fmt.Errorf("map volume %q: %w", name, err)
	}
	v.mu.Lock()
	v.mapped = m
	v.mu.Unlock()
	return MapInfo{Volume: name, Device: m.BlockDevice(), ReadOnly: readOnly}, nil
}

// Unmap undoes Map. A volume that is not mapped is errdefs.ErrNotFound;
// one whose device is open (a process, a filesystem mounted from it) is
// errdefs.ErrFailedPrecondition and stays mapped.
func (a *Agent) Unmap(name string) error {
	v, unlock, err := a.lockOp(name)
	if err != nil {
		return err
	}
	defer unlock()
	v.mu.Lock()
	m := v.mapped
	v.mu.Unlock()
	if m == nil {
		return fmt.Errorf("volume %q is not mapped: %w", name, errdefs.ErrNotFound)
	}
	if err := m.Unmap(); err != nil {
		return fmt.Errorf("unmap volume %q: %w", name, err)
	}
	v.mu.Lock()
	v.mapped = nil
	v.mu.Unlock()
	return nil
}

// lockOp takes the operation lock of one volume; see lockOps.
func (a *Agent) lockOp(name string) (*volume, func(), error) {
	vs, unlock, err := a.lockOps(name)
	if err != nil {
		return nil, nil, err
	}
	return vs[0], unlock, nil
}

// Package agent is the node agent: it owns this node's pool of chains, the
// engine of every volume in use here, the volumes' NBD exports and their
// FUSE mounts, and applies the operations the API server decides on.
//
// The agent keeps no state of its own beyond what is running: what exists
// is recorded in etcd by the API server (internal/meta) and held on disk by
// the pool (internal/chain).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/engine"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/fusefile"
	"github.com/strata-storage/strata/internal/nbd"
	"github.com/strata-storage/strata/internal/qos"
	"github.com/strata-storage/strata/internal/replica"
)

// Config says where the agent keeps its data.
type Config struct {
	// PoolDir is the chain pool's directory (DATA_DIR/pool).
	PoolDir string
	// FuseDir is the state directory of FUSE mounts (DATA_DIR/fuse); it
	// also names this node's /dev/nbdN devices, for Cleanup after a crash.
	FuseDir string
	// Attach says how Mount and Map make block devices: AttachAuto (the
	// default when empty), AttachNBD or AttachFUSE.
	Attach string
	// EpochDir holds the epochs this node's replicas have seen (see
	// replica.Epochs); DATA_DIR/epochs (next to PoolDir) when empty.
	EpochDir string
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// EngineStarter starts and stops the engines of replicated volumes: the
// API server, which knows each volume's replica set. Without one, every
// engine runs over the local chain alone.
type EngineStarter interface {
	// StartEngine returns the engine of volume name, whose local chain (if
	// this node holds a replica) is c.
	StartEngine(name string, c *chain.Chain) (*engine.Volume, error)
	// EngineClosed is told that the engine of volume name was closed, and
	// whether its final flush failed.
	EngineClosed(name string, eng *engine.Volume, err error)
}

// Agent runs the volumes of this node. It is safe for concurrent use.
type Agent struct {
	pool    *chain.Pool
	fuseDir string
	log     *slog.Logger

	mu     sync.Mutex
	vols   map[string]*volume
	mounts map[string]string // mount target -> volume
	closed bool
	gate   func(ctx context.Context, name string) error

	// attach makes block devices for Mount and Map; nil for FUSE and a
	// loop device. Set by Open.
	attach       fusefile.Attacher
	attachMethod string

	epochs  *replica.Epochs
	starter EngineStarter
}

// SetEngineStarter installs what starts the engines of volumes from now
// on (see EngineStarter).
func (a *Agent) SetEngineStarter(st EngineStarter) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.starter = st
}

func (a *Agent) engineStarter() EngineStarter {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.starter
}

// Pool returns the node's pool of chains (what the replica server serves).
func (a *Agent) Pool() *chain.Pool { return a.pool }

// Epochs returns the epochs of this node's replicas, shared by the local
// replicas of engines and the replica server.
func (a *Agent) Epochs() *replica.Epochs { return a.epochs }

// SetExportGate installs the check NBD clients pass before they get a
// volume: the API server refuses volumes its records do not list as ready
// (being created or deleted, or chains no record lists). Without a gate
// every chain of the pool is exported.
func (a *Agent) SetExportGate(gate func(ctx context.Context, name string) error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gate = gate
}

func (a *Agent) exportGate() func(ctx context.Context, name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gate
}

// volume is the running state of one volume on this node. Entries are made
// on first use and never removed: a deleted volume's entry is idle and is
// reused if the name is created again.
type volume struct {
	name string
	// op serializes the control operations on the volume (create, delete,
	// revert, snapshot, resize, mount, unmount); it may be held for long
	// (mkfs during a mount).
	op sync.Mutex

	// mu guards the fields below; it is held only briefly, so NBD clients
	// connect while a control operation runs.
	mu     sync.Mutex
	eng    *engine.Volume
	conns  int
	mounts map[string]*fusefile.Mounted // by target
	// mapped is the volume's raw block device (Map), or nil.
	mapped *fusefile.Mapped
	// busy names the operation (delete, revert) that forbids new
	// connections and mounts while it runs; "" when none.
	busy string
	// limits are the QoS limits the engine gets when it starts.
	limits qos.Limits
	// lastIO is the last I/O of engines closed since (see LastIO).
	lastIO time.Time
	// starter started eng, and is told when it closes; nil for engines
	// over the local chain alone.
	starter EngineStarter
}

// Open opens (or creates) the pool in cfg.PoolDir. A crash may have left
// FUSE mountpoints under cfg.FuseDir and /dev/nbdN devices; they are
// cleaned up first. It fails when cfg.Attach is AttachNBD and the kernel
// has no NBD client.
func Open(cfg Config) (*Agent, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.PoolDir == "" || cfg.FuseDir == "" {
		return nil, fmt.Errorf("agent: pool and fuse directories are required: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(cfg.FuseDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := cleanupFuse(cfg.FuseDir, log); err != nil {
		log.Warn("stale fuse mounts were not all cleaned up", "dir", cfg.FuseDir, "err", err)
	}
	epochDir := cfg.EpochDir
	if epochDir == "" {
		epochDir = filepath.Join(filepath.Dir(filepath.Clean(cfg.PoolDir)), "epochs")
	}
	epochs, err := replica.OpenEpochs(epochDir)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	pool, err := chain.OpenPool(cfg.PoolDir)
	if err != nil {
		return nil, fmt.Errorf("agent: open pool %s: %w", cfg.PoolDir, err)
	}
	a := &Agent{
		pool:    pool,
		fuseDir: cfg.FuseDir,
		log:     log,
		vols:    map[string]*volume{},
		mounts:  map[string]string{},
		epochs:  epochs,
	}
	if a.attach, a.attachMethod, err = a.chooseAttach(cfg.Attach, log); err != nil {
		pool.Close()
		return nil, err
	}
	return a, nil
}

// entry returns the running state of volume name, making it on first use.
func (a *Agent) entry(name string) (*volume, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, errClosed
	}
	v := a.vols[name]
	if v == nil {
		v = &volume{name: name, mounts: map[string]*fusefile.Mounted{}}
		a.vols[name] = v
	}
	return v, nil
}

var errClosed = fmt.Errorf("agent: shutting down: %w", errdefs.ErrUnavailable)

// lockOps takes the operation locks of the named volumes in name order, so
// that two operations on the same pair never deadlock, and returns the
// entries in the order given and the unlock function.
func (a *Agent) lockOps(names ...string) ([]*volume, func(), error) {
	sorted := slices.Clone(names)
	sort.Strings(sorted)
	sorted = slices.Compact(sorted)
	byName := map[string]*volume{}
	var locked []*volume
	unlock := func() {
		for i := len(locked) - 1; i >= 0; i-- {
			locked[i].op.Unlock()
		}
	}
	for _, n := range sorted {
		v, err := a.entry(n)
		if err != nil {
			unlock()
			return nil, nil, err
		}
		v.op.Lock()
		locked = append(locked, v)
		byName[n] = v
	}
	out := make([]*volume, len(names))
	for i, n := range names {
		out[i] = byName[n]
	}
	return out, unlock, nil
}

// engine returns the volume's engine, starting it over the pool's chain on
// first use. Callers hold v.mu.
func (a *Agent) engineLocked(v *volume) (*engine.Volume, error) {
	if v.eng != nil {
		return v.eng, nil
	}
	c, err := a.pool.Open(v.name)
	if err != nil {
		return nil, fmt.Errorf("volume %q: %w", v.name, err)
	}
	var eng *engine.Volume
	st := a.engineStarter()
	if st != nil {
		eng, err = st.StartEngine(v.name, c)
	} else {
		eng, err = engine.New(v.name, replica.NewLocal(c))
	}
	if err != nil {
		return nil, err
	}
	if err := eng.SetLimits(v.limits); err != nil {
		eng.Close()
		return nil, err
	}
	v.eng = eng
	v.starter = st
	return eng, nil
}

// Attach starts the volume's engine on this node, if it is not running:
// for a replicated volume, this attaches it here (see EngineStarter).
func (a *Agent) Attach(name string) error {
	v, err := a.entry(name)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	_, err = a.engineLocked(v)
	return err
}

// Engine returns the volume's running engine, or nil.
func (a *Agent) Engine(name string) *engine.Volume {
	v, err := a.entry(name)
	if err != nil {
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.eng
}

// controlEngine returns the engine a control operation (snapshot, grow)
// goes through: the running one, or, when an EngineStarter is installed
// (replicated volumes, whose every replica must take the operation), one
// started now. nil means the operation goes to the local chain alone.
func (a *Agent) controlEngine(v *volume) (*engine.Volume, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.eng != nil || a.engineStarter() == nil {
		return v.eng, nil
	}
	return a.engineLocked(v)
}

// closeEngineLocked flushes and detaches the volume's engine, if any.
// Callers hold v.mu.
func (v *volume) closeEngineLocked() error {
	if v.eng == nil {
		return nil
	}
	if t := v.eng.LastIO(); t.After(v.lastIO) {
		v.lastIO = t
	}
	eng := v.eng
	err := eng.Close()
	v.eng = nil
	if v.starter != nil {
		v.starter.EngineClosed(v.name, eng, err)
	}
	if err != nil {
		return fmt.Errorf("volume %q: flush: %w", v.name, err)
	}
	return nil
}

// idleLocked says why the volume cannot be deleted or reverted now, and how
// to stop what holds it; nil when nothing does. Callers hold v.mu.
func (v *volume) idleLocked(op string) error {
	if len(v.mounts) > 0 {
		targets := v.mountTargetsLocked()
		return fmt.Errorf("cannot %s volume %q: it is mounted at %s; unmount it first (strata volume unmount %s): %w",
			op, v.name, strings.Join(targets, ", "), targets[0], errdefs.ErrFailedPrecondition)
	}
	if v.mapped != nil {
		return fmt.Errorf("cannot %s volume %q: it is mapped at %s; unmap it first (strata volume unmap %s): %w",
			op, v.name, v.mapped.BlockDevice(), v.name, errdefs.ErrFailedPrecondition)
	}
	if v.conns > 0 {
		return fmt.Errorf("cannot %s volume %q: %d nbd connection(s) are open; disconnect the clients first (qemu-nbd --disconnect, nbd-client -d, or stop the vm): %w",
			op, v.name, v.conns, errdefs.ErrFailedPrecondition)
	}
	return nil
}

func (v *volume) mountTargetsLocked() []string {
	out := make([]string, 0, len(v.mounts))
	for t := range v.mounts {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Create makes an empty volume of size bytes (a multiple of
// chain.BlockSize). Creating one that exists with the same size returns it.
func (a *Agent) Create(name string, size int64) (chain.Info, error) {
	_, unlock, err := a.lockOps(name)
	if err != nil {
		return chain.Info{}, err
	}
	defer unlock()
	c, err := a.pool.Create(name, size)
	if err != nil {
		return chain.Info{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	return c.Info(), nil
}

// Clone makes volume dst a thin clone of snapshot src@snap, of size bytes
// (0: the snapshot's size). A missing volume or snapshot is
// errdefs.ErrNotFound.
func (a *Agent) Clone(src, snap, dst string, size int64) (chain.Info, error) {
	_, unlock, err := a.lockOps(src, dst)
	if err != nil {
		return chain.Info{}, err
	}
	defer unlock()
	c, err := a.pool.Open(src)
	if err != nil {
		return chain.Info{}, fmt.Errorf("clone source volume %q: %w", src, err)
	}
	found := false
	for _, s := range c.Snapshots() {
		if s.Name == snap {
			found = true
			if size != 0 && size < s.Size {
				return chain.Info{}, fmt.Errorf("clone size %d is smaller than snapshot %s@%s (%d bytes): %w",
					size, src, snap, s.Size, errdefs.ErrInvalidArgument)
			}
		}
	}
	if !found {
		return chain.Info{}, fmt.Errorf("snapshot %s@%s: %w", src, snap, errdefs.ErrNotFound)
	}
	d, err := a.pool.Clone(src, snap, dst, size)
	if err != nil {
		return chain.Info{}, fmt.Errorf("clone %s@%s to %q: %w", src, snap, dst, err)
	}
	return d.Info(), nil
}

// SetLimits sets the volume's QoS limits: the running engine applies them
// at once, and an engine started later starts with them. The API server
// sets them from the volume's record when it creates or updates a volume
// and at startup; a deleted volume's limits are forgotten.
func (a *Agent) SetLimits(name string, l qos.Limits) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	v, err := a.entry(name)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.limits = l
	if v.eng != nil {
		return v.eng.SetLimits(l)
	}
	return nil
}

// Busy returns the refusal Delete and Revert would give now (the volume is
// mounted or has NBD connections), or nil.
func (a *Agent) Busy(name, op string) error {
	v, err := a.entry(name)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.idleLocked(op)
}

// Delete stops the volume's engine and removes its chain. It is refused
// with errdefs.ErrFailedPrecondition while the volume is mounted or has NBD
// connections; a missing volume is errdefs.ErrNotFound.
func (a *Agent) Delete(name string) error {
	vs, unlock, err := a.lockOps(name)
	if err != nil {
		return err
	}
	defer unlock()
	v := vs[0]
	v.mu.Lock()
	if err := v.idleLocked("delete"); err != nil {
		v.mu.Unlock()
		return err
	}
	v.busy = "being deleted"
	v.limits = qos.Limits{}
	err = v.closeEngineLocked()
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		v.busy = ""
		v.mu.Unlock()
	}()
	if err != nil {
		a.log.Warn("flush before delete failed", "volume", name, "err", err)
	}
	if err := a.pool.Delete(name); err != nil {
		return fmt.Errorf("delete volume %q: %w", name, err)
	}
	if err := a.epochs.DropDirty(name); err != nil {
		a.log.Warn("removing the dirty-region log of a deleted volume", "volume", name, "err", err)
	}
	return nil
}

// Resize grows the volume to size bytes, online, with the filesystems
// mounted from it and its mapped device. Shrinking is
// errdefs.ErrFailedPrecondition; the same size grows only a mounted
// filesystem smaller than the volume.
func (a *Agent) Resize(name string, size int64) (chain.Info, error) {
	vs, unlock, err := a.lockOps(name)
	if err != nil {
		return chain.Info{}, err
	}
	defer unlock()
	v := vs[0]
	c, err := a.pool.Open(name)
	if err != nil {
		return chain.Info{}, fmt.Errorf("volume %q: %w", name, err)
	}
	cur := c.Size()
	switch {
	case size < cur:
		return chain.Info{}, fmt.Errorf("cannot shrink volume %q from %d to %d bytes: volumes only grow: %w",
			name, cur, size, errdefs.ErrFailedPrecondition)
	case size > cur:
		eng, err := a.controlEngine(v)
		if err != nil {
			return chain.Info{}, err
		}
		if eng != nil {
			// The engine waits for in-flight I/O before growing.
			err = eng.Grow(size)
		} else {
			err = c.Grow(size)
		}
		if err != nil {
			return chain.Info{}, fmt.Errorf("resize volume %q: %w", name, err)
		}
	}
	// A mapped device and mounted filesystems grow with the volume,
	// online; at the same size, a filesystem smaller than the volume (it
	// grew while not mounted, or an earlier growth failed) grows to fill it.
	v.mu.Lock()
	mounts := make([]*fusefile.Mounted, 0, len(v.mounts))
	for _, m := range v.mounts {
		mounts = append(mounts, m)
	}
	mapped := v.mapped
	v.mu.Unlock()
	if mapped != nil {
		if err := mapped.Grow(); err != nil {
			return c.Info(), fmt.Errorf("volume %q grew to %d bytes, but its mapped device did not: %w", name, size, err)
		}
	}
	var errs []error
	for _, m := range mounts {
		if err := m.Grow(context.Background()); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c.Info(), &FilesystemGrowError{Volume: name, Size: size, Err: err}
	}
	return c.Info(), nil
}

// FilesystemGrowError is returned by Resize when the volume grew but a
// filesystem mounted on it could not be grown: the resize itself stands.
type FilesystemGrowError struct {
	Volume string
	Size   int64
	Err    error
}

func (e *FilesystemGrowError) Error() string {
	return fmt.Sprintf("volume %q grew to %d bytes, but its mounted filesystem did not: %v", e.Volume, e.Size, e.Err)
}

func (e *FilesystemGrowError) Unwrap() error { return e.Err }

// Snapshot takes snapshot snap of the volume at one point of its write
// stream (through the engine when the volume is in use).
func (a *Agent) Snapshot(name, snap string) (chain.SnapshotInfo, error) {
	vs, unlock, err := a.lockOps(name)
	if err != nil {
		return chain.SnapshotInfo{}, err
	}
	defer unlock()
	v := vs[0]
	c, err := a.pool.Open(name)
	if err != nil {
		return chain.SnapshotInfo{}, fmt.Errorf("volume %q: %w", name, err)
	}
	eng, err := a.controlEngine(v)
	if err != nil {
		return chain.SnapshotInfo{}, err
	}
	if eng != nil {
		err = eng.Snapshot(snap)
	} else {
		_, err = c.Snapshot(snap)
	}
	if err != nil {
		return chain.SnapshotInfo{}, fmt.Errorf("snapshot %s@%s: %w", name, snap, err)
	}
	for _, s := range c.Snapshots() {
		if s.Name == snap {
			return s, nil
		}
	}
	return chain.SnapshotInfo{}, fmt.Errorf("snapshot %s@%s vanished after it was taken: %w", name, snap, errdefs.ErrUnavailable)
}

// HasSnapshot says whether the volume's chain has snapshot snap.
func (a *Agent) HasSnapshot(name, snap string) (bool, error) {
	c, err := a.pool.Open(name)
	if err != nil {
		return false, fmt.Errorf("volume %q: %w", name, err)
	}
	for _, s := range c.Snapshots() {
		if s.Name == snap {
			return true, nil
		}
	}
	return false, nil
}

// DeleteSnapshot removes snapshot snap of the volume. Its data stays while
// clones use it; the result says how many do.
func (a *Agent) DeleteSnapshot(name, snap string) (chain.DeleteSnapshotResult, error) {
	_, unlock, err := a.lockOps(name)
	if err != nil {
		return chain.DeleteSnapshotResult{}, err
	}
	defer unlock()
	c, err := a.pool.Open(name)
	if err != nil {
		return chain.DeleteSnapshotResult{}, fmt.Errorf("volume %q: %w", name, err)
	}
	res, err := c.DeleteSnapshot(snap)
	if err != nil {
		return res, fmt.Errorf("delete snapshot %s@%s: %w", name, snap, err)
	}
	return res, nil
}

// Revert drops every write made to the volume since snapshot snap. It is
// refused while the volume is mounted or has NBD connections. A replicated
// volume (an EngineStarter is installed) reverts through its engine, on
// every replica at once; otherwise the engine is closed before and started
// again after, so that nothing it cached from the dropped head survives.
func (a *Agent) Revert(name, snap string) (chain.Info, error) {
	vs, unlock, err := a.lockOps(name)
	if err != nil {
		return chain.Info{}, err
	}
	defer unlock()
	v := vs[0]
	c, err := a.pool.Open(name)
	if err != nil {
		return chain.Info{}, fmt.Errorf("volume %q: %w", name, err)
	}
	if ok, _ := a.HasSnapshot(name, snap); !ok {
		return chain.Info{}, fmt.Errorf("snapshot %s@%s: %w", name, snap, errdefs.ErrNotFound)
	}
	v.mu.Lock()
	if err := v.idleLocked("revert"); err != nil {
		v.mu.Unlock()
		return chain.Info{}, err
	}
	v.busy = "being reverted"
	replicated := a.engineStarter() != nil
	if !replicated {
		err = v.closeEngineLocked()
	}
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		v.busy = ""
		v.mu.Unlock()
	}()
	if err != nil {
		return chain.Info{}, err
	}
	if replicated {
		eng, err := a.controlEngine(v)
		if err != nil {
			return chain.Info{}, err
		}
		if err := eng.Revert(snap); err != nil {
			return chain.Info{}, fmt.Errorf("revert volume %q to %s: %w", name, snap, err)
		}
		return c.Info(), nil
	}
	if err := c.Revert(snap); err != nil {
		return chain.Info{}, fmt.Errorf("revert volume %q to %s: %w", name, snap, err)
	}
	v.mu.Lock()
	_, err = a.engineLocked(v)
	v.mu.Unlock()
	if err != nil {
		return chain.Info{}, err
	}
	return c.Info(), nil
}

// Status is what runs of one volume on this node.
type Status struct {
	chain.Info
	// Connections is the number of NBD connections open on the volume.
	Connections int
	// Mounts lists the directories the volume is mounted at, sorted.
	Mounts []string
	// Devices lists the block devices the volume is mapped at (Map).
	Devices []string
	// Limits are the QoS limits set on the volume (see SetLimits).
	Limits qos.Limits
}

// Status describes volume name; errdefs.ErrNotFound when it has no chain here.
func (a *Agent) Status(name string) (Status, error) {
	c, err := a.pool.Open(name)
	if err != nil {
		return Status{}, fmt.Errorf("volume %q: %w", name, err)
	}
	st := Status{Info: c.Info()}
	a.mu.Lock()
	v := a.vols[name]
	a.mu.Unlock()
	if v != nil {
		v.mu.Lock()
		st.Connections = v.conns
		st.Mounts = v.mountTargetsLocked()
		if v.mapped != nil {
			st.Devices = []string{v.mapped.BlockDevice()}
		}
		st.Limits = v.limits
		v.mu.Unlock()
	}
	return st, nil
}

// LastIO returns when the volume last had a read or write (trim and
// write-zeroes included) on this node since the agent started; the zero
// time if none.
func (a *Agent) LastIO(name string) time.Time {
	a.mu.Lock()
	v := a.vols[name]
	a.mu.Unlock()
	if v == nil {
		return time.Time{}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	t := v.lastIO
	if v.eng != nil {
		if e := v.eng.LastIO(); e.After(t) {
			t = e
		}
	}
	return t
}

// Exists says whether volume name has a chain in the pool.
func (a *Agent) Exists(name string) (bool, error) {
	_, err := a.pool.Open(name)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// List returns the names of the volumes in the pool, sorted.
func (a *Agent) List() ([]string, error) { return a.pool.List() }

// Usage reports the pool's space.
func (a *Agent) Usage() (chain.Usage, error) { return a.pool.Usage() }

// Exports returns the agent as the NBD server's export table.
func (a *Agent) Exports() nbd.Exports { return exports{a: a} }

type exports struct {
	a *Agent
	// attached: the connections are the kernel's NBD client's, made by
	// Mount and Map, which hold the volume; they are not counted.
	attached bool
}

// Open returns the volume's engine as an NBD backend and counts the
// connection until release is called.
func (e exports) Open(ctx context.Context, name string) (nbd.Backend, func(), error) {
	a := e.a
	if err := errdefs.ValidateName("volume", name); err != nil {
		return nil, nil, err
	}
	if gate := a.exportGate(); gate != nil {
		if err := gate(ctx, name); err != nil {
			return nil, nil, err
		}
	}
	if ok, err := a.Exists(name); err != nil {
		return nil, nil, err
	} else if !ok {
		return nil, nil, fmt.Errorf("volume %q: %w", name, errdefs.ErrNotFound)
	}
	v, err := a.entry(name)
	if err != nil {
		return nil, nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.busy != "" {
		return nil, nil, fmt.Errorf("volume %q is %s: %w", name, v.busy, errdefs.ErrUnavailable)
	}
	eng, err := a.engineLocked(v)
	if err != nil {
		return nil, nil, err
	}
	if e.attached {
		return eng, func() {}, nil
	}
	v.conns++
	var once sync.Once
	release := func() {
		once.Do(func() {
			v.mu.Lock()
			v.conns--
			v.mu.Unlock()
		})
	}
	return eng, release, nil
}

// Names lists the volumes of the pool that pass the export gate.
func (e exports) Names(ctx context.Context) ([]string, error) {
	names, err := e.a.pool.List()
	if err != nil {
		return nil, err
	}
	gate := e.a.exportGate()
	if gate == nil {
		return names, nil
	}
	out := names[:0]
	for _, n := range names {
		if gate(ctx, n) == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// MountOptions says how to mount a volume.
type MountOptions struct {
	Target   string // absolute directory
	FSType   string // "ext4" (default) or "xfs"; used when the volume has no filesystem
	ReadOnly bool
}

// Mount mounts the volume's filesystem at opts.Target from a block device
// of this node (the kernel's NBD client, or FUSE and a loop device: see
// Config.Attach), making the filesystem on first use. Mounting the same volume
// at the same target again is a no-op; a target that has another volume is
// errdefs.ErrFailedPrecondition.
func (a *Agent) Mount(ctx context.Context, name string, opts MountOptions) (MountInfo, error) {
	if !filepath.IsAbs(opts.Target) {
		return MountInfo{}, fmt.Errorf("mount target %q must be an absolute path: %w", opts.Target, errdefs.ErrInvalidArgument)
	}
	target := canonical(opts.Target)
	opts.Target = target
	vs, unlock, err := a.lockOps(name)
	if err != nil {
		return MountInfo{}, err
	}
	defer unlock()
	v := vs[0]
	a.mu.Lock()
	other, taken := a.mounts[target]
	a.mu.Unlock()
	if taken {
		if other == name {
			v.mu.Lock()
			m := v.mounts[target]
			v.mu.Unlock()
			return mountInfo(name, m), nil
		}
		return MountInfo{}, fmt.Errorf("%s already has volume %q mounted; unmount it first (strata volume unmount %s): %w",
			target, other, target, errdefs.ErrFailedPrecondition)
	}
	v.mu.Lock()
	if v.busy != "" {
		v.mu.Unlock()
		return MountInfo{}, fmt.Errorf("volume %q is %s: %w", name, v.busy, errdefs.ErrUnavailable)
	}
	if v.mapped != nil {
		dev := v.mapped.BlockDevice()
		v.mu.Unlock()
		return MountInfo{}, fmt.Errorf("volume %q is mapped at %s; unmap it first (strata volume unmap %s): %w", name, dev, name, errdefs.ErrFailedPrecondition)
	}
	eng, err := a.engineLocked(v)
	v.mu.Unlock()
	if err != nil {
		return MountInfo{}, err
	}
	m, err := fusefile.Mount(ctx, eng, fusefile.Options{
		Name:     name,
		StateDir: a.fuseDir,
		Target:   target,
		FSType:   opts.FSType,
		ReadOnly: opts.ReadOnly,
		Attach:   a.attach,
	})
	if err != nil {
		return MountInfo{}, fmt.Errorf("mount volume %q at %s: %w", name, target, err)
	}
	target = m.Target()
	v.mu.Lock()
	v.mounts[target] = m
	v.mu.Unlock()
	a.mu.Lock()
	a.mounts[target] = name
	a.mu.Unlock()
	return mountInfo(name, m), nil
}

// MountedAt returns the volume that Mount mounted at target, if any.
func (a *Agent) MountedAt(target string) (string, bool) {
	target = canonical(target)
	a.mu.Lock()
	defer a.mu.Unlock()
	name, ok := a.mounts[target]
	return name, ok
}

// Unmount unmounts what Mount mounted at target and returns the volume's
// name. A target the agent did not mount is errdefs.ErrNotFound.
func (a *Agent) Unmount(target string) (string, error) {
	target = canonical(target)
	a.mu.Lock()
	name, ok := a.mounts[target]
	a.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("no strata volume is mounted at %s: %w", target, errdefs.ErrNotFound)
	}
	vs, unlock, err := a.lockOps(name)
	if err != nil {
		return "", err
	}
	defer unlock()
	v := vs[0]
	v.mu.Lock()
	m := v.mounts[target]
	v.mu.Unlock()
	if m == nil {
		// Unmounted concurrently.
		return "", fmt.Errorf("no strata volume is mounted at %s: %w", target, errdefs.ErrNotFound)
	}
	if err := m.Unmount(); err != nil {
		return "", fmt.Errorf("unmount %s: %w", target, err)
	}
	v.mu.Lock()
	delete(v.mounts, target)
	v.mu.Unlock()
	a.mu.Lock()
	delete(a.mounts, target)
	a.mu.Unlock()
	return name, nil
}

// Close unmounts every mount the agent made, flushes and stops every
// engine, and closes the pool. Stop the NBD server first: connections still
// open fail with engine.ErrClosed afterwards.
func (a *Agent) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	vols := make([]*volume, 0, len(a.vols))
	for _, v := range a.vols {
		vols = append(vols, v)
	}
	a.mu.Unlock()

	var errs []error
	for _, v := range vols {
		v.op.Lock()
		v.mu.Lock()
		for _, t := range v.mountTargetsLocked() {
			if err := v.mounts[t].Unmount(); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", t, err))
			}
			delete(v.mounts, t)
		}
		if v.mapped != nil {
			if err := v.mapped.Unmap(); err != nil {
				errs = append(errs, fmt.Errorf("unmap volume %q: %w", v.name, err))
			}
			v.mapped = nil
		}
		if err := v.closeEngineLocked(); err != nil {
			errs = append(errs, err)
		}
		v.mu.Unlock()
		v.op.Unlock()
	}
	if err := a.pool.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close pool: %w", err))
	}
	return errors.Join(errs...)
}

// canonical returns the absolute, symlink-free form of a mount target when
// it exists, its cleaned form otherwise.
func canonical(target string) string {
	t := filepath.Clean(target)
	if r, err := filepath.EvalSymlinks(t); err == nil {
		return r
	}
	return t
}

// Package dockerplugin serves Docker's volume plugin protocol (JSON over HTTP
// on a unix socket, /run/docker/plugins/strata.sock) as a thin adapter over
// the Strata API: `docker volume create -d strata`, `docker run -v NAME:/data`,
// `docker volume inspect|ls|rm` map to CreateVolume (or CreateSnapshot plus a
// thin clone), MountVolume, GetVolume, ListVolumes and DeleteVolume.
//
// Docker passes a mount ID with every Mount and Unmount. The plugin counts
// the IDs per volume: the first Mount on this node mounts the volume at
// MountRoot/NAME, later ones share that mount, and the Unmount of the last ID
// unmounts it. The IDs (and the filesystem type asked for at create time) are
// kept in MountRoot/plugin-state.json, written crash-safely, so that a restart
// of the plugin or of the node keeps them; a reconcile loop mounts again the
// volumes that still have IDs and unmounts those that have none. A keeper
// (keeper.go) brings the mount made again after a node restart into the
// containers that kept running.
package dockerplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/size"
)

// VolumeAPI is the part of Strata's volume service the plugin uses.
// stratav1.VolumeServiceClient (client.Client.Volumes) implements it. Errors
// are expected to match the errdefs sentinels (the client translates them).
type VolumeAPI interface {
	CreateVolume(ctx context.Context, in *stratav1.CreateVolumeRequest, opts ...grpc.CallOption) (*stratav1.Volume, error)
	GetVolume(ctx context.Context, in *stratav1.GetVolumeRequest, opts ...grpc.CallOption) (*stratav1.Volume, error)
	ListVolumes(ctx context.Context, in *stratav1.ListVolumesRequest, opts ...grpc.CallOption) (*stratav1.ListVolumesResponse, error)
	DeleteVolume(ctx context.Context, in *stratav1.DeleteVolumeRequest, opts ...grpc.CallOption) (*stratav1.DeleteVolumeResponse, error)
	MountVolume(ctx context.Context, in *stratav1.MountVolumeRequest, opts ...grpc.CallOption) (*stratav1.MountVolumeResponse, error)
	UnmountVolume(ctx context.Context, in *stratav1.UnmountVolumeRequest, opts ...grpc.CallOption) (*stratav1.UnmountVolumeResponse, error)
}

// SnapshotAPI is the part of Strata's snapshot service the plugin uses.
// stratav1.SnapshotServiceClient (client.Client.Snapshots) implements it.
type SnapshotAPI interface {
	CreateSnapshot(ctx context.Context, in *stratav1.CreateSnapshotRequest, opts ...grpc.CallOption) (*stratav1.Snapshot, error)
	DeleteSnapshot(ctx context.Context, in *stratav1.DeleteSnapshotRequest, opts ...grpc.CallOption) (*stratav1.DeleteSnapshotResponse, error)
}

// Backend is the Strata API the plugin adapts. With a *client.Client c:
// Backend{Volumes: c.Volumes, Snapshots: c.Snapshots, Conn: c.Conn()}.
type Backend struct {
	Volumes   VolumeAPI
	Snapshots SnapshotAPI
	// Conn, optional, is told to reconnect at once when the API cannot be
	// reached, so that the plugin finds a restarted node within a second
	// rather than after gRPC's reconnect backoff (which grows to minutes).
	Conn Reconnecter
}

// Defaults of Options.
const (
	DefaultSize              = 10 << 30
	DefaultFS                = "ext4"
	DefaultReconcileInterval = 10 * time.Second
	stateFileName            = "plugin-state.json"
)

// Options says where and how the plugin mounts volumes.
type Options struct {
	// MountRoot is the directory under which volumes are mounted, one
	// directory per volume (MountRoot/NAME), and where the plugin keeps its
	// state file. Required; `strata up` uses DATA_DIR/docker-mounts.
	MountRoot string
	// DefaultFS is the filesystem made on a new volume's first mount when
	// `-o fs=` is not given: ext4 (when empty) or xfs.
	DefaultFS string
	// DefaultSize is the size of a new volume when `-o size=` is not given;
	// 10GiB when 0.
	DefaultSize int64
	// ReconcileInterval is how often Serve checks that volumes in use are
	// mounted and volumes not in use are not; 10s when 0, never when negative.
	ReconcileInterval time.Duration
	// Logger receives the plugin's log; slog.Default() when nil.
	Logger *slog.Logger
}

// Plugin implements the volume driver. Its methods are safe for concurrent
// use; operations on one volume are serialized.
type Plugin struct {
	api   Backend
	opts  Options
	log   *slog.Logger
	state *stateFile

	// mountedAt reports whether a filesystem is mounted at a directory; a
	// variable so that unit tests with a fake backend can replace it.
	mountedAt func(dir string) bool
	// hostMounts says the plugin may mount on the host itself: make the
	// mount root shared and keep a copy of every mount in use (keeper.go).
	// Off in unit tests whose fake API mounts nothing.
	hostMounts bool
	// keepers is set by Run once the mount root is shared.
	keepers atomic.Bool

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// New checks opts, creates the mount root and loads the state file.
func New(api Backend, opts Options) (*Plugin, error) {
	if api.Volumes == nil || api.Snapshots == nil {
		return nil, errors.New("dockerplugin: Backend needs Volumes and Snapshots")
	}
	if opts.MountRoot == "" {
		return nil, fmt.Errorf("dockerplugin: no mount root: %w", errdefs.ErrInvalidArgument)
	}
	root, err := filepath.Abs(opts.MountRoot)
	if err != nil {
		return nil, fmt.Errorf("dockerplugin: mount root: %w", err)
	}
	opts.MountRoot = root
	if opts.DefaultFS == "" {
		opts.DefaultFS = DefaultFS
	}
	if err := checkFS(opts.DefaultFS); err != nil {
		return nil, fmt.Errorf("dockerplugin: default filesystem: %w", err)
	}
	if opts.DefaultSize == 0 {
		opts.DefaultSize = DefaultSize
	}
	if opts.ReconcileInterval == 0 {
		opts.ReconcileInterval = DefaultReconcileInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("dockerplugin: %w", err)
	}
	// The node reports mount targets without symlinks; so must the plugin,
	// to recognize its own mounts in Volume.Mounts.
	if root, err = filepath.EvalSymlinks(root); err != nil {
		return nil, fmt.Errorf("dockerplugin: mount root: %w", err)
	}
	opts.MountRoot = root
	st, err := loadState(filepath.Join(root, stateFileName))
	if err != nil {
		return nil, fmt.Errorf("dockerplugin: %w", err)
	}
	r := &retrier{conn: api.Conn, budget: retryBudget}
	return &Plugin{
		api:        Backend{Volumes: retryVolumes{r, api.Volumes}, Snapshots: retrySnapshots{r, api.Snapshots}, Conn: api.Conn},
		opts:       opts,
		log:        opts.Logger.With("component", "dockerplugin"),
		state:      st,
		mountedAt:  kernelMountedAt,
		hostMounts: true,
		locks:      map[string]*sync.Mutex{},
	}, nil
}

// lock serializes the operations on one volume.
func (p *Plugin) lock(name string) func() {
	p.mu.Lock()
	l, ok := p.locks[name]
	if !ok {
		l = &sync.Mutex{}
		p.locks[name] = l
	}
	p.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// target is where the volume is mounted on this node.
func (p *Plugin) target(name string) string { return filepath.Join(p.opts.MountRoot, name) }

// createSpec is what the -o options of `docker volume create` ask for.
type createSpec struct {
	size         int64 // 0: default, or the snapshot's size for a clone
	repl         int   // replicas of a new volume: 1 to 3 (0: 1)
	fs           string
	from         string // volume to snapshot now and clone
	fromSnapshot string // VOL@SNAP to clone
}

// notYet are options that name features this release does not have yet (QoS
// and placement); they are refused with a message that says so rather than as
// unknown.
var notYet = map[string]string{
	"iops": "QoS", "readiops": "QoS", "writeiops": "QoS",
	"bandwidth": "QoS", "readbandwidth": "QoS", "writebandwidth": "QoS", "bps": "QoS",
	"zone": "placement", "rack": "placement", "node": "placement", "nodes": "placement",
	"labels": "placement", "placement": "placement", "affinity": "placement", "antiaffinity": "placement",
}

const knownOptions = "size, repl, fs, from, fromSnapshot"

// parseOptions reads the -o KEY=VALUE options. Keys are matched without
// regard to case (docker passes them as typed).
func parseOptions(opts map[string]string) (createSpec, error) {
	var s createSpec
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := strings.TrimSpace(opts[k])
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "size":
			n, err := size.Parse(v)
			if err != nil {
				return s, fmt.Errorf("option size=%s: %w", v, err)
			}
			s.size = n
		case "repl", "replicas":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 3 {
				return s, fmt.Errorf("option %s=%s: the number of replicas must be 1, 2 or 3: %w", k, v, errdefs.ErrInvalidArgument)
			}
			s.repl = n
		case "fs", "fstype":
			if err := checkFS(v); err != nil {
				return s, fmt.Errorf("option %s=%s: %w", k, v, err)
			}
			s.fs = strings.ToLower(v)
		case "from":
			if err := errdefs.ValidateName("volume", v); err != nil {
				return s, fmt.Errorf("option from=%s: %w", v, err)
			}
			s.from = v
		case "fromsnapshot":
			vol, snap, ok := strings.Cut(v, "@")
			if !ok {
				return s, fmt.Errorf("option fromSnapshot=%s: want VOLUME@SNAPSHOT: %w", v, errdefs.ErrInvalidArgument)
			}
			if err := errdefs.ValidateName("volume", vol); err != nil {
				return s, fmt.Errorf("option fromSnapshot=%s: %w", v, err)
			}
			if err := errdefs.ValidateName("snapshot", snap); err != nil {
				return s, fmt.Errorf("option fromSnapshot=%s: %w", v, err)
			}
			s.fromSnapshot = v
		default:
			if what, ok := notYet[strings.ToLower(k)]; ok {
				return s, fmt.Errorf("option %q: %s options are not available yet in this release of Strata: %w", k, what, errdefs.ErrInvalidArgument)
			}
			return s, fmt.Errorf("unknown option %q (known options: %s): %w", k, knownOptions, errdefs.ErrInvalidArgument)
		}
	}
	if s.from != "" && s.fromSnapshot != "" {
		return s, fmt.Errorf("options from and fromSnapshot exclude each other: %w", errdefs.ErrInvalidArgument)
	}
	if s.fs != "" && (s.from != "" || s.fromSnapshot != "") {
		return s, fmt.Errorf("option fs cannot be used with from or fromSnapshot: a clone keeps its source's filesystem: %w", errdefs.ErrInvalidArgument)
	}
	return s, nil
}

func checkFS(fs string) error {
	switch strings.ToLower(fs) {
	case "ext4", "xfs":
		return nil
	}
	return fmt.Errorf("filesystem %q is not supported (ext4 or xfs): %w", fs, errdefs.ErrInvalidArgument)
}

// validateVolumeName refuses the names Strata cannot take, with a hint for
// docker's anonymous volumes (64 hexadecimal characters).
func validateVolumeName(name string) error {
	err := errdefs.ValidateName("volume", name)
	if err != nil && len(name) == 64 {
		return fmt.Errorf("%w (anonymous volumes are not supported by the strata driver: name the volume, e.g. -v NAME:/data)", err)
	}
	return err
}

// Create makes the volume name: empty, or a thin clone of a snapshot taken
// now (from=VOL) or of an existing snapshot (fromSnapshot=VOL@SNAP).
func (p *Plugin) Create(ctx context.Context, name string, opts map[string]string) error {
	if err := validateVolumeName(name); err != nil {
		return err
	}
	spec, err := parseOptions(opts)
	if err != nil {
		return err
	}
	defer p.lock(name)()

	clone := spec.from != "" || spec.fromSnapshot != ""
	if clone {
		// A clone of an existing name would either fail or, for from=,
		// leave a snapshot behind for nothing: say so first.
		if _, err := p.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: name}); err == nil {
			return fmt.Errorf("volume %q already exists: %w", name, errdefs.ErrAlreadyExists)
		} else if !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("volume %q: %w", name, err)
		}
	}
	if clone {
		var err error
		source := spec.from
		if spec.from != "" {
			err = p.createFromVolume(ctx, name, spec)
		} else {
			source, _, _ = strings.Cut(spec.fromSnapshot, "@")
			_, err = p.api.Volumes.CreateVolume(ctx, &stratav1.CreateVolumeRequest{Name: name, SizeBytes: spec.size, FromSnapshot: spec.fromSnapshot})
			if err != nil {
				err = fmt.Errorf("clone %s as %q: %w", spec.fromSnapshot, name, err)
			} else {
				p.log.Info("volume created", "volume", name, "from_snapshot", spec.fromSnapshot)
			}
		}
		if err != nil {
			return err
		}
		// The clone has its source's filesystem: remember it for inspect.
		if fs := p.state.get(source).FS; fs != "" {
			if err := p.state.update(name, func(v *volumeState) { v.FS = fs }); err != nil {
				p.log.Warn("could not record the clone's filesystem", "volume", name, "err", err)
			}
		}
		return nil
	}
	sz := spec.size
	if sz == 0 {
		sz = p.opts.DefaultSize
	}
	fs := spec.fs
	if fs == "" {
		fs = p.opts.DefaultFS
	}
	// Record the filesystem before the volume exists, so that a volume is
	// never visible with a filesystem choice the plugin has lost.
	prev := p.state.get(name)
	if err := p.state.update(name, func(v *volumeState) { v.FS = fs }); err != nil {
		return err
	}
	if _, err := p.api.Volumes.CreateVolume(ctx, &stratav1.CreateVolumeRequest{Name: name, SizeBytes: sz, Replicas: int32(spec.repl)}); err != nil {
		if prev.FS != fs {
			// Best effort: the entry only matters for a volume of that name.
			_ = p.state.update(name, func(v *volumeState) { v.FS = prev.FS })
		}
		return fmt.Errorf("create volume %q: %w", name, err)
	}
	p.log.Info("volume created", "volume", name, "size", size.Format(sz), "fs", fs)
	return nil
}

// createFromVolume snapshots spec.from now and clones that snapshot as name.
// The snapshot is removed again when the clone cannot be made.
func (p *Plugin) createFromVolume(ctx context.Context, name string, spec createSpec) error {
	snapName := cloneSnapshotName(name, time.Now())
	// Containers on this node may be writing to the source: write back
	// what their filesystem has cached, so that the clone holds everything
	// written until now, not only what had reached the device (the clone
	// is then as consistent as after a clean sync, not an fsfreeze).
	if target := p.target(spec.from); p.mountedAt(target) {
		if err := syncFS(target); err != nil {
			p.log.Warn("could not sync the source before snapshotting it", "volume", spec.from, "err", err)
		}
	}
	snap, err := p.api.Snapshots.CreateSnapshot(ctx, &stratav1.CreateSnapshotRequest{Volume: spec.from, Name: snapName})
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("option from=%s: source volume %q: %w", spec.from, spec.from, err)
		}
		return fmt.Errorf("snapshot %q for the clone: %w", spec.from, err)
	}
	if snap.GetName() != "" {
		snapName = snap.GetName()
	}
	source := spec.from + "@" + snapName
	if _, err := p.api.Volumes.CreateVolume(ctx, &stratav1.CreateVolumeRequest{Name: name, SizeBytes: spec.size, FromSnapshot: source}); err != nil {
		if _, derr := p.api.Snapshots.DeleteSnapshot(context.WithoutCancel(ctx), &stratav1.DeleteSnapshotRequest{Volume: spec.from, Name: snapName}); derr != nil {
			p.log.Warn("could not remove the snapshot of a failed clone", "snapshot", source, "err", derr)
		}
		return fmt.Errorf("clone %s as %q: %w", source, name, err)
	}
	p.log.Info("volume created", "volume", name, "from_snapshot", source)
	return nil
}

// cloneSnapshotName names the snapshot that from=VOL takes for clone name:
// "for-NAME-TIME", a DNS label of at most 63 characters.
func cloneSnapshotName(name string, now time.Time) string {
	suffix := "-" + strconv.FormatInt(now.UnixMilli(), 36)
	base := "for-" + name
	if max := 63 - len(suffix); len(base) > max {
		base = strings.TrimRight(base[:max], "-")
	}
	return base + suffix
}

// Remove deletes the volume. It is refused while containers on this node use
// it. Removing a volume that does not exist succeeds, so that docker can
// forget a volume deleted with the strata CLI.
func (p *Plugin) Remove(ctx context.Context, name string) error {
	defer p.lock(name)()
	vs := p.state.get(name)
	if n := len(vs.Mounts); n > 0 {
		return fmt.Errorf("volume %q is in use by %d container(s) on this node: stop and remove them first: %w", name, n, errdefs.ErrFailedPrecondition)
	}
	v, err := p.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: name})
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return p.forget(name)
	case err != nil:
		return fmt.Errorf("volume %q: %w", name, err)
	}
	// A mount left behind by a failed unmount or a crash: nobody uses it.
	if err := p.unmountIdle(ctx, v); err != nil {
		return err
	}
	if _, err := p.api.Volumes.DeleteVolume(ctx, &stratav1.DeleteVolumeRequest{Name: name}); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("remove volume %q: %w", name, err)
	}
	p.log.Info("volume removed", "volume", name)
	return p.forget(name)
}

// forget drops the state of a volume that no longer exists.
func (p *Plugin) forget(name string) error {
	if err := p.state.remove(name); err != nil {
		return err
	}
	_ = os.Remove(p.target(name)) // an empty directory; a mounted one stays
	return nil
}

// Mount mounts the volume on this node for the Docker mount id, or shares
// the mount already there, and returns the mount path.
func (p *Plugin) Mount(ctx context.Context, name, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("mount of %q without a mount ID: %w", name, errdefs.ErrInvalidArgument)
	}
	defer p.lock(name)()
	vs := p.state.get(name)
	if err := p.ensureMounted(ctx, name, vs.FS); err != nil {
		return "", err
	}
	users := len(vs.Mounts)
	if !contains(vs.Mounts, id) {
		if err := p.state.update(name, func(v *volumeState) { v.Mounts = append(v.Mounts, id) }); err != nil {
			if users == 0 {
				p.unmountBestEffort(ctx, name)
			}
			return "", err
		}
		users++
	}
	p.log.Info("volume mounted", "volume", name, "id", id, "users", users)
	return p.target(name), nil
}

// ensureMounted makes sure the volume's filesystem is mounted at its target
// on this node, both in the API's view and in the kernel's. It clears what a
// crash or a node restart may have left: a kernel mount the node does not
// know (a dead FUSE connection), or a mount the node lists that is gone.
func (p *Plugin) ensureMounted(ctx context.Context, name, fs string) error {
	target := p.target(name)
	v, err := p.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: name})
	if err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	apiMounted, kernelMounted := contains(v.GetMounts(), target), p.mountedAt(target)
	if apiMounted && kernelMounted {
		return p.keep(name, false)
	}
	if apiMounted {
		if _, err := p.api.Volumes.UnmountVolume(ctx, &stratav1.UnmountVolumeRequest{Target: target}); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			p.log.Warn("could not clear a stale mount record", "volume", name, "target", target, "err", err)
		}
	}
	if kernelMounted {
		p.log.Warn("detaching a stale mount the node does not know", "volume", name, "target", target)
		if err := detach(target); err != nil {
			return fmt.Errorf("volume %q: stale mount at %s: %w", name, target, err)
		}
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("volume %q: %w", name, err)
	}
	if fs == "" {
		fs = p.opts.DefaultFS
	}
	if _, err := p.api.Volumes.MountVolume(ctx, &stratav1.MountVolumeRequest{Name: name, Target: target, FsType: fs}); err != nil {
		return fmt.Errorf("mount volume %q at %s: %w", name, target, err)
	}
	if !p.mountedAt(target) {
		return fmt.Errorf("mount volume %q: the node reports it mounted at %s, but nothing is mounted there", name, target)
	}
	return p.keep(name, true)
}

// keep makes sure the volume's keeper (keeper.go) holds its current mount:
// a new keeper for a volume that has none and, after a node restart (fresh:
// the target was mounted again), the new mount stacked on the keeper's,
// which brings it into the running containers.
func (p *Plugin) keep(name string, fresh bool) error {
	if !p.keepers.Load() {
		return nil
	}
	nsFile := p.keeperFile(name)
	held := p.mountedAt(nsFile)
	var err error
	switch {
	case !held:
		err = holdMount(p.target(name), nsFile)
	case fresh:
		err = stackMount(p.target(name), nsFile)
		if err == nil {
			p.log.Info("volume mounted again for the containers that ran through a node restart", "volume", name)
		}
	}
	if err != nil {
		// The volume works; only running containers would miss it
		// after a node restart.
		p.log.Warn("running containers will lose this volume if the node restarts", "volume", name, "err", err)
	}
	return nil
}

// unkeep drops the volume's keeper, before the target is unmounted, so that
// the node's loop device is free to detach.
func (p *Plugin) unkeep(name string) error {
	return releaseMount(p.keeperFile(name))
}

// Unmount releases the Docker mount id; the last one unmounts the volume.
func (p *Plugin) Unmount(ctx context.Context, name, id string) error {
	defer p.lock(name)()
	vs := p.state.get(name)
	if !contains(vs.Mounts, id) {
		// Not ours (a mount from before the state was lost, or a repeated
		// call): nothing to release. Unmount only if no one else uses it.
		if len(vs.Mounts) == 0 {
			p.unmountBestEffort(ctx, name)
		}
		return nil
	}
	left := remove(vs.Mounts, id)
	// The count is saved first: a crash before the unmount leaves an idle
	// mount that the reconcile loop or Remove clears, never a count that
	// keeps a volume mounted forever.
	if err := p.state.update(name, func(v *volumeState) { v.Mounts = left }); err != nil {
		return err
	}
	if len(left) > 0 {
		p.log.Info("volume released", "volume", name, "id", id, "users", len(left))
		return nil
	}
	if err := p.unkeep(name); err != nil {
		return fmt.Errorf("%w (it will be retried)", err)
	}
	if _, err := p.api.Volumes.UnmountVolume(ctx, &stratav1.UnmountVolumeRequest{Target: p.target(name)}); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("unmount volume %q (it will be retried): %w", name, err)
	}
	p.log.Info("volume unmounted", "volume", name, "id", id)
	return nil
}

// unmountIdle unmounts v from its target on this node if it is mounted there.
func (p *Plugin) unmountIdle(ctx context.Context, v *stratav1.Volume) error {
	target := p.target(v.GetName())
	if err := p.unkeep(v.GetName()); err != nil {
		return err
	}
	if contains(v.GetMounts(), target) {
		if _, err := p.api.Volumes.UnmountVolume(ctx, &stratav1.UnmountVolumeRequest{Target: target}); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("unmount volume %q: %w", v.GetName(), err)
		}
	}
	if p.mountedAt(target) {
		if err := detach(target); err != nil {
			return fmt.Errorf("volume %q: stale mount at %s: %w", v.GetName(), target, err)
		}
	}
	return nil
}

func (p *Plugin) unmountBestEffort(ctx context.Context, name string) {
	v, err := p.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: name})
	if err == nil {
		err = p.unmountIdle(ctx, v)
	}
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		p.log.Warn("unmount of an unused volume failed; the reconcile loop retries", "volume", name, "err", err)
	}
}

// Path returns the mount path of a volume mounted on this node, or "".
func (p *Plugin) Path(ctx context.Context, name string) (string, error) {
	if len(p.state.get(name).Mounts) == 0 {
		return "", nil
	}
	return p.target(name), nil
}

// VolumeInfo is one volume as docker sees it.
type VolumeInfo struct {
	Name       string            `json:"Name"`
	Mountpoint string            `json:"Mountpoint,omitempty"`
	CreatedAt  string            `json:"CreatedAt,omitempty"`
	Status     map[string]string `json:"Status,omitempty"`
}

// Get returns the volume with Strata's status for `docker volume inspect`.
func (p *Plugin) Get(ctx context.Context, name string) (*VolumeInfo, error) {
	v, err := p.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: name})
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("volume %q not found: %w", name, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("volume %q: %w", name, err)
	}
	info := p.info(v)
	vs := p.state.get(name)
	fs := vs.FS
	if fs == "" && v.GetParent() == "" {
		fs = p.opts.DefaultFS
	}
	parent := v.GetParent()
	if parent == "" {
		parent = "-"
	}
	info.Status = map[string]string{
		"size":       size.Format(v.GetSizeBytes()),
		"sizeBytes":  strconv.FormatInt(v.GetSizeBytes(), 10),
		"allocated":  size.Format(v.GetAllocatedBytes()),
		"repl":       strconv.Itoa(max(int(v.GetReplicasWanted()), 1)),
		"parent":     parent,
		"state":      v.GetState(),
		"snapshots":  strconv.Itoa(int(v.GetSnapshotCount())),
		"node":       v.GetNode(),
		"containers": strconv.Itoa(len(vs.Mounts)),
	}
	if fs != "" {
		info.Status["fs"] = fs
	}
	return info, nil
}

func (p *Plugin) info(v *stratav1.Volume) *VolumeInfo {
	info := &VolumeInfo{Name: v.GetName()}
	if len(p.state.get(v.GetName()).Mounts) > 0 {
		info.Mountpoint = p.target(v.GetName())
	}
	if ts := v.GetCreatedAt(); ts != nil {
		info.CreatedAt = ts.AsTime().UTC().Format(time.RFC3339)
	}
	return info
}

// List returns every Strata volume: volumes made with the strata CLI can be
// used by containers too.
func (p *Plugin) List(ctx context.Context) ([]*VolumeInfo, error) {
	resp, err := p.api.Volumes.ListVolumes(ctx, &stratav1.ListVolumesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	out := make([]*VolumeInfo, 0, len(resp.GetVolumes()))
	for _, v := range resp.GetVolumes() {
		out = append(out, p.info(v))
	}
	return out, nil
}

// Reconcile brings the mounts on this node in line with the counts: volumes
// that containers use are mounted (again, after a node restart), volumes that
// none use are unmounted (after a failed unmount or a crash), and the state of
// volumes deleted outside docker is dropped.
func (p *Plugin) Reconcile(ctx context.Context) error {
	resp, err := p.api.Volumes.ListVolumes(ctx, &stratav1.ListVolumesRequest{})
	if err != nil {
		return fmt.Errorf("list volumes: %w", err)
	}
	exists := map[string]*stratav1.Volume{}
	for _, v := range resp.GetVolumes() {
		exists[v.GetName()] = v
	}
	var errs []error
	for name, vs := range p.state.all() {
		_, ok := exists[name]
		switch {
		case !ok && len(vs.Mounts) == 0:
			// Deleted with the CLI, or a create that failed half way.
			// A just-started Create holds the lock and saves first.
			p.reconcileOne(func() error {
				if _, err := p.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: name}); errors.Is(err, errdefs.ErrNotFound) {
					return p.forget(name)
				}
				return nil
			}, name)
		case !ok:
			p.log.Warn("volume in use by containers no longer exists", "volume", name, "containers", len(vs.Mounts))
		case len(vs.Mounts) > 0:
			errs = append(errs, p.reconcileOne(func() error {
				return p.ensureMounted(ctx, name, p.state.get(name).FS)
			}, name))
		}
	}
	for name, v := range exists {
		target := p.target(name)
		if !contains(v.GetMounts(), target) && !p.mountedAt(target) && !p.mountedAt(p.keeperFile(name)) {
			continue
		}
		errs = append(errs, p.reconcileOne(func() error {
			if len(p.state.get(name).Mounts) > 0 {
				return nil
			}
			v, err := p.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: name})
			if err != nil {
				return err
			}
			if !contains(v.GetMounts(), p.target(name)) && !p.mountedAt(p.target(name)) {
				return nil // unmounted meanwhile
			}
			p.log.Info("unmounting a volume no container uses", "volume", name)
			return p.unmountIdle(ctx, v)
		}, name))
	}
	return errors.Join(errs...)
}

func (p *Plugin) reconcileOne(fn func() error, name string) error {
	defer p.lock(name)()
	if err := fn(); err != nil {
		p.log.Warn("reconcile", "volume", name, "err", err)
		return err
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func remove(list []string, s string) []string {
	out := make([]string, 0, len(list))
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

package csi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/mountinfo"
)

// node is the Node service.
type node struct {
	csi.UnimplementedNodeServer
	d *Driver
}

func (node) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		csi.NodeServiceCapability_RPC_VOLUME_CONDITION,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: t},
		}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetInfo reports the node's Strata name as its ID, and its topology:
// the node, and its zone when it has a zone label.
func (n node) NodeGetInfo(ctx context.Context, _ *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	self, err := n.d.self(ctx)
	if err != nil {
		return nil, err
	}
	return &csi.NodeGetInfoResponse{
		NodeId:             self.GetName(),
		AccessibleTopology: &csi.Topology{Segments: nodeSegments(self.GetName(), self.GetLabels())},
	}, nil
}

// localVolume returns a volume that this node holds: NotFound when there is
// none, FailedPrecondition when it lives on another node.
func (d *Driver) localVolume(ctx context.Context, id string) (*stratav1.Volume, error) {
	v, err := d.getVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	if v.GetNode() != d.opts.NodeName {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s lives on node %s, not on %s (volumes are not replicated to other nodes yet)", id, v.GetNode(), d.opts.NodeName)
	}
	return v, nil
}

// NodeStageVolume makes the volume usable on this node. A mount volume's
// filesystem is mounted at the staging path (FUSE file, loop device, the
// filesystem made on first use and grown when the volume grew); a block
// volume is mapped and its device bind mounted at STAGING/VOLUME_ID.
// Staging again at the same path is a no-op; a path that holds another
// volume is FailedPrecondition.
func (n node) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	d := n.d
	if err := require("volume_id", req.GetVolumeId(), "staging_target_path", req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	a, err := checkCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	id := req.GetVolumeId()
	defer d.lock(id)()
	v, err := d.localVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	staging := canonical(req.GetStagingTargetPath())
	if a.block {
		return &csi.NodeStageVolumeResponse{}, d.stageBlock(ctx, id, staging)
	}
	if slices.Contains(v.GetMounts(), staging) {
		return &csi.NodeStageVolumeResponse{}, nil
	}
	// The filesystem the volume was made for wins over the capability's:
	// the CO may name its default for volumes made with parameter fs.
	fs := cmp.Or(v.GetLabels()[LabelFS], a.fs, req.GetVolumeContext()[ParamFS])
	if _, err := d.api.Volumes.MountVolume(ctx, &stratav1.MountVolumeRequest{Name: id, Target: staging, FsType: fs}); err != nil {
		return nil, err
	}
	d.log.Info("volume staged", "volume", id, "staging", staging, "fs", fs)
	return &csi.NodeStageVolumeResponse{}, nil
}

// stageBlock maps the volume and bind mounts its device at staging/id.
func (d *Driver) stageBlock(ctx context.Context, id, staging string) error {
	m, err := d.api.Volumes.MapVolume(ctx, &stratav1.MapVolumeRequest{Name: id})
	if err != nil {
		return err
	}
	file := filepath.Join(staging, id)
	ms, err := mountinfo.Read()
	if err != nil {
		return err
	}
	if at, ok := mountinfo.At(ms, file); ok {
		if at.Root == "/"+filepath.Base(m.GetDevice()) {
			return nil
		}
		// A bind of a device from before a restart of the node.
		if err := unix.Unmount(file, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount stale %s: %w", file, err)
		}
	}
	if err := bindFile(m.GetDevice(), file, false); err != nil {
		return fmt.Errorf("stage block volume %s at %s: %w", id, file, err)
	}
	d.log.Info("volume staged", "volume", id, "staging", file, "device", m.GetDevice())
	return nil
}

// NodeUnstageVolume undoes NodeStageVolume. A volume that is not staged
// there (or does not exist) is unstaged already; a path that holds another
// volume is left alone.
func (n node) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	d := n.d
	if err := require("volume_id", req.GetVolumeId(), "staging_target_path", req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	id := req.GetVolumeId()
	if !validVolumeID(id) {
		return &csi.NodeUnstageVolumeResponse{}, nil
	}
	defer d.lock(id)()
	staging := canonical(req.GetStagingTargetPath())
	file := filepath.Join(staging, id)
	if _, err := os.Lstat(file); err == nil {
		if err := unmountAndRemove(file); err != nil {
			return nil, err
		}
		if _, err := d.api.Volumes.UnmapVolume(ctx, &stratav1.UnmapVolumeRequest{Name: id}); err != nil && status.Code(err) != codes.NotFound {
			return nil, err
		}
		d.log.Info("volume unstaged", "volume", id, "staging", file)
		return &csi.NodeUnstageVolumeResponse{}, nil
	}
	v, err := d.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: id})
	if status.Code(err) == codes.NotFound {
		return &csi.NodeUnstageVolumeResponse{}, nil
	} else if err != nil {
		return nil, err
	}
	if !slices.Contains(v.GetMounts(), staging) {
		return &csi.NodeUnstageVolumeResponse{}, nil
	}
	if _, err := d.api.Volumes.UnmountVolume(ctx, &stratav1.UnmountVolumeRequest{Target: staging}); err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	d.log.Info("volume unstaged", "volume", id, "staging", staging)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// staged returns the mount a published target binds: the filesystem at the
// staging path, or the device at STAGING/VOLUME_ID.
func (d *Driver) staged(ms []mountinfo.Mount, v *stratav1.Volume, staging string, block bool) (mountinfo.Mount, error) {
	src := staging
	if block {
		src = filepath.Join(staging, v.GetName())
	}
	m, ok := mountinfo.At(ms, src)
	if !ok || !block && !slices.Contains(v.GetMounts(), staging) {
		return m, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s: NodeStageVolume first", v.GetName(), staging)
	}
	return m, nil
}

// NodePublishVolume bind mounts the staged volume at the target path (a
// directory for a filesystem, a file for a block device), read-only when
// asked. Publishing again with the same mode is a no-op; a target that
// holds something else is AlreadyExists. A SINGLE_NODE_SINGLE_WRITER volume
// published at another target is FailedPrecondition.
func (n node) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	d := n.d
	switch {
	case req.GetVolumeId() == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case req.GetTargetPath() == "":
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	case req.GetVolumeCapability() == nil:
		return nil, status.Error(codes.InvalidArgument, "volume_capability is required")
	case req.GetStagingTargetPath() == "":
		return nil, status.Error(codes.InvalidArgument, "staging_target_path is required: the driver stages volumes (STAGE_UNSTAGE_VOLUME)")
	}
	a, err := checkCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	defer d.lock(req.GetVolumeId())()
	v, err := d.localVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	ms, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	staging := canonical(req.GetStagingTargetPath())
	src, err := d.staged(ms, v, staging, a.block)
	if err != nil {
		return nil, err
	}
	readOnly := req.GetReadonly() || a.readOnly
	target := canonical(req.GetTargetPath())
	if at, ok := mountinfo.At(ms, target); ok {
		if sameSource(at, src) && at.ReadOnly() == readOnly {
			return &csi.NodePublishVolumeResponse{}, nil
		}
		return nil, status.Errorf(codes.AlreadyExists, "%s holds another volume, or this one with another read-only mode", target)
	}
	if a.singleWriter {
		for _, m := range ms {
			if sameSource(m, src) && m.MountPoint != src.MountPoint && m.MountPoint != target {
				return nil, status.Errorf(codes.FailedPrecondition, "volume %s is SINGLE_NODE_SINGLE_WRITER and published at %s already", v.GetName(), m.MountPoint)
			}
		}
	}
	if a.block {
		err = bindFile(src.MountPoint, target, readOnly)
	} else {
		err = bindDir(src.MountPoint, target, readOnly)
	}
	if err != nil {
		return nil, fmt.Errorf("publish volume %s at %s: %w", v.GetName(), target, err)
	}
	d.log.Info("volume published", "volume", v.GetName(), "target", target, "read_only", readOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume unmounts the target and removes it. A target that is
// gone is unpublished already.
func (n node) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if err := require("volume_id", req.GetVolumeId(), "target_path", req.GetTargetPath()); err != nil {
		return nil, err
	}
	if validVolumeID(req.GetVolumeId()) {
		defer n.d.lock(req.GetVolumeId())()
	}
	if err := unmountAndRemove(canonical(req.GetTargetPath())); err != nil {
		return nil, err
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// published returns the mount of volume v at path (a staging or target
// path), NotFound when v is not there.
// The mount table is returned too.
func (d *Driver) published(ctx context.Context, id, path string) (*stratav1.Volume, mountinfo.Mount, []mountinfo.Mount, error) {
	v, err := d.getVolume(ctx, id)
	if err != nil {
		return nil, mountinfo.Mount{}, nil, err
	}
	path = canonical(path)
	ms, err := mountinfo.Read()
	if err != nil {
		return nil, mountinfo.Mount{}, nil, err
	}
	at, ok := mountinfo.At(ms, path)
	if ok {
		for _, s := range v.GetMounts() {
			if m, ok := mountinfo.At(ms, s); ok && sameSource(at, m) {
				return v, at, ms, nil
			}
		}
		if isDeviceOf(at, v) {
			return v, at, ms, nil
		}
	}
	return nil, mountinfo.Mount{}, nil, status.Errorf(codes.NotFound, "volume %s is not published at %s", id, path)
}

// isDeviceOf says whether m is a bind mount of the device v is mapped at.
func isDeviceOf(m mountinfo.Mount, v *stratav1.Volume) bool {
	for _, dev := range v.GetDevices() {
		if m.Root == "/"+filepath.Base(dev) {
			return true
		}
	}
	return false
}

// NodeGetVolumeStats reports the bytes and inodes of the filesystem at a
// published path, or the size of a block volume's device, and the
// volume's condition: abnormal when the volume is not ready or its
// filesystem fails (after I/O errors ext4 is read-only, xfs shut down).
func (n node) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if err := require("volume_id", req.GetVolumeId(), "volume_path", req.GetVolumePath()); err != nil {
		return nil, err
	}
	v, at, ms, err := n.d.published(ctx, req.GetVolumeId(), req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	cond := condition(v)
	path := at.MountPoint
	if isDeviceOf(at, v) {
		size, err := deviceSize(path)
		if err != nil {
			return &csi.NodeGetVolumeStatsResponse{VolumeCondition: &csi.VolumeCondition{Abnormal: true, Message: err.Error()}}, nil
		}
		return &csi.NodeGetVolumeStatsResponse{
			Usage:           []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}},
			VolumeCondition: cond,
		}, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return &csi.NodeGetVolumeStatsResponse{VolumeCondition: &csi.VolumeCondition{Abnormal: true, Message: fmt.Sprintf("filesystem of volume %s fails: %v", v.GetName(), err)}}, nil
	}
	if !cond.Abnormal {
		for _, s := range v.GetMounts() {
			if m, ok := mountinfo.At(ms, s); ok && m.ReadOnly() {
				cond = &csi.VolumeCondition{Abnormal: true, Message: fmt.Sprintf("filesystem of volume %s is read-only at %s (remounted read-only after errors?)", v.GetName(), s)}
			}
		}
	}
	bs := st.Bsize
	return &csi.NodeGetVolumeStatsResponse{
		Usage: []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: int64(st.Blocks) * bs, Available: int64(st.Bavail) * bs, Used: int64(st.Blocks-st.Bfree) * bs},
			{Unit: csi.VolumeUsage_INODES, Total: int64(st.Files), Available: int64(st.Ffree), Used: int64(st.Files - st.Ffree)},
		},
		VolumeCondition: cond,
	}, nil
}

// NodeExpandVolume grows the filesystem of a mount volume to fill the
// volume (it grew with ControllerExpandVolume, maybe while not mounted);
// a block volume's device grew already.
func (n node) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	d := n.d
	if err := require("volume_id", req.GetVolumeId(), "volume_path", req.GetVolumePath()); err != nil {
		return nil, err
	}
	if req.GetVolumeCapability() != nil {
		if _, err := checkCapability(req.GetVolumeCapability()); err != nil {
			return nil, err
		}
	}
	v, _, _, err := d.published(ctx, req.GetVolumeId(), req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	defer d.lock(v.GetName())()
	size := max(v.GetSizeBytes(), roundUp(req.GetCapacityRange().GetRequiredBytes()))
	// At the volume's size, ResizeVolume grows only mounted filesystems
	// that are smaller than the volume.
	rv, err := d.api.Volumes.ResizeVolume(ctx, &stratav1.ResizeVolumeRequest{Name: v.GetName(), SizeBytes: size})
	if err != nil {
		return nil, err
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: rv.GetSizeBytes()}, nil
}

// sameSource says whether two mounts show the same thing: the same
// filesystem and directory in it, or binds of the same device node.
func sameSource(a, b mountinfo.Mount) bool { return a.Dev == b.Dev && a.Root == b.Root }

// canonical returns path with symbolic links resolved when it exists (as
// the mount table shows it), cleaned otherwise.
func canonical(path string) string {
	p := filepath.Clean(path)
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// bindDir bind mounts directory src at target, made when missing.
func bindDir(src, target string, readOnly bool) error {
	if err := os.MkdirAll(target, 0o750); err != nil {
		return err
	}
	return bind(src, target, readOnly)
}

// bindFile bind mounts src (a device node) at the file target, made when
// missing (with its directory).
func bindFile(src, target string, readOnly bool) error {
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	if err := bind(src, target, readOnly); err != nil {
		os.Remove(target)
		return err
	}
	return nil
}

// bind bind mounts src at target, then makes that mount read-only when
// asked (a bind mount takes its flags from a remount).
func bind(src, target string, readOnly bool) error {
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", src, target, err)
	}
	if readOnly {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			unix.Unmount(target, 0)
			return fmt.Errorf("make the bind mount at %s read-only: %w", target, err)
		}
	}
	return nil
}

// unmountAndRemove unmounts everything mounted at path and removes it (a
// file or an empty directory); a path that does not exist is fine.
func unmountAndRemove(path string) error {
	for range 8 {
		err := unix.Unmount(path, 0)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not a mount point (any more)
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// deviceSize returns the size of the block device at path.
func deviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

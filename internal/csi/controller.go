package csi

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
)

// controller is the Controller service.
type controller struct {
	csi.UnimplementedControllerServer
	d *Driver
}

// ControllerGetCapabilities lists what the controller does. Not advertised:
// PUBLISH_READONLY and LIST_VOLUMES_PUBLISHED_NODES (publishing is a check
// until replication makes it an attach), MODIFY_VOLUME.
func (controller) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_VOLUME,
		csi.ControllerServiceCapability_RPC_VOLUME_CONDITION,
		csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t},
		}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// source is a new volume's content source, resolved.
type source struct {
	parent     string // "VOL@SNAP" the volume is cloned from, or ""
	size       int64  // the source's size: the smallest the volume may be
	fs         string // the source volume's filesystem label
	fromVolume string // a source volume to snapshot first (parent's VOL)
}

// CreateVolume makes a volume on this node: empty, or a thin clone of a
// snapshot or (through a snapshot it takes now) of a volume.
func (c controller) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	d := c.d
	if err := require("name", req.GetName()); err != nil {
		return nil, err
	}
	capFS, block, err := checkCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return nil, err
	}
	params, err := parseVolumeParams(req.GetParameters())
	if err != nil {
		return nil, err
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, status.Error(codes.InvalidArgument, "mutable parameters (VolumeAttributesClass) are not supported")
	}
	if params.fs != "" && capFS != "" && params.fs != capFS {
		return nil, status.Errorf(codes.InvalidArgument, "parameter fs=%s and the capability's fs_type %s differ", params.fs, capFS)
	}
	fs := cmp.Or(params.fs, capFS)
	self, err := d.self(ctx)
	if err != nil {
		return nil, err
	}
	seg := nodeSegments(self.Name, self.Labels)
	if !accessible(req.GetAccessibilityRequirements(), seg) {
		return nil, status.Errorf(codes.ResourceExhausted, "no requisite topology contains %s, where this controller makes volumes (a volume lives on the node that creates it)", describe(seg))
	}
	if !zoneAllowed(params.zones, self.Labels[zoneLabel]) {
		return nil, status.Errorf(codes.ResourceExhausted, "parameter zones=%s: %s, where this controller makes volumes, is in none of them", strings.Join(params.zones, ","), describe(seg))
	}

	name := strataName(req.GetName())
	defer d.lock(name)()
	src, err := d.contentSource(ctx, name, req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	if src.fs != "" && fs != "" && src.fs != fs {
		return nil, status.Errorf(codes.InvalidArgument, "the content source has a %s filesystem, and a clone keeps its source's; %s was asked for", src.fs, fs)
	}
	fs = cmp.Or(src.fs, fs)
	if fs == "" && !block {
		fs = "ext4"
	}
	size, err := volumeSize(req.GetCapacityRange(), src.size)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{LabelName: nameLabel(req.GetName())}
	for k, v := range map[string]string{LabelFS: fs, LabelPVCName: params.pvcName, LabelPVCNamespace: params.pvcNamespace} {
		if v != "" {
			labels[k] = v
		}
	}

	v, err := d.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: name})
	switch {
	case err == nil:
		if v.GetLabels()[LabelName] != labels[LabelName] {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s exists and was not made for the name %q", name, req.GetName())
		}
		if !sizeFits(req.GetCapacityRange(), v.GetSizeBytes()) || v.GetParent() != src.parent || !maps.Equal(v.GetLabels(), labels) {
			return nil, status.Errorf(codes.AlreadyExists, "volume %s (for %q) exists with another size, source or parameters", name, req.GetName())
		}
	case status.Code(err) != codes.NotFound:
		return nil, err
	default:
		if v, err = d.create(ctx, name, size, src, labels, params.qos, params.repl); err != nil {
			return nil, err
		}
		d.log.Info("volume created", "volume", name, "csi_name", req.GetName(), "size", v.GetSizeBytes(), "from", src.parent)
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:           v.GetName(),
		CapacityBytes:      v.GetSizeBytes(),
		VolumeContext:      volumeContext(v),
		ContentSource:      req.GetVolumeContentSource(),
		AccessibleTopology: []*csi.Topology{{Segments: seg}},
	}}, nil
}

// create makes the volume; for a source volume, it first snapshots it and
// removes the snapshot again if the clone cannot be made.
func (d *Driver) create(ctx context.Context, name string, size int64, src source, labels map[string]string, qos *stratav1.QosLimits, repl int) (*stratav1.Volume, error) {
	took := false
	if src.fromVolume != "" {
		vol, snap, _ := strings.Cut(src.parent, "@")
		if sv, err := d.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: vol}); err == nil {
			d.syncMounts(sv)
		}
		_, err := d.api.Snapshots.CreateSnapshot(ctx, &stratav1.CreateSnapshotRequest{Volume: vol, Name: snap})
		switch {
		case err == nil:
			took = true
		case status.Code(err) == codes.AlreadyExists:
			// Taken by an earlier attempt of this CreateVolume.
		default:
			return nil, fmt.Errorf("snapshot source volume %s for the clone: %w", vol, err)
		}
	}
	v, err := d.api.Volumes.CreateVolume(ctx, &stratav1.CreateVolumeRequest{
		Name: name, SizeBytes: size, FromSnapshot: src.parent, Labels: labels, Qos: qos, Replicas: int32(repl),
	})
	if err != nil && took {
		d.dropCloneSnapshot(context.WithoutCancel(ctx), src.parent)
	}
	return v, err
}

// contentSource resolves a CreateVolume content source. A source that does
// not exist is NotFound.
func (d *Driver) contentSource(ctx context.Context, name string, cs *csi.VolumeContentSource) (source, error) {
	switch {
	case cs == nil:
		return source{}, nil
	case cs.GetSnapshot() != nil:
		id := cs.GetSnapshot().GetSnapshotId()
		snap, err := d.findSnapshot(ctx, id)
		if err != nil {
			return source{}, err
		}
		src := source{parent: id, size: snap.GetSizeBytes()}
		if v, err := d.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: snap.GetVolume()}); err == nil {
			src.fs = v.GetLabels()[LabelFS]
		}
		return src, nil
	case cs.GetVolume() != nil:
		id := cs.GetVolume().GetVolumeId()
		v, err := d.getVolume(ctx, id)
		if err != nil {
			return source{}, fmt.Errorf("source volume: %w", err)
		}
		return source{
			parent:     snapshotID(id, cloneSnapshotName(name)),
			size:       v.GetSizeBytes(),
			fs:         v.GetLabels()[LabelFS],
			fromVolume: id,
		}, nil
	}
	return source{}, status.Error(codes.InvalidArgument, "content source must be a snapshot or a volume")
}

// findSnapshot returns the snapshot of a snapshot ID; NotFound when there
// is none (also for an ID that cannot name one).
func (d *Driver) findSnapshot(ctx context.Context, id string) (*stratav1.Snapshot, error) {
	vol, name, ok := parseSnapshotID(id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "snapshot %q not found (snapshot IDs are VOLUME@SNAPSHOT)", id)
	}
	resp, err := d.api.Snapshots.ListSnapshots(ctx, &stratav1.ListSnapshotsRequest{Volume: vol})
	if err != nil {
		return nil, err
	}
	for _, s := range resp.GetSnapshots() {
		if s.GetName() == name {
			return s, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "snapshot %s not found", id)
}

// dropCloneSnapshot deletes parent ("VOL@SNAP") when it is a snapshot the
// driver took to clone a volume; failures are logged.
func (d *Driver) dropCloneSnapshot(ctx context.Context, parent string) {
	vol, snap, ok := parseSnapshotID(parent)
	if !ok || !isCloneSnapshot(snap) {
		return
	}
	_, err := d.api.Snapshots.DeleteSnapshot(ctx, &stratav1.DeleteSnapshotRequest{Volume: vol, Name: snap})
	if err != nil && status.Code(err) != codes.NotFound {
		d.log.Warn("could not delete the snapshot a clone was made from", "snapshot", parent, "err", err)
	}
}

// syncMounts writes back the filesystems of v mounted on this node, so
// that a snapshot holds what applications wrote until now (as after a
// sync, not an application freeze).
func (d *Driver) syncMounts(v *stratav1.Volume) {
	if v.GetNode() != d.opts.NodeName {
		return
	}
	for _, m := range v.GetMounts() {
		fd, err := unix.Open(m, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if err := unix.Syncfs(fd); err != nil {
			d.log.Warn("could not sync a volume before its snapshot", "volume", v.GetName(), "mount", m, "err", err)
		}
		unix.Close(fd)
	}
}

// DeleteVolume deletes a volume; one that does not exist is deleted
// already. A volume with snapshots is refused (FailedPrecondition): Strata
// snapshots belong to their volume and would go with it. The snapshots the
// driver took to clone volumes do not count, and the one this volume was
// cloned from goes with it.
func (c controller) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	d := c.d
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if !validVolumeID(id) {
		return &csi.DeleteVolumeResponse{}, nil
	}
	defer d.lock(id)()
	v, err := d.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: id})
	if status.Code(err) == codes.NotFound {
		return &csi.DeleteVolumeResponse{}, nil
	} else if err != nil {
		return nil, err
	}
	snaps, err := d.api.Snapshots.ListSnapshots(ctx, &stratav1.ListSnapshotsRequest{Volume: id})
	if err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	var kept []string
	for _, s := range snaps.GetSnapshots() {
		if !isCloneSnapshot(s.GetName()) {
			kept = append(kept, snapshotID(id, s.GetName()))
		}
	}
	if len(kept) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s has snapshots (%s): delete them first; Strata snapshots belong to their volume", id, strings.Join(kept, ", "))
	}
	if _, err := d.api.Volumes.DeleteVolume(ctx, &stratav1.DeleteVolumeRequest{Name: id}); err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	d.dropCloneSnapshot(ctx, v.GetParent())
	d.log.Info("volume deleted", "volume", id)
	return &csi.DeleteVolumeResponse{}, nil
}

// ControllerPublishVolume checks that the volume can be used on the node:
// both exist, and the volume lives there (replication will make this an
// attach to any node).
func (c controller) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	d := c.d
	if err := require("volume_id", req.GetVolumeId(), "node_id", req.GetNodeId()); err != nil {
		return nil, err
	}
	if _, err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	v, err := d.getVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	nodes, err := d.nodes(ctx)
	if err != nil {
		return nil, err
	}
	if nodes[req.GetNodeId()] == nil {
		return nil, status.Errorf(codes.NotFound, "node %q is not a Strata node", req.GetNodeId())
	}
	if v.GetNode() != req.GetNodeId() {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s lives on node %s and can be used there only (volumes are not replicated to other nodes yet)", v.GetName(), v.GetNode())
	}
	return &csi.ControllerPublishVolumeResponse{}, nil
}

// ControllerUnpublishVolume has nothing to undo: publishing attaches
// nothing yet.
func (controller) ControllerUnpublishVolume(_ context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	if err := require("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms the capabilities (and parameters)
// the driver supports for an existing volume.
func (c controller) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	switch {
	case req.GetVolumeId() == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case len(req.GetVolumeCapabilities()) == 0:
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities are required")
	}
	v, err := c.d.getVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	fs, _, err := checkCapabilities(req.GetVolumeCapabilities())
	if err == nil && fs != "" && v.GetLabels()[LabelFS] != "" && fs != v.GetLabels()[LabelFS] {
		err = fmt.Errorf("volume %s has a %s filesystem, not %s", v.GetName(), v.GetLabels()[LabelFS], fs)
	}
	if err == nil {
		_, err = parseVolumeParams(req.GetParameters())
	}
	if err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ListVolumes lists every Strata volume (CSI's or not), by ID, in pages.
func (c controller) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	d := c.d
	resp, err := d.api.Volumes.ListVolumes(ctx, &stratav1.ListVolumesRequest{})
	if err != nil {
		return nil, err
	}
	vols := resp.GetVolumes()
	slices.SortFunc(vols, func(a, b *stratav1.Volume) int { return strings.Compare(a.GetName(), b.GetName()) })
	page, next, err := paginate(vols, (*stratav1.Volume).GetName, req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	nodes, err := d.nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := &csi.ListVolumesResponse{NextToken: next}
	for _, v := range page {
		out.Entries = append(out.Entries, &csi.ListVolumesResponse_Entry{
			Volume: csiVolume(v, nodes),
			Status: &csi.ListVolumesResponse_VolumeStatus{VolumeCondition: condition(v)},
		})
	}
	return out, nil
}

// ControllerGetVolume describes one volume and its condition.
func (c controller) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	if err := require("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	v, err := c.d.getVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	nodes, err := c.d.nodes(ctx)
	if err != nil {
		return nil, err
	}
	return &csi.ControllerGetVolumeResponse{
		Volume: csiVolume(v, nodes),
		Status: &csi.ControllerGetVolumeResponse_VolumeStatus{VolumeCondition: condition(v)},
	}, nil
}

// GetCapacity reports the free space of this node's pool, where the
// controller makes volumes: 0 for a topology or zones this node is not in.
func (c controller) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	params, err := parseVolumeParams(req.GetParameters())
	if err != nil {
		return nil, err
	}
	self, err := c.d.self(ctx)
	if err != nil {
		return nil, err
	}
	resp := &csi.GetCapacityResponse{MaximumVolumeSize: wrapperspb.Int64(maxVolumeSize), MinimumVolumeSize: wrapperspb.Int64(blockSize)}
	seg := nodeSegments(self.Name, self.Labels)
	if t := req.GetAccessibleTopology(); t != nil && !matches(t.GetSegments(), seg) {
		return resp, nil
	}
	if !zoneAllowed(params.zones, self.Labels[zoneLabel]) {
		return resp, nil
	}
	if len(req.GetVolumeCapabilities()) > 0 {
		if _, _, err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
			return resp, nil
		}
	}
	resp.AvailableCapacity = self.GetPoolAvailableBytes()
	return resp, nil
}

// CreateSnapshot takes an instant snapshot. Snapshot names are unique
// across volumes: a name taken on another volume is AlreadyExists.
func (c controller) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	d := c.d
	if err := require("name", req.GetName(), "source_volume_id", req.GetSourceVolumeId()); err != nil {
		return nil, err
	}
	if err := checkSnapshotParams(req.GetParameters()); err != nil {
		return nil, err
	}
	name, vol := strataName(req.GetName()), req.GetSourceVolumeId()
	defer d.lock("snapshot:" + name)()
	all, err := d.api.Snapshots.ListSnapshots(ctx, &stratav1.ListSnapshotsRequest{})
	if err != nil {
		return nil, err
	}
	for _, s := range all.GetSnapshots() {
		if s.GetName() != name {
			continue
		}
		if s.GetVolume() != vol {
			return nil, status.Errorf(codes.AlreadyExists, "snapshot name %q is taken by a snapshot of volume %s", req.GetName(), s.GetVolume())
		}
		return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(s)}, nil
	}
	v, err := d.getVolume(ctx, vol)
	if err != nil {
		return nil, err
	}
	d.syncMounts(v)
	s, err := d.api.Snapshots.CreateSnapshot(ctx, &stratav1.CreateSnapshotRequest{Volume: vol, Name: name})
	if err != nil {
		return nil, err
	}
	d.log.Info("snapshot created", "snapshot", snapshotID(vol, name), "csi_name", req.GetName())
	return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(s)}, nil
}

// DeleteSnapshot deletes a snapshot; one that does not exist is deleted
// already. Clones made from it keep its data.
func (c controller) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot_id is required")
	}
	vol, name, ok := parseSnapshotID(id)
	if !ok {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	defer c.d.lock("snapshot:" + name)()
	_, err := c.d.api.Snapshots.DeleteSnapshot(ctx, &stratav1.DeleteSnapshotRequest{Volume: vol, Name: name})
	if err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

// ListSnapshots lists snapshots, all or those of one ID or source volume,
// by ID, in pages.
func (c controller) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	d := c.d
	var snaps []*stratav1.Snapshot
	switch id, src := req.GetSnapshotId(), req.GetSourceVolumeId(); {
	case id != "":
		s, err := d.findSnapshot(ctx, id)
		if err != nil && status.Code(err) != codes.NotFound {
			return nil, err
		}
		if s != nil && (src == "" || src == s.GetVolume()) {
			snaps = append(snaps, s)
		}
	case src != "":
		if !validVolumeID(src) {
			break
		}
		resp, err := d.api.Snapshots.ListSnapshots(ctx, &stratav1.ListSnapshotsRequest{Volume: src})
		if err != nil && status.Code(err) != codes.NotFound {
			return nil, err
		}
		snaps = resp.GetSnapshots()
	default:
		resp, err := d.api.Snapshots.ListSnapshots(ctx, &stratav1.ListSnapshotsRequest{})
		if err != nil {
			return nil, err
		}
		snaps = resp.GetSnapshots()
	}
	id := func(s *stratav1.Snapshot) string { return snapshotID(s.GetVolume(), s.GetName()) }
	slices.SortFunc(snaps, func(a, b *stratav1.Snapshot) int { return strings.Compare(id(a), id(b)) })
	page, next, err := paginate(snaps, id, req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	out := &csi.ListSnapshotsResponse{NextToken: next}
	for _, s := range page {
		out.Entries = append(out.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: csiSnapshot(s)})
	}
	return out, nil
}

// ControllerExpandVolume grows a volume online; a filesystem mounted from
// it grows with it. Node expansion is asked for mount volumes, so that a
// filesystem that could not grow here (or was not mounted) grows there.
func (c controller) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	d := c.d
	switch {
	case req.GetVolumeId() == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case req.GetCapacityRange() == nil:
		return nil, status.Error(codes.InvalidArgument, "capacity_range is required")
	}
	block := false
	if req.GetVolumeCapability() != nil {
		a, err := checkCapability(req.GetVolumeCapability())
		if err != nil {
			return nil, err
		}
		block = a.block
	}
	size, err := volumeSize(req.GetCapacityRange(), 0)
	if err != nil {
		return nil, err
	}
	defer d.lock(req.GetVolumeId())()
	v, err := d.getVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if lim := req.GetCapacityRange().GetLimitBytes(); lim > 0 && v.GetSizeBytes() > lim {
		return nil, status.Errorf(codes.OutOfRange, "volume %s is %d bytes already, more than limit_bytes %d: volumes do not shrink", v.GetName(), v.GetSizeBytes(), lim)
	}
	if v.GetSizeBytes() < size {
		if _, err := d.api.Volumes.ResizeVolume(ctx, &stratav1.ResizeVolumeRequest{Name: v.GetName(), SizeBytes: size}); err != nil {
			// The volume may have grown and only a mounted filesystem
			// not: node expansion grows that.
			if v, _ = d.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: v.GetName()}); v.GetSizeBytes() < size {
				return nil, err
			}
			d.log.Warn("volume grew, its mounted filesystem not yet", "volume", v.GetName(), "err", err)
		}
		if v, err = d.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: v.GetName()}); err != nil {
			return nil, err
		}
		d.log.Info("volume expanded", "volume", v.GetName(), "size", v.GetSizeBytes())
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: v.GetSizeBytes(), NodeExpansionRequired: !block}, nil
}

// getVolume returns a volume by ID; NotFound also for an ID that cannot
// name one.
func (d *Driver) getVolume(ctx context.Context, id string) (*stratav1.Volume, error) {
	if !validVolumeID(id) {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", id)
	}
	return d.api.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: id})
}

// nodes returns the cluster's nodes by name.
func (d *Driver) nodes(ctx context.Context) (map[string]*stratav1.Node, error) {
	st, err := d.api.Cluster.GetStatus(ctx, &stratav1.GetStatusRequest{})
	if err != nil {
		return nil, err
	}
	out := map[string]*stratav1.Node{}
	for _, n := range st.GetNodes() {
		out[n.GetName()] = n
	}
	return out, nil
}

// self returns this node's record.
func (d *Driver) self(ctx context.Context) (*stratav1.Node, error) {
	nodes, err := d.nodes(ctx)
	if err != nil {
		return nil, err
	}
	n := nodes[d.opts.NodeName]
	if n == nil {
		return nil, status.Errorf(codes.Unavailable, "node %s is not registered with the Strata API yet", d.opts.NodeName)
	}
	return n, nil
}

// csiVolume describes a Strata volume to the CO.
func csiVolume(v *stratav1.Volume, nodes map[string]*stratav1.Node) *csi.Volume {
	out := &csi.Volume{VolumeId: v.GetName(), CapacityBytes: v.GetSizeBytes(), VolumeContext: volumeContext(v)}
	if n := v.GetNode(); n != "" {
		out.AccessibleTopology = []*csi.Topology{{Segments: nodeSegments(n, nodes[n].GetLabels())}}
	}
	if vol, snap, ok := parseSnapshotID(v.GetParent()); ok {
		if isCloneSnapshot(snap) {
			out.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
				Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: vol},
			}}
		} else {
			out.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
				Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: v.GetParent()},
			}}
		}
	}
	return out
}

// volumeContext is what NodeStageVolume gets to know about a volume: its
// filesystem.
func volumeContext(v *stratav1.Volume) map[string]string {
	if fs := v.GetLabels()[LabelFS]; fs != "" {
		return map[string]string{ParamFS: fs}
	}
	return nil
}

// condition reports a volume that is not ready (being made or deleted,
// missing from its node's pool) as abnormal.
func condition(v *stratav1.Volume) *csi.VolumeCondition {
	if st := v.GetState(); st != "ready" {
		return &csi.VolumeCondition{Abnormal: true, Message: fmt.Sprintf("volume %s is %s", v.GetName(), st)}
	}
	return &csi.VolumeCondition{Message: "volume is ready"}
}

func csiSnapshot(s *stratav1.Snapshot) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     snapshotID(s.GetVolume(), s.GetName()),
		SourceVolumeId: s.GetVolume(),
		SizeBytes:      s.GetSizeBytes(),
		CreationTime:   timestamppb.New(s.GetCreatedAt().AsTime()),
		ReadyToUse:     true,
	}
}

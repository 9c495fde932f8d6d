package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/agent"
	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
	"github.com/strata-storage/strata/internal/qos"
	"github.com/strata-storage/strata/internal/replset"
	"github.com/strata-storage/strata/internal/size"
)

// stateMissing is shown for a volume recorded as ready whose chain this
// node does not have (the pool was changed behind Strata's back).
const stateMissing = "missing"

// readyVolume returns the record of a volume that is ready for use.
func (s *Server) readyVolume(ctx context.Context, name string) (meta.Volume, error) {
	rec, err := s.meta.GetVolume(ctx, name)
	if err != nil {
		return rec, err
	}
	switch rec.State {
	case meta.StateReady:
		return rec, nil
	case meta.StateDeleting:
		return rec, fmt.Errorf("volume %q is being deleted: %w", name, errdefs.ErrFailedPrecondition)
	default:
		return rec, fmt.Errorf("volume %q is %s, not ready; retry shortly: %w", name, rec.State, errdefs.ErrFailedPrecondition)
	}
}

// view describes a volume: its record, and what runs of it on this node.
func (s *Server) view(rec meta.Volume, snapshots int) *pb.Volume {
	v := &pb.Volume{
		Name:          rec.Name,
		SizeBytes:     rec.Size,
		Parent:        rec.Parent,
		SnapshotCount: int32(snapshots),
		Node:          rec.Node,
		CreatedAt:     timestamppb.New(rec.Created),
		State:         rec.State,
		Mounts:        []string{},
		Labels:        rec.Labels,
		Qos:           qosView(rec.QoS),
		Tenant:        rec.Tenant,
	}
	replicaView(v, rec)
	if rec.Node != s.node || rec.State != meta.StateReady {
		return v
	}
	st, err := s.agent.Status(rec.Name)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		if slices.Contains(replicaNodes(rec), s.node) {
			v.State = stateMissing
		}
	case err != nil:
		s.log.Warn("volume status", "volume", rec.Name, "err", err)
	default:
		v.SizeBytes = st.Size
		v.AllocatedBytes = st.Allocated
		v.Layers = int32(st.Layers)
		v.ExportConnections = int32(st.Connections)
		if st.Mounts != nil {
			v.Mounts = st.Mounts
		}
		v.Devices = st.Devices
	}
	return v
}

// snapshotCounts counts the ready snapshots of every volume.
func (s *Server) snapshotCounts(ctx context.Context, volume string) (map[string]int, error) {
	snaps, err := s.meta.ListSnapshots(ctx, volume)
	if err != nil {
		return nil, err
	}
	n := map[string]int{}
	for _, sn := range snaps {
		if sn.State == meta.StateReady {
			n[sn.Volume]++
		}
	}
	return n, nil
}

func (s *Server) viewOf(ctx context.Context, rec meta.Volume) (*pb.Volume, error) {
	n, err := s.snapshotCounts(ctx, rec.Name)
	if err != nil {
		return nil, err
	}
	return s.view(rec, n[rec.Name]), nil
}

// CreateVolume makes an empty volume, or a thin clone when from_snapshot is
// set. size_bytes is rounded up to a multiple of 4 KiB and must be at most
// 64 TiB. Creating a volume that exists with the same (rounded) size and
// origin returns it, with its limits as they are (limits are not part of
// the spec: UpdateVolume changes them); with another spec it is
// AlreadyExists.
func (s *Server) CreateVolume(ctx context.Context, req *pb.CreateVolumeRequest) (*pb.Volume, error) {
	if req.FromSnapshot != "" {
		if len(req.Zones) > 0 {
			return nil, fmt.Errorf("a clone's replicas go on nodes holding its source's (it shares their layers): choose among them with --nodes, not --zones: %w", errdefs.ErrInvalidArgument)
		}
		return s.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: req.FromSnapshot, Name: req.Name, SizeBytes: req.SizeBytes, Labels: req.Labels, Qos: req.Qos,
			Replicas: req.Replicas, Nodes: req.Nodes})
	}
	if err := errdefs.ValidateName("volume", req.Name); err != nil {
		return nil, err
	}
	sz, err := volumeSize(req.SizeBytes)
	if err != nil {
		return nil, err
	}
	if err := validateLabels(req.Labels); err != nil {
		return nil, err
	}
	lim, err := overlayLimits(qos.Limits{}, req.Qos)
	if err != nil {
		return nil, err
	}
	spec, err := placeSpecOf(req)
	if err != nil {
		return nil, err
	}
	return s.createPlaced(ctx, req.Name, sz, "", "", req.Labels, lim, "", spec)
}

// CloneVolume makes a thin clone of snapshot VOL@SNAP. size_bytes 0 keeps
// the snapshot's size; otherwise it is rounded up to 4 KiB and may not be
// smaller than the snapshot's size. The clone gets the QoS limits the
// request sets, and the cluster's clone defaults for the others.
func (s *Server) CloneVolume(ctx context.Context, req *pb.CloneVolumeRequest) (*pb.Volume, error) {
	srcVol, srcSnap, err := parseSnapshotRef("source", req.Source)
	if err != nil {
		return nil, err
	}
	if err := errdefs.ValidateName("volume", req.Name); err != nil {
		return nil, err
	}
	sz, err := cloneSize(req.SizeBytes)
	if err != nil {
		return nil, err
	}
	if err := validateLabels(req.Labels); err != nil {
		return nil, err
	}
	lim, err := s.cloneLimits(ctx, req.Qos)
	if err != nil {
		return nil, err
	}
	spec, err := placeSpecOf(&pb.CreateVolumeRequest{Replicas: req.Replicas, Nodes: req.Nodes})
	if err != nil {
		return nil, err
	}
	return s.createPlaced(ctx, req.Name, sz, srcVol, srcSnap, req.Labels, lim, "", spec)
}

// create records volume name as creating, makes its chain (empty, or a
// clone of srcVol@srcSnap), and records it as ready. A failure removes the
// record again; a crash leaves a "creating" record that Reconcile finishes
// or removes. The agent gets the volume's QoS limits before the volume is
// ready, so that no engine runs it without them. tenant owns the volume
// (a clone's; see CreateClone), or none.
func (s *Server) create(ctx context.Context, name string, sz int64, srcVol, srcSnap string, labels map[string]string, lim qos.Limits, tenant string) (*pb.Volume, error) {
	return s.createPlaced(ctx, name, sz, srcVol, srcSnap, labels, lim, tenant, placeSpec{})
}

// createPlaced is create with the replicas placed by spec: an empty
// volume's by placement, a clone's on nodes holding an in-sync replica of
// its source, this one first (it shares the source's layers there).
func (s *Server) createPlaced(ctx context.Context, name string, sz int64, srcVol, srcSnap string, labels map[string]string, lim qos.Limits, tenant string, spec placeSpec) (*pb.Volume, error) {
	parent := ""
	locks := []string{name}
	if srcVol != "" {
		parent = srcVol + "@" + srcSnap
		locks = append(locks, srcVol)
	}
	unlock := s.locks.lock(locks...)
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()

	var src meta.Volume
	if srcVol != "" {
		var err error
		src, err = s.readyVolume(ctx, srcVol)
		if err == nil {
			err = s.onThisNode(ctx, src, actClone)
		}
		if err != nil {
			return nil, fmt.Errorf("clone source: %w", err)
		}
		snap, err := s.meta.GetSnapshot(ctx, srcVol, srcSnap)
		if err == nil && snap.State != meta.StateReady {
			err = fmt.Errorf("snapshot %s is %s: %w", parent, snap.State, errdefs.ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		if sz == 0 {
			sz = snap.Size
		}
		if sz < snap.Size {
			return nil, fmt.Errorf("clone size %s is smaller than snapshot %s (%s): %w",
				size.Format(sz), parent, size.Format(snap.Size), errdefs.ErrInvalidArgument)
		}
	}

	rec, err := s.meta.GetVolume(ctx, name)
	switch {
	case err == nil:
		if rec.State == meta.StateDeleting {
			return nil, fmt.Errorf("volume %q is being deleted; retry when it is gone: %w", name, errdefs.ErrFailedPrecondition)
		}
		if rec.Size != sz || rec.Parent != parent || !maps.Equal(rec.Labels, labels) || rec.Tenant != tenant || !spec.matches(rec) {
			return nil, fmt.Errorf("volume %q exists with another spec (%s%s%s%s): %w", name, size.Format(rec.Size), fromText(rec.Parent), labelsText(rec.Labels), replicasText(rec), errdefs.ErrAlreadyExists)
		}
		if rec.State == meta.StateReady {
			return s.viewOf(ctx, rec)
		}
		// A "creating" record that no operation is working on (we hold
		// the name's lock): finish it.
	case errors.Is(err, errdefs.ErrNotFound):
		if ok, err := s.agent.Exists(name); err != nil {
			return nil, err
		} else if ok {
			return nil, fmt.Errorf("the pool of node %s holds a chain named %q that no volume record lists (left by an interrupted operation or another tool); choose another name: %w",
				s.node, name, errdefs.ErrFailedPrecondition)
		}
		nodes, err := s.replicaNodesFor(ctx, sz, src, srcSnap, spec)
		if err != nil {
			return nil, err
		}
		engineNode := nodes[0]
		if slices.Contains(nodes, s.node) {
			engineNode = s.node
		}
		repl, err := replset.New(nodes, time.Now().UTC())
		if err != nil {
			return nil, err
		}
		// Replicas remember the highest epoch they saw for a name, also
		// after a delete (so that a stale engine cannot write into a
		// volume made again under the same name): a new volume's epochs
		// start above any an earlier one could have reached.
		repl.Epoch = uint64(time.Now().UnixMilli())
		rec, err = s.meta.CreateVolume(ctx, meta.Volume{
			Name:        name,
			Size:        sz,
			Parent:      parent,
			Node:        engineNode,
			Created:     time.Now().UTC(),
			State:       meta.StateCreating,
			Labels:      labels,
			QoS:         lim,
			Tenant:      tenant,
			Replication: repl,
		})
		if err != nil {
			return nil, err
		}
	default:
		return nil, err
	}

	var info chain.Info
	switch {
	case srcVol != "" && len(replicaNodes(rec)) > 1:
		info = chain.Info{Name: name, Size: sz}
		err = s.cloneReplicas(ctx, srcVol, srcSnap, name, sz, replicaNodes(rec))
	case srcVol != "":
		info, err = s.agent.Clone(srcVol, srcSnap, name, sz)
	case rec.Replicated() && !(len(rec.Replication.Replicas) == 1 && rec.Replication.Replicas[0].Node == s.node):
		info = chain.Info{Name: name, Size: sz}
		err = s.createReplicas(ctx, name, sz, replicaNodes(rec))
	default:
		info, err = s.agent.Create(name, sz)
	}
	if err != nil {
		if derr := s.meta.DeleteVolume(ctx, rec); derr != nil {
			s.log.Warn("removing the record of a volume that could not be made", "volume", name, "err", derr)
		}
		return nil, err
	}
	if err := s.agent.SetLimits(name, rec.QoS); err != nil {
		return nil, err
	}
	rec.State = meta.StateReady
	rec.Size = info.Size
	rec, err = s.meta.UpdateVolume(ctx, rec)
	if err != nil {
		return nil, fmt.Errorf("volume %q was made but could not be recorded as ready (the next start finishes it): %w", name, err)
	}
	if len(replicaNodes(rec)) > 1 && rec.Node == s.node {
		s.attachLater(name)
	}
	return s.view(rec, 0), nil
}

// replicaNodesFor chooses the nodes of a new volume's replicas: by
// placement for an empty volume; for a clone of src@snap, this node, or
// with more replicas or nodes asked for, nodes holding the source's.
func (s *Server) replicaNodesFor(ctx context.Context, sz int64, src meta.Volume, snap string, spec placeSpec) ([]string, error) {
	switch {
	case src.Name == "":
		return s.place(ctx, sz, spec)
	case spec.replicas > 1 || len(spec.nodes) > 0:
		return s.cloneNodes(ctx, src, snap, spec)
	default:
		return []string{s.node}, nil
	}
}

func labelsText(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	return fmt.Sprintf(", labels %v", labels) // fmt sorts map keys
}

func fromText(parent string) string {
	if parent == "" {
		return ""
	}
	return ", cloned from " + parent
}

// ListVolumes lists every volume the caller may see (a developer: its
// tenant's), sorted by name.
func (s *Server) ListVolumes(ctx context.Context, req *pb.ListVolumesRequest) (*pb.ListVolumesResponse, error) {
	recs, err := s.meta.ListVolumes(ctx)
	if err != nil {
		return nil, err
	}
	counts, err := s.snapshotCounts(ctx, "")
	if err != nil {
		return nil, err
	}
	caller := CallerFrom(ctx)
	resp := &pb.ListVolumesResponse{Volumes: make([]*pb.Volume, 0, len(recs))}
	for _, rec := range recs {
		if mayReach(caller, rec) {
			resp.Volumes = append(resp.Volumes, s.view(rec, counts[rec.Name]))
		}
	}
	return resp, nil
}

// GetVolume describes one volume.
func (s *Server) GetVolume(ctx context.Context, req *pb.GetVolumeRequest) (*pb.Volume, error) {
	if err := errdefs.ValidateName("volume", req.Name); err != nil {
		return nil, err
	}
	rec, err := s.volumeFor(ctx, req.Name, actRead)
	if err != nil {
		return nil, err
	}
	return s.viewOf(ctx, rec)
}

// DeleteVolume removes a volume and its snapshots. It is refused while the
// volume is mounted or has NBD connections. Layers its clones use stay.
func (s *Server) DeleteVolume(ctx context.Context, req *pb.DeleteVolumeRequest) (*pb.DeleteVolumeResponse, error) {
	name := req.Name
	if err := errdefs.ValidateName("volume", name); err != nil {
		return nil, err
	}
	unlock := s.locks.lock(name)
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()

	rec, err := s.volumeFor(ctx, name, actDelete)
	if err != nil {
		return nil, err
	}
	if err := s.refuseTemplateVersion(ctx, name, "", actDelete); err != nil {
		return nil, err
	}
	prev := rec.State
	if rec.State != meta.StateDeleting {
		if rec.Node == s.node {
			if err := s.agent.Busy(name, "delete"); err != nil {
				return nil, err
			}
		}
		rec.State = meta.StateDeleting
		if rec, err = s.meta.UpdateVolume(ctx, rec); err != nil {
			return nil, err
		}
	}
	if err := s.agent.Delete(name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		if errors.Is(err, errdefs.ErrFailedPrecondition) && prev != meta.StateDeleting {
			// A client connected between the check and the delete.
			rec.State = prev
			if _, uerr := s.meta.UpdateVolume(ctx, rec); uerr != nil {
				s.log.Warn("restoring volume state after a refused delete", "volume", name, "err", uerr)
			}
		}
		return nil, err
	}
	// Closing the engine may have recorded its detach.
	if rec, err = s.meta.GetVolume(ctx, name); err != nil {
		return nil, err
	}
	var others []string
	for _, n := range replicaNodes(rec) {
		if n != s.node {
			others = append(others, n)
		}
	}
	if err := s.deleteReplicas(ctx, name, others); err != nil {
		// The volume goes; a node that was away keeps an orphan chain,
		// which blocks the name on that node only (create says so).
		s.log.Warn("some replicas of a deleted volume could not be deleted", "volume", name, "err", err)
	}
	if err := s.meta.DeleteVolume(ctx, rec); err != nil {
		return nil, err
	}
	return &pb.DeleteVolumeResponse{}, nil
}

// ResizeVolume grows a volume online. The size is rounded up to 4 KiB;
// shrinking is refused (FailedPrecondition); the same size is a no-op.
func (s *Server) ResizeVolume(ctx context.Context, req *pb.ResizeVolumeRequest) (*pb.Volume, error) {
	name := req.Name
	if err := errdefs.ValidateName("volume", name); err != nil {
		return nil, err
	}
	sz, err := volumeSize(req.SizeBytes)
	if err != nil {
		return nil, err
	}
	unlock := s.locks.lock(name)
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()

	rec, err := s.readyVolumeFor(ctx, name, actResize)
	if err != nil {
		return nil, err
	}
	if err := s.refuseTemplateVersion(ctx, name, "", actResize); err != nil {
		return nil, err
	}
	if sz < rec.Size {
		return nil, fmt.Errorf("cannot shrink volume %q from %s to %s: volumes only grow: %w",
			name, size.Format(rec.Size), size.Format(sz), errdefs.ErrFailedPrecondition)
	}
	old := rec.Size
	if sz != old {
		// Desired size first: a crash before the chain grows is finished
		// by Reconcile.
		rec.Size = sz
		if rec, err = s.meta.UpdateVolume(ctx, rec); err != nil {
			return nil, err
		}
	}
	if _, err := s.agent.Resize(name, sz); err != nil {
		// The volume grew even when a mounted filesystem did not: the
		// record keeps the new size, and the caller learns what is left.
		var fsErr *agent.FilesystemGrowError
		if errors.As(err, &fsErr) {
			return nil, err
		}
		if sz != old {
			rec.Size = old
			if _, uerr := s.meta.UpdateVolume(ctx, rec); uerr != nil {
				s.log.Warn("restoring volume size after a failed resize", "volume", name, "err", uerr)
			}
		}
		return nil, err
	}
	return s.viewOf(ctx, rec)
}

// RevertVolume drops every write made since a snapshot; the volume's size
// goes back to the snapshot's. Refused while the volume is mounted or has
// NBD connections.
func (s *Server) RevertVolume(ctx context.Context, req *pb.RevertVolumeRequest) (*pb.Volume, error) {
	name := req.Name
	if err := errdefs.ValidateName("volume", name); err != nil {
		return nil, err
	}
	if err := errdefs.ValidateName("snapshot", req.Snapshot); err != nil {
		return nil, err
	}
	unlock := s.locks.lock(name)
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()

	rec, err := s.readyVolumeFor(ctx, name, actRevert)
	if err != nil {
		return nil, err
	}
	if err := s.refuseTemplateVersion(ctx, name, "", actRevert); err != nil {
		return nil, err
	}
	snap, err := s.meta.GetSnapshot(ctx, name, req.Snapshot)
	if err == nil && snap.State != meta.StateReady {
		err = fmt.Errorf("snapshot %s@%s is %s: %w", name, req.Snapshot, snap.State, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if err := s.agent.Busy(name, "revert"); err != nil {
		return nil, err
	}
	if rec.Replicated() {
		if err := s.checkRevertable(ctx, rec, req.Snapshot); err != nil {
			return nil, err
		}
	}
	old := rec.Size
	if snap.Size != old {
		// Record the size first: if the revert does not happen, Reconcile
		// sets the record back to the chain's (larger) size.
		rec.Size = snap.Size
		if rec, err = s.meta.UpdateVolume(ctx, rec); err != nil {
			return nil, err
		}
	}
	info, err := s.agent.Revert(name, req.Snapshot)
	if err != nil {
		if snap.Size != old {
			rec.Size = old
			if _, uerr := s.meta.UpdateVolume(ctx, rec); uerr != nil {
				s.log.Warn("restoring volume size after a failed revert", "volume", name, "err", uerr)
			}
		}
		return nil, err
	}
	if info.Size != rec.Size {
		rec.Size = info.Size
		if rec, err = s.meta.UpdateVolume(ctx, rec); err != nil {
			return nil, err
		}
	}
	return s.viewOf(ctx, rec)
}

// ExportVolume returns the NBD URI of the volume on this node's NBD server.
func (s *Server) ExportVolume(ctx context.Context, req *pb.ExportVolumeRequest) (*pb.ExportVolumeResponse, error) {
	if err := errdefs.ValidateName("volume", req.Name); err != nil {
		return nil, err
	}
	if _, err := s.readyVolumeFor(ctx, req.Name, actExport); err != nil {
		return nil, err
	}
	if s.nbdAddr == "" {
		return nil, fmt.Errorf("node %s serves no nbd: %w", s.node, errdefs.ErrUnavailable)
	}
	return &pb.ExportVolumeResponse{Uri: "nbd://" + s.nbdAddr + "/" + req.Name}, nil
}

// MountVolume mounts the volume's filesystem at an absolute directory of
// this node (FUSE file, loop device), making the filesystem on first use.
func (s *Server) MountVolume(ctx context.Context, req *pb.MountVolumeRequest) (*pb.MountVolumeResponse, error) {
	if err := errdefs.ValidateName("volume", req.Name); err != nil {
		return nil, err
	}
	target, err := mountTarget(req.Target)
	if err != nil {
		return nil, err
	}
	fs, err := fsType(req.FsType)
	if err != nil {
		return nil, err
	}
	ctx, done, err := s.useVolume(ctx, req.Name, actMount)
	if err != nil {
		return nil, err
	}
	defer done()
	m, err := s.agent.Mount(ctx, req.Name, agent.MountOptions{Target: target, FSType: fs, ReadOnly: req.ReadOnly})
	if err != nil {
		return nil, err
	}
	return &pb.MountVolumeResponse{Target: m.Target, FsType: m.FSType, Device: m.Device}, nil
}

// UnmountVolume unmounts what MountVolume mounted at target.
func (s *Server) UnmountVolume(ctx context.Context, req *pb.UnmountVolumeRequest) (*pb.UnmountVolumeResponse, error) {
	target, err := mountTarget(req.Target)
	if err != nil {
		return nil, err
	}
	if CallerFrom(ctx).Role != meta.RoleAdmin {
		if name, ok := s.agent.MountedAt(target); ok {
			if _, err := s.volumeFor(ctx, name, actUnmount); err != nil {
				return nil, err
			}
		}
	}
	name, err := s.agent.Unmount(target)
	if err != nil {
		return nil, err
	}
	return &pb.UnmountVolumeResponse{Volume: name}, nil
}

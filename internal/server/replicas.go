package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
	"github.com/strata-storage/strata/internal/placement"
	"github.com/strata-storage/strata/internal/replica"
	"github.com/strata-storage/strata/internal/replset"
)

// AttachVolume starts the volume's engine on this node. When the volume
// was attached to another node (which died, or is being left), the record
// moves here and the new epoch fences the old engine: it can no longer
// write to any replica this engine opened. The node must hold a replica.
func (s *Server) AttachVolume(ctx context.Context, req *pb.AttachVolumeRequest) (*pb.Volume, error) {
	name := req.Name
	if err := errdefs.ValidateName("volume", name); err != nil {
		return nil, err
	}
	if req.Node != "" && req.Node != s.node {
		where := ""
		if n, err := s.meta.GetNode(ctx, req.Node); err == nil && n.Addresses["api"] != "" {
			where = fmt.Sprintf(": strata --api %s volume attach %s", n.Addresses["api"], name)
		}
		return nil, fmt.Errorf("this is node %s; attach volume %q to node %s through that node's API%s: %w",
			s.node, name, req.Node, where, errdefs.ErrFailedPrecondition)
	}
	unlock := s.locks.lock(name)
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()
	rec, err := s.readyVolumeFor(ctx, name, actAttach)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(replicaNodes(rec), s.node) {
		return nil, fmt.Errorf("node %s holds no replica of volume %q (its replicas are on %s): %w",
			s.node, name, strings.Join(replicaNodes(rec), ", "), errdefs.ErrFailedPrecondition)
	}
	if rec.Node != s.node {
		if !rec.Replicated() {
			return nil, fmt.Errorf("volume %q has one replica, on node %s: %w", name, rec.Node, errdefs.ErrFailedPrecondition)
		}
		prev := rec.Node
		rec.Node = s.node
		if rec, err = s.meta.UpdateVolume(ctx, rec); err != nil {
			return nil, err
		}
		s.log.Warn("volume moved to this node; its engine on the previous node is fenced", "volume", name, "from", prev)
		if err := s.agent.SetLimits(name, rec.QoS); err != nil {
			return nil, err
		}
	}
	if err := s.agent.Attach(name); err != nil {
		return nil, err
	}
	if rec, err = s.meta.GetVolume(ctx, name); err != nil {
		return nil, err
	}
	return s.viewOf(ctx, rec)
}

// UpdateVolumeReplicas changes the number of replicas online. New ones are
// placed and added catching up (the engine copies their data while writes
// continue); removed ones leave the set, then their data is deleted.
func (s *Server) UpdateVolumeReplicas(ctx context.Context, req *pb.UpdateVolumeReplicasRequest) (*pb.Volume, error) {
	name := req.Name
	if err := errdefs.ValidateName("volume", name); err != nil {
		return nil, err
	}
	want := int(req.Replicas)
	if want < 1 || want > placement.MaxReplicas {
		return nil, fmt.Errorf("replicas %d: a volume has 1 to %d replicas: %w", want, placement.MaxReplicas, errdefs.ErrInvalidArgument)
	}
	unlock := s.locks.lock(name)
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()
	rec, err := s.readyVolumeFor(ctx, name, actReplicas)
	if err != nil {
		return nil, err
	}
	if !rec.Replicated() {
		// A volume made before replication: its one replica is here.
		if rec.Replication, err = replset.New([]string{rec.Node}, rec.Created); err != nil {
			return nil, err
		}
		if rec, err = s.meta.UpdateVolume(ctx, rec); err != nil {
			return nil, err
		}
	}
	// Changes go through the engine: it writes to new replicas as they
	// catch up and stops writing to removed ones.
	if err := s.agent.Attach(name); err != nil {
		return nil, err
	}
	eng := s.agent.Engine(name)
	next, _, err := rec.Replication.SetReplicas(want)
	if err != nil {
		return nil, err
	}
	for _, r := range rec.Replication.Replicas {
		if next.Has(r.Node) {
			continue
		}
		node := r.Node
		var acts []replset.Action
		err := eng.Remove(node, func() error {
			var err error
			_, acts, err = s.changeRepl(ctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
				return st.RemoveReplica(node)
			})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("remove the replica on %s: %w", node, err)
		}
		s.log.Info("replica removed", "volume", name, "node", node)
		s.carryOut(ctx, name, rec, acts)
	}
	rec, acts, err := s.changeRepl(ctx, name, func(st replset.State) (replset.State, []replset.Action, error) {
		return st.SetReplicas(want)
	})
	if err != nil {
		return nil, err
	}
	s.carryOut(ctx, name, rec, acts)
	if rec, err = s.meta.GetVolume(ctx, name); err != nil {
		return nil, err
	}
	return s.viewOf(ctx, rec)
}

// CheckVolume compares the in-sync replicas' content region by region, at
// a quiet point of the write stream (writes wait while it runs).
func (s *Server) CheckVolume(ctx context.Context, req *pb.CheckVolumeRequest) (*pb.CheckVolumeResponse, error) {
	name := req.Name
	if err := errdefs.ValidateName("volume", name); err != nil {
		return nil, err
	}
	region := req.RegionBytes
	if region == 0 {
		region = 1 << 20
	}
	if region < 4096 || region > 1<<30 || region%4096 != 0 {
		return nil, fmt.Errorf("region %d bytes: want a multiple of 4 KiB from 4 KiB to 1 GiB: %w", region, errdefs.ErrInvalidArgument)
	}
	unlock := s.locks.lock(name)
	defer unlock()
	ctx, cancel := detach(ctx, 30*time.Minute)
	defer cancel()
	rec, err := s.readyVolumeFor(ctx, name, actCheck)
	if err != nil {
		return nil, err
	}
	nodes := replicaNodes(rec)
	if rec.Replicated() {
		nodes = rec.Replication.InSync()
	}
	resp := &pb.CheckVolumeResponse{Nodes: nodes, Differing: []*pb.Extent{}}
	compare := func() error {
		return s.compareReplicas(ctx, name, rec.Size, region, nodes, resp)
	}
	if eng := s.agent.Engine(name); eng != nil {
		err = eng.Quiet(compare)
	} else {
		err = compare()
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// compareReplicas fills resp with the ranges where the replicas of nodes
// differ, comparing checksums of regions.
func (s *Server) compareReplicas(ctx context.Context, name string, size, region int64, nodes []string, resp *pb.CheckVolumeResponse) error {
	if len(nodes) < 2 {
		resp.ComparedBytes = size
		return nil
	}
	// One request per node covers this many regions.
	step := region * 1024
	for off := int64(0); off < size; off += step {
		n := min(step, size-off)
		sums := make([][]replica.Checksum, len(nodes))
		for i, node := range nodes {
			cs, err := s.checksums(ctx, name, node, off, n, region)
			if err != nil {
				if errors.Is(err, errdefs.ErrNotFound) {
					return fmt.Errorf("the replica of volume %q on %s is missing: %w", name, node, err)
				}
				return fmt.Errorf("checksums of the replica on %s: %w", node, err)
			}
			sums[i] = cs
		}
		for r := range sums[0] {
			for i := 1; i < len(nodes); i++ {
				if r >= len(sums[i]) || sums[i][r] != sums[0][r] {
					start := off + int64(r)*region
					length := min(region, size-start)
					if k := len(resp.Differing); k > 0 && resp.Differing[k-1].Offset+resp.Differing[k-1].Length == start {
						resp.Differing[k-1].Length += length
					} else {
						resp.Differing = append(resp.Differing, &pb.Extent{Offset: start, Length: length})
					}
					break
				}
			}
		}
		resp.ComparedBytes += n
	}
	return nil
}

// refuseOutOfSync refuses a snapshot of a replicated volume while one of
// its replicas is out or catching up: every replica must seal the same
// layer at the same point of the write stream (invariant 4), and one that
// misses the snapshot could not be reverted to it nor serve clones of it.
func refuseOutOfSync(rec meta.Volume, action string) error {
	if !rec.Replicated() {
		return nil
	}
	for _, r := range rec.Replication.Replicas {
		if r.Mode != replset.InSync {
			return fmt.Errorf("cannot %s volume %q now: its replica on %s is %s, and every replica must be in sync; retry when it has caught up or been replaced (strata volume inspect %s): %w",
				action, rec.Name, r.Node, r.Mode, rec.Name, errdefs.ErrUnavailable)
		}
	}
	return nil
}

// replicaSnapshots returns the snapshots of node's replica of volume name,
// oldest first.
func (s *Server) replicaSnapshots(ctx context.Context, name, node string) ([]string, error) {
	if node == s.node {
		c, err := s.agent.Pool().Open(name)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, si := range c.Snapshots() {
			out = append(out, si.Name)
		}
		return out, nil
	}
	c, err := s.control(ctx, node)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Snapshots(ctx, name)
}

// deleteReplicaSnapshot deletes snapshot snap of node's replica of volume
// name, returning how many clones keep its layers there; a replica without
// it is errdefs.ErrNotFound.
func (s *Server) deleteReplicaSnapshot(ctx context.Context, name, node, snap string) (int, error) {
	if node == s.node {
		res, err := s.agent.DeleteSnapshot(name, snap)
		return res.KeptForClones, err
	}
	c, err := s.control(ctx, node)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.DeleteSnapshot(ctx, name, snap)
}

// deleteSnapshotEverywhere deletes snapshot snap of replicated volume rec
// on every replica. It fails, naming them, when in-sync replicas cannot
// be reached: the caller keeps the snapshot recorded as deleting, and a
// second delete finishes. Replicas out of sync are pruned when they come
// back (pruneSnapshots).
func (s *Server) deleteSnapshotEverywhere(ctx context.Context, rec meta.Volume, snap string) (int, error) {
	kept := 0
	var errs []error
	for _, r := range rec.Replication.Replicas {
		k, err := s.deleteReplicaSnapshot(ctx, rec.Name, r.Node, snap)
		switch {
		case err == nil:
			kept = max(kept, k)
		case errors.Is(err, errdefs.ErrNotFound):
		case r.Mode != replset.InSync:
			s.log.Warn("snapshot not deleted on a replica out of sync; it is when the replica comes back",
				"snapshot", rec.Name+"@"+snap, "node", r.Node, "err", err)
		default:
			errs = append(errs, fmt.Errorf("node %s: %w", r.Node, err))
		}
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("snapshot %s@%s is deleted on the other replicas, but not on: %w; it stays listed as deleting: delete it again when the node is back: %w",
			rec.Name, snap, errors.Join(errs...), errdefs.ErrUnavailable)
	}
	return kept, nil
}

// pruneSnapshots deletes the snapshots of node's replica of volume name
// that the volume no longer has: deleted while the replica was away.
func (s *Server) pruneSnapshots(ctx context.Context, name, node string) error {
	have, err := s.replicaSnapshots(ctx, name, node)
	if err != nil || len(have) == 0 {
		return err
	}
	recs, err := s.meta.ListSnapshots(ctx, name)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, r := range recs {
		keep[r.Name] = r.State != meta.StateDeleting
	}
	for _, sn := range have {
		if keep[sn] {
			continue
		}
		if _, err := s.deleteReplicaSnapshot(ctx, name, node, sn); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("snapshot %s@%s on node %s: %w", name, sn, node, err)
		}
		s.log.Info("deleted a snapshot the replica kept while away", "snapshot", name+"@"+sn, "node", node)
	}
	return nil
}

// checkRevertable refuses to revert replicated volume rec to snap unless
// every in-sync replica holds snap as its latest snapshot, so that the
// revert cannot succeed on some and be refused on others. (Replicas out
// of sync are not reverted: their catch-up copies what changed since.)
func (s *Server) checkRevertable(ctx context.Context, rec meta.Volume, snap string) error {
	for _, node := range rec.Replication.InSync() {
		have, err := s.replicaSnapshots(ctx, rec.Name, node)
		if err != nil {
			return fmt.Errorf("revert volume %q: snapshots of the replica on %s: %w", rec.Name, node, err)
		}
		if len(have) == 0 || have[len(have)-1] != snap {
			return fmt.Errorf("cannot revert volume %q to %s: the replica on %s holds %s as its latest snapshot (a volume reverts only to its latest: delete the later ones first): %w",
				rec.Name, snap, node, strings.Join(have, ", "), errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// cloneNodes chooses the nodes of a replicated clone of src@snap: nodes
// holding an in-sync replica of src with the snapshot (a clone shares its
// source's layers, so it can live nowhere else), this node first, among
// spec.nodes when given.
func (s *Server) cloneNodes(ctx context.Context, src meta.Volume, snap string, spec placeSpec) ([]string, error) {
	cand := []string{s.node}
	if src.Replicated() {
		cand = src.Replication.InSync()
		slices.SortStableFunc(cand, func(a, b string) int {
			switch {
			case a == s.node:
				return -1
			case b == s.node:
				return 1
			}
			return 0
		})
	}
	var ok, without []string
	for _, n := range cand {
		if len(spec.nodes) > 0 && !slices.Contains(spec.nodes, n) {
			continue
		}
		if have, err := s.replicaSnapshots(ctx, src.Name, n); err != nil || !slices.Contains(have, snap) {
			without = append(without, n)
			continue
		}
		ok = append(ok, n)
	}
	if len(ok) < spec.replicas {
		why := fmt.Sprintf("in-sync replicas of %s are on %s", src.Name, strings.Join(cand, ", "))
		if len(without) > 0 {
			why += fmt.Sprintf("; %s lack snapshot %s or cannot be reached", strings.Join(without, ", "), snap)
		}
		return nil, fmt.Errorf("cannot place %d replicas of a clone of %s@%s: a clone shares its source's layers, so its replicas go only where the source's are (%s): %w",
			spec.replicas, src.Name, snap, why, errdefs.ErrFailedPrecondition)
	}
	return ok[:spec.replicas], nil
}

// cloneReplicas makes dst a thin clone of src@snap on every node of nodes
// (this node's through the agent). On failure it removes what it made.
func (s *Server) cloneReplicas(ctx context.Context, src, snap, dst string, size int64, nodes []string) error {
	return s.makeReplicas(ctx, dst, nodes, fmt.Sprintf("clone %s@%s to %q", src, snap, dst),
		func() error { _, err := s.agent.Clone(src, snap, dst, size); return err },
		func(c *replica.Control) error { return c.Clone(ctx, src, snap, dst, size) })
}

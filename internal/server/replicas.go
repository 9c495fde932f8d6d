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

// refuseSpread refuses an operation that changes a volume's layers on
// this node only (revert, snapshot delete) when the volume has replicas on
// other nodes: their layers would no longer match (invariant 4).
func refuseSpread(rec meta.Volume, action string) error {
	nodes := replicaNodes(rec)
	if len(nodes) <= 1 {
		return nil
	}
	return fmt.Errorf("cannot %s volume %q: it has %d replicas (on %s), and this release does that on one replica only; reduce it to one first (strata volume ha-update %s --repl 1), then add them back: %w",
		action, rec.Name, len(nodes), strings.Join(nodes, ", "), rec.Name, errdefs.ErrFailedPrecondition)
}

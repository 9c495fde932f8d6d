package server

import (
	"context"
	"time"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/meta"
)

// GetStatus reports the cluster: its id, nodes, and how many volumes and
// snapshots it holds (of those the caller may see). A node is online when its last heartbeat is less than
// three heartbeat periods old.
func (s *Server) GetStatus(ctx context.Context, req *pb.GetStatusRequest) (*pb.Status, error) {
	nodes, err := s.meta.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	vols, err := s.meta.ListVolumes(ctx)
	if err != nil {
		return nil, err
	}
	snaps, err := s.meta.ListSnapshots(ctx, "")
	if err != nil {
		return nil, err
	}
	st := &pb.Status{
		Version:       s.version,
		ClusterId:     s.clusterID,
		EtcdEndpoints: s.meta.Endpoints(),
	}
	// Counts of what the caller may see: a developer's, of its tenant.
	caller := CallerFrom(ctx)
	reach := map[string]bool{}
	for _, v := range vols {
		reach[v.Name] = mayReach(caller, v)
		if v.State == meta.StateReady && reach[v.Name] {
			st.VolumeCount++
		}
	}
	for _, sn := range snaps {
		if sn.State == meta.StateReady && (reach[sn.Volume] || caller.Role == meta.RoleAdmin || caller.Role == meta.RoleViewer) {
			st.SnapshotCount++
		}
	}
	for _, n := range nodes {
		pn := &pb.Node{
			Name:               n.Name,
			State:              "offline",
			ApiAddress:         n.Addresses["api"],
			NbdAddress:         n.Addresses["nbd"],
			PoolCapacityBytes:  n.PoolCapacity,
			PoolAvailableBytes: n.PoolAvailable,
			PoolAllocatedBytes: n.PoolAllocated,
			Labels:             n.Labels,
		}
		if time.Since(n.Heartbeat) < 3*s.heartbeat {
			pn.State = "online"
		}
		if n.Name == s.node {
			pn.State = "online"
			if u, err := s.agent.Usage(); err == nil {
				pn.PoolCapacityBytes, pn.PoolAvailableBytes, pn.PoolAllocatedBytes = u.Capacity, u.Available, u.Allocated
			}
		}
		st.Nodes = append(st.Nodes, pn)
	}
	return st, nil
}

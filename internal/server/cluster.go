package server

import (
	"context"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/meta"
)

// GetStatus reports the cluster: its id, etcd endpoints, nodes, and how
// many volumes and snapshots it holds (of those the caller may see). A
// node is online while its presence lease lives (meta.KeepPresence), and
// is an etcd member when a started member of the cluster's etcd has its
// name.
func (s *Server) GetStatus(ctx context.Context, req *pb.GetStatusRequest) (*pb.Status, error) {
	nodes, online, err := s.meta.NodeStates(ctx)
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
	members := map[string]bool{}
	if !s.meta.External() {
		// The members' own list is the truth; a node's store may know
		// only its own member's endpoint.
		if ms, err := s.meta.Members(ctx); err == nil {
			if eps := meta.ClientURLs(ms); len(eps) > 0 {
				st.EtcdEndpoints = eps
			}
			for _, m := range ms {
				members[m.Name] = m.Started()
			}
		} else {
			s.log.Debug("status: etcd member list", "err", err)
		}
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
			ReplicaAddress:     n.Addresses["replica"],
			EtcdMember:         members[n.Name],
		}
		if online[n.Name] {
			pn.State = "online"
		}
		// This node answers, so it is online, whatever its lease.
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

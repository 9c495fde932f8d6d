package server

import (
	"context"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// MapVolume makes the volume a raw block device of this node (a loop
// device over its FUSE file, no filesystem), or returns the device it is
// mapped at. A mounted volume is FailedPrecondition.
func (s *Server) MapVolume(ctx context.Context, req *pb.MapVolumeRequest) (*pb.MapVolumeResponse, error) {
	if err := errdefs.ValidateName("volume", req.Name); err != nil {
		return nil, err
	}
	ctx, done, err := s.useVolume(ctx, req.Name, actMap)
	if err != nil {
		return nil, err
	}
	defer done()
	m, err := s.agent.Map(ctx, req.Name, req.ReadOnly)
	if err != nil {
		return nil, err
	}
	return &pb.MapVolumeResponse{Device: m.Device, ReadOnly: m.ReadOnly}, nil
}

// UnmapVolume undoes MapVolume; a volume that is not mapped is NotFound,
// one whose device is open is FailedPrecondition.
func (s *Server) UnmapVolume(ctx context.Context, req *pb.UnmapVolumeRequest) (*pb.UnmapVolumeResponse, error) {
	if err := errdefs.ValidateName("volume", req.Name); err != nil {
		return nil, err
	}
	if CallerFrom(ctx).Role != meta.RoleAdmin {
		if _, err := s.volumeFor(ctx, req.Name, actUnmap); err != nil {
			return nil, err
		}
	}
	unlock := s.locks.lock(req.Name)
	defer unlock()
	if err := s.agent.Unmap(req.Name); err != nil {
		return nil, err
	}
	return &pb.UnmapVolumeResponse{}, nil
}

// useVolume starts an operation that puts a ready volume to use on this
// node (mount, map) if the caller may (action): it takes the volume's lock
// and returns the context the operation runs under and the function that
// ends it.
func (s *Server) useVolume(ctx context.Context, name, action string) (context.Context, func(), error) {
	unlock := s.locks.lock(name)
	ctx, cancel := detach(ctx, opTimeout)
	done := func() { cancel(); unlock() }
	if _, err := s.readyVolumeFor(ctx, name, action); err != nil {
		done()
		return nil, nil, err
	}
	return ctx, done, nil
}

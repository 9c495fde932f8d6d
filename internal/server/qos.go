package server

import (
	"context"
	"fmt"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/qos"
)

// qosView shows limits with every field set, 0 meaning no limit.
func qosView(l qos.Limits) *pb.QosLimits {
	return &pb.QosLimits{
		MaxReadIops:            &l.ReadIOPS,
		MaxWriteIops:           &l.WriteIOPS,
		MaxReadBytesPerSecond:  &l.ReadBytesPerSec,
		MaxWriteBytesPerSecond: &l.WriteBytesPerSec,
	}
}

// overlayLimits returns base with the fields q sets replaced, validated.
func overlayLimits(base qos.Limits, q *pb.QosLimits) (qos.Limits, error) {
	l := base
	if q != nil {
		for _, f := range []struct {
			src *int64
			dst *int64
		}{
			{q.MaxReadIops, &l.ReadIOPS},
			{q.MaxWriteIops, &l.WriteIOPS},
			{q.MaxReadBytesPerSecond, &l.ReadBytesPerSec},
			{q.MaxWriteBytesPerSecond, &l.WriteBytesPerSec},
		} {
			if f.src != nil {
				*f.dst = *f.src
			}
		}
	}
	if err := l.Validate(); err != nil {
		return qos.Limits{}, fmt.Errorf("qos: %w", err)
	}
	return l, nil
}

// cloneLimits returns the limits of a new clone: the cluster's clone
// defaults, with what the request sets instead.
func (s *Server) cloneLimits(ctx context.Context, q *pb.QosLimits) (qos.Limits, error) {
	// Refuse bad values before reading etcd.
	if _, err := overlayLimits(qos.Limits{}, q); err != nil {
		return qos.Limits{}, err
	}
	base, err := s.cloneDefaults(ctx)
	if err != nil {
		return qos.Limits{}, err
	}
	return overlayLimits(base, q)
}

// UpdateVolume changes a volume's QoS limits: the fields req.Qos sets, 0
// removing a limit. The record is written first, then the running engine,
// if any, applies the limits at once; an engine started later (a restart
// included) starts with them. The same request again changes nothing.
func (s *Server) UpdateVolume(ctx context.Context, req *pb.UpdateVolumeRequest) (*pb.Volume, error) {
	name := req.Name
	if err := errdefs.ValidateName("volume", name); err != nil {
		return nil, err
	}
	if _, err := overlayLimits(qos.Limits{}, req.Qos); err != nil {
		return nil, err
	}
	unlock := s.locks.lock(name)
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()

	rec, err := s.readyVolumeFor(ctx, name, actUpdate)
	if err != nil {
		return nil, err
	}
	lim, err := overlayLimits(rec.QoS, req.Qos)
	if err != nil {
		return nil, err
	}
	if lim != rec.QoS {
		rec.QoS = lim
		if rec, err = s.meta.UpdateVolume(ctx, rec); err != nil {
			return nil, err
		}
	}
	if rec.Node == s.node {
		if err := s.agent.SetLimits(name, lim); err != nil {
			return nil, err
		}
	}
	return s.viewOf(ctx, rec)
}

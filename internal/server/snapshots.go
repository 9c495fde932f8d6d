package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// snapshotName returns the name for a snapshot of volume taken at now when
// none was given: snap-YYYYMMDD-HHMMSS (UTC), with -2, -3, ... appended when
// that name is taken.
func (s *Server) snapshotName(ctx context.Context, volume string, now time.Time) (string, error) {
	base := "snap-" + now.UTC().Format("20060102-150405")
	for i := 1; ; i++ {
		name := base
		if i > 1 {
			name = fmt.Sprintf("%s-%d", base, i)
		}
		_, err := s.meta.GetSnapshot(ctx, volume, name)
		if errors.Is(err, errdefs.ErrNotFound) {
			if has, herr := s.agent.HasSnapshot(volume, name); herr == nil && has {
				continue // an unrecorded snapshot of the chain holds the name
			}
			return name, nil
		}
		if err != nil {
			return "", err
		}
	}
}

// CreateSnapshot takes a snapshot of a volume at one point of its write
// stream. An empty name is generated (snap-YYYYMMDD-HHMMSS, UTC). A name
// that is taken is AlreadyExists.
func (s *Server) CreateSnapshot(ctx context.Context, req *pb.CreateSnapshotRequest) (*pb.Snapshot, error) {
	vol := req.Volume
	if err := errdefs.ValidateName("volume", vol); err != nil {
		return nil, err
	}
	if req.Name != "" {
		if err := errdefs.ValidateName("snapshot", req.Name); err != nil {
			return nil, err
		}
	}
	unlock := s.locks.lock(vol)
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()

	if vrec, err := s.readyVolumeFor(ctx, vol, actSnapshot); err != nil {
		return nil, err
	} else if err := refuseOutOfSync(vrec, "snapshot"); err != nil {
		return nil, err
	}
	name := req.Name
	if name == "" {
		var err error
		if name, err = s.snapshotName(ctx, vol, time.Now()); err != nil {
			return nil, err
		}
	}
	rec, err := s.meta.CreateSnapshot(ctx, meta.Snapshot{Volume: vol, Name: name, Created: time.Now().UTC(), State: meta.StateCreating})
	if err != nil {
		return nil, err
	}
	info, err := s.agent.Snapshot(vol, name)
	if err != nil {
		if derr := s.meta.DeleteSnapshot(ctx, rec); derr != nil {
			s.log.Warn("removing the record of a snapshot that could not be taken", "snapshot", vol+"@"+name, "err", derr)
		}
		return nil, err
	}
	rec.State = meta.StateReady
	rec.Size = info.Size
	if !info.Created.IsZero() {
		rec.Created = info.Created.UTC()
	}
	if rec, err = s.meta.UpdateSnapshot(ctx, rec); err != nil {
		return nil, fmt.Errorf("snapshot %s@%s was taken but could not be recorded as ready (the next start finishes it): %w", vol, name, err)
	}
	return snapshotView(rec, info.Clones), nil
}

func snapshotView(rec meta.Snapshot, clones int) *pb.Snapshot {
	return &pb.Snapshot{
		Volume:    rec.Volume,
		Name:      rec.Name,
		SizeBytes: rec.Size,
		CreatedAt: timestamppb.New(rec.Created),
		Clones:    int32(clones),
	}
}

// ListSnapshots lists the snapshots of a volume, or of every volume the
// caller may see when volume is empty, oldest first within a volume.
func (s *Server) ListSnapshots(ctx context.Context, req *pb.ListSnapshotsRequest) (*pb.ListSnapshotsResponse, error) {
	if req.Volume != "" {
		if err := errdefs.ValidateName("volume", req.Volume); err != nil {
			return nil, err
		}
		if _, err := s.volumeFor(ctx, req.Volume, actListSnapshots); err != nil {
			return nil, err
		}
	}
	recs, err := s.meta.ListSnapshots(ctx, req.Volume)
	if err != nil {
		return nil, err
	}
	if req.Volume == "" {
		if recs, err = s.reachableSnapshots(ctx, recs); err != nil {
			return nil, err
		}
	}
	clones := map[string]map[string]int{} // volume -> snapshot -> clones
	resp := &pb.ListSnapshotsResponse{Snapshots: []*pb.Snapshot{}}
	for _, rec := range recs {
		if rec.State != meta.StateReady {
			continue
		}
		c, ok := clones[rec.Volume]
		if !ok {
			c = map[string]int{}
			if st, err := s.agent.Status(rec.Volume); err == nil {
				for _, si := range st.Snapshots {
					c[si.Name] = si.Clones
				}
			}
			clones[rec.Volume] = c
		}
		resp.Snapshots = append(resp.Snapshots, snapshotView(rec, c[rec.Name]))
	}
	sortSnapshots(resp.Snapshots)
	return resp, nil
}

// sortSnapshots orders by volume, then creation time, then name.
func sortSnapshots(ss []*pb.Snapshot) {
	slices.SortStableFunc(ss, func(a, b *pb.Snapshot) int {
		return cmp.Or(
			strings.Compare(a.Volume, b.Volume),
			a.CreatedAt.AsTime().Compare(b.CreatedAt.AsTime()),
			strings.Compare(a.Name, b.Name),
		)
	})
}

// DeleteSnapshot removes a snapshot. Its data stays on disk while clones
// use it; the response says how many do.
func (s *Server) DeleteSnapshot(ctx context.Context, req *pb.DeleteSnapshotRequest) (*pb.DeleteSnapshotResponse, error) {
	vol := req.Volume
	if err := errdefs.ValidateName("volume", vol); err != nil {
		return nil, err
	}
	if err := errdefs.ValidateName("snapshot", req.Name); err != nil {
		return nil, err
	}
	unlock := s.locks.lock(vol)
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()

	vrec, err := s.volumeFor(ctx, vol, actDeleteSnapshot)
	if err != nil {
		return nil, err
	}
	if err := s.refuseTemplateVersion(ctx, vol, req.Name, actDelete); err != nil {
		return nil, err
	}
	rec, err := s.meta.GetSnapshot(ctx, vol, req.Name)
	if err != nil {
		return nil, err
	}
	if rec.State == meta.StateCreating {
		return nil, fmt.Errorf("snapshot %s@%s is being created; retry shortly: %w", vol, req.Name, errdefs.ErrFailedPrecondition)
	}
	if rec.State != meta.StateDeleting {
		rec.State = meta.StateDeleting
		if rec, err = s.meta.UpdateSnapshot(ctx, rec); err != nil {
			return nil, err
		}
	}
	var kept int
	if vrec.Replicated() {
		kept, err = s.deleteSnapshotEverywhere(ctx, vrec, req.Name)
	} else {
		var res chain.DeleteSnapshotResult
		res, err = s.agent.DeleteSnapshot(vol, req.Name)
		kept = res.KeptForClones
		if errors.Is(err, errdefs.ErrNotFound) {
			err = nil
		}
	}
	if err != nil {
		return nil, err
	}
	if err := s.meta.DeleteSnapshot(ctx, rec); err != nil {
		return nil, err
	}
	return &pb.DeleteSnapshotResponse{KeptForClones: int32(kept)}, nil
}

// reachableSnapshots keeps the snapshots of the volumes the caller may see.
func (s *Server) reachableSnapshots(ctx context.Context, recs []meta.Snapshot) ([]meta.Snapshot, error) {
	c := CallerFrom(ctx)
	if c.Role == meta.RoleAdmin || c.Role == meta.RoleViewer {
		return recs, nil
	}
	vols, err := s.meta.ListVolumes(ctx)
	if err != nil {
		return nil, err
	}
	ok := map[string]bool{}
	for _, v := range vols {
		ok[v.Name] = mayReach(c, v)
	}
	out := recs[:0]
	for _, sn := range recs {
		if ok[sn.Volume] {
			out = append(out, sn)
		}
	}
	return out, nil
}

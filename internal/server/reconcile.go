package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// Reconcile makes this node's pool agree with the records in etcd after a
// crash or a stop; run it before Serve.
//
//   - a volume "creating": completed (marked ready) when its chain exists,
//     its record removed otherwise;
//   - a volume "deleting": its chain removed, then its record;
//   - a ready volume whose chain is smaller than recorded (a resize was
//     interrupted) is grown; one whose chain is larger (a revert was
//     interrupted before it happened) gets the chain's size recorded;
//   - a ready volume without a chain is reported and shown as "missing";
//   - the agent gets every volume's QoS limits, which engines start with;
//   - snapshots "creating" are completed or removed, "deleting" finished;
//   - the working clone of a template version being made is removed (see
//     reconcileTemplates), and so are the records of clones without a volume;
//   - chains no record lists are reported and left alone.
func (s *Server) Reconcile(ctx context.Context) error {
	vols, err := s.meta.ListVolumes(ctx)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	recorded := map[string]bool{}
	var errs []error
	for _, rec := range vols {
		recorded[rec.Name] = true
		if rec.Node != s.node {
			continue
		}
		if err := s.reconcileVolume(ctx, rec); err != nil {
			errs = append(errs, err)
		}
	}
	snaps, err := s.meta.ListSnapshots(ctx, "")
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	for _, sn := range snaps {
		if err := s.reconcileSnapshot(ctx, sn); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.reconcileTemplates(ctx); err != nil {
		errs = append(errs, fmt.Errorf("reconcile templates: %w", err))
	}
	chains, err := s.agent.List()
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	for _, c := range chains {
		switch {
		case recorded[c]:
		case strings.HasPrefix(c, historyClonePrefix):
			// A snapshot pinned by a rebuild that a crash interrupted.
			if err := s.agent.Pool().Delete(c); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				s.log.Warn("removing the snapshot clone of an interrupted rebuild", "chain", c, "err", err)
			}
		default:
			s.log.Warn("the pool holds a chain that no volume record lists; leaving it alone", "chain", c)
		}
	}
	return errors.Join(errs...)
}

func (s *Server) reconcileVolume(ctx context.Context, rec meta.Volume) error {
	name := rec.Name
	unlock := s.locks.lock(name)
	defer unlock()
	exists, err := s.agent.Exists(name)
	if err != nil {
		return fmt.Errorf("reconcile volume %q: %w", name, err)
	}
	others := replicaNodes(rec)
	others = slices.DeleteFunc(others, func(n string) bool { return n == s.node })
	switch rec.State {
	case meta.StateCreating:
		if len(others) > 0 {
			// Some replicas may not have been made: the volume never held
			// data, so it goes, on every node.
			s.log.Info("removing a replicated volume whose creation was interrupted", "volume", name)
			if exists {
				if err := s.agent.Delete(name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
					return fmt.Errorf("reconcile volume %q: %w", name, err)
				}
			}
			if err := s.deleteReplicas(ctx, name, others); err != nil {
				return fmt.Errorf("reconcile volume %q: %w", name, err)
			}
			return s.meta.DeleteVolume(ctx, rec)
		}
		if !exists {
			s.log.Info("removing the record of a volume whose creation was interrupted", "volume", name)
			return s.meta.DeleteVolume(ctx, rec)
		}
		st, err := s.agent.Status(name)
		if err != nil {
			return err
		}
		s.log.Info("completing a volume whose creation was interrupted", "volume", name)
		if err := s.agent.SetLimits(name, rec.QoS); err != nil {
			return fmt.Errorf("reconcile volume %q: %w", name, err)
		}
		rec.State = meta.StateReady
		rec.Size = st.Size
		_, err = s.meta.UpdateVolume(ctx, rec)
		return err
	case meta.StateDeleting:
		s.log.Info("finishing an interrupted delete", "volume", name)
		if exists {
			if err := s.agent.Delete(name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				return fmt.Errorf("reconcile volume %q: %w", name, err)
			}
		}
		if err := s.deleteReplicas(ctx, name, others); err != nil {
			s.log.Warn("some replicas of a deleted volume could not be deleted", "volume", name, "err", err)
		}
		return s.meta.DeleteVolume(ctx, rec)
	case meta.StateReady:
		if !exists {
			s.log.Error("volume is recorded but its chain is missing from the pool", "volume", name)
			return nil
		}
		if len(others) > 0 {
			// Its engine runs here from the start, so that the repair
			// loop watches its replicas even before any I/O comes.
			defer s.attachLater(name)
		}
		// Engines start with the recorded limits.
		if err := s.agent.SetLimits(name, rec.QoS); err != nil {
			return fmt.Errorf("reconcile volume %q: %w", name, err)
		}
		st, err := s.agent.Status(name)
		if err != nil {
			return err
		}
		switch {
		case st.Size < rec.Size:
			s.log.Info("finishing an interrupted resize", "volume", name, "size", rec.Size)
			if _, err := s.agent.Resize(name, rec.Size); err != nil {
				return fmt.Errorf("reconcile volume %q: %w", name, err)
			}
		case st.Size > rec.Size:
			s.log.Info("recording the chain's size after an interrupted revert", "volume", name, "size", st.Size)
			rec.Size = st.Size
			_, err := s.meta.UpdateVolume(ctx, rec)
			return err
		}
	}
	return nil
}

func (s *Server) reconcileSnapshot(ctx context.Context, sn meta.Snapshot) error {
	ref := sn.Volume + "@" + sn.Name
	vol, err := s.meta.GetVolume(ctx, sn.Volume)
	if errors.Is(err, errdefs.ErrNotFound) {
		s.log.Info("removing the record of a snapshot of a deleted volume", "snapshot", ref)
		return s.meta.DeleteSnapshot(ctx, sn)
	}
	if err != nil || vol.Node != s.node {
		return err
	}
	unlock := s.locks.lock(sn.Volume)
	defer unlock()
	has, err := s.agent.HasSnapshot(sn.Volume, sn.Name)
	if errors.Is(err, errdefs.ErrNotFound) {
		has, err = false, nil
	}
	if err != nil {
		return err
	}
	switch sn.State {
	case meta.StateCreating:
		if !has {
			s.log.Info("removing the record of a snapshot that was not taken", "snapshot", ref)
			return s.meta.DeleteSnapshot(ctx, sn)
		}
		st, err := s.agent.Status(sn.Volume)
		if err != nil {
			return err
		}
		for _, si := range st.Snapshots {
			if si.Name == sn.Name {
				sn.Size = si.Size
				if !si.Created.IsZero() {
					sn.Created = si.Created.UTC()
				}
			}
		}
		s.log.Info("completing a snapshot whose recording was interrupted", "snapshot", ref)
		sn.State = meta.StateReady
		_, err = s.meta.UpdateSnapshot(ctx, sn)
		return err
	case meta.StateDeleting:
		s.log.Info("finishing an interrupted snapshot delete", "snapshot", ref)
		if vol.Replicated() {
			if _, err := s.deleteSnapshotEverywhere(ctx, vol, sn.Name); err != nil {
				return err
			}
		} else if has {
			if _, err := s.agent.DeleteSnapshot(sn.Volume, sn.Name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				return err
			}
		}
		return s.meta.DeleteSnapshot(ctx, sn)
	default:
		if !has {
			s.log.Error("snapshot is recorded but missing from its chain", "snapshot", ref)
		}
	}
	return nil
}

package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// Why the clone controller deletes a clone.
const (
	expiredTTL  = "ttl"
	expiredIdle = "idle"
)

// maxCloneDuration bounds TTLs and idle expiries (about ten years).
const maxCloneDuration = 10 * 365 * 24 * time.Hour

func cloneLock(name string) string { return "clone/" + name }

func cloneDuration(what string, secs int64) (time.Duration, error) {
	if secs < 0 || time.Duration(secs)*time.Second > maxCloneDuration {
		return 0, fmt.Errorf("%s of %d seconds: want 0 (none) to %d: %w", what, secs, int64(maxCloneDuration/time.Second), errdefs.ErrInvalidArgument)
	}
	return time.Duration(secs) * time.Second, nil
}

// CreateClone makes clone req.Name of a template version: a thin clone of
// the version's sealed snapshot, owned by the caller's tenant (an admin's
// by req.Tenant, or none), with the cluster's clone-default QoS limits.
func (s *Server) CreateClone(ctx context.Context, req *pb.CreateCloneRequest) (*pb.Clone, error) {
	if err := errdefs.ValidateName("clone", req.Name); err != nil {
		return nil, err
	}
	if err := validateTemplateName(req.Template); err != nil {
		return nil, err
	}
	if req.Version < 0 {
		return nil, fmt.Errorf("version %d: want 0 (the latest) or a version number: %w", req.Version, errdefs.ErrInvalidArgument)
	}
	ttl, err := cloneDuration("ttl", req.TtlSeconds)
	if err != nil {
		return nil, err
	}
	idle, err := cloneDuration("idle expiry", req.IdleExpirySeconds)
	if err != nil {
		return nil, err
	}
	caller := CallerFrom(ctx)
	tenant := req.Tenant
	if caller.Role != meta.RoleAdmin {
		if tenant != "" && tenant != caller.Tenant {
			return nil, fmt.Errorf("%s may not make a clone for tenant %q: %w", caller, tenant, errdefs.ErrPermissionDenied)
		}
		tenant = caller.Tenant
	} else if tenant != "" {
		if err := errdefs.ValidateName("tenant", tenant); err != nil {
			return nil, err
		}
	}
	if err := s.authorizeTemplate(ctx, req.Template, actClone); err != nil {
		return nil, err
	}
	unlock := s.locks.lock(cloneLock(req.Name))
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()

	tpl, err := s.meta.GetTemplate(ctx, req.Template)
	if err != nil {
		return nil, err
	}
	ver, err := pickVersion(tpl, int(req.Version), req.Version == 0)
	if err != nil {
		return nil, err
	}
	if rec, err := s.meta.GetClone(ctx, req.Name); err == nil {
		if rec.Template == req.Template && rec.Version == ver.Number && rec.Tenant == tenant {
			if vol, err := s.meta.GetVolume(ctx, req.Name); err == nil {
				return s.cloneView(ctx, rec, vol, time.Now())
			}
		}
		return nil, fmt.Errorf("clone %q exists (of template %s version %d): %w", req.Name, rec.Template, rec.Version, errdefs.ErrAlreadyExists)
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	if _, err := s.meta.GetVolume(ctx, req.Name); err == nil {
		return nil, fmt.Errorf("a volume named %q exists; choose another name: %w", req.Name, errdefs.ErrAlreadyExists)
	}
	now := time.Now().UTC()
	rec := meta.Clone{Name: req.Name, Template: tpl.Name, Version: ver.Number, Tenant: tenant, Owner: caller.User,
		Created: now, IdleExpiry: idle, Protected: req.Protected}
	if ttl > 0 {
		rec.Expires = now.Add(ttl)
	}
	// The record first: a crash before the volume is made leaves a record
	// that the controller and startup drop.
	if rec, err = s.meta.CreateClone(ctx, rec); err != nil {
		return nil, err
	}
	lim, err := s.cloneLimits(ctx, nil)
	if err == nil {
		_, err = s.create(ctx, req.Name, 0, ver.Volume, ver.Snapshot, cloneLabels(tpl.Name, ver.Number), lim, tenant)
	}
	if err != nil {
		if derr := s.meta.DeleteClone(ctx, rec); derr != nil {
			s.log.Warn("removing the record of a clone that could not be made", "clone", req.Name, "err", derr)
		}
		return nil, err
	}
	vol, err := s.meta.GetVolume(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return s.cloneView(ctx, rec, vol, time.Now())
}

func cloneLabels(template string, version int) map[string]string {
	return map[string]string{LabelTemplate: template, LabelTemplateVersion: strconv.Itoa(version)}
}

// pickVersion returns version n of the template, or its latest.
func pickVersion(t meta.Template, n int, latest bool) (meta.TemplateVersion, error) {
	var v meta.TemplateVersion
	var ok bool
	if latest {
		v, ok = t.Latest()
	} else {
		v, ok = t.Version(n)
	}
	if ok {
		return v, nil
	}
	var have []string
	for _, v := range t.Versions {
		have = append(have, strconv.Itoa(v.Number))
	}
	if len(have) == 0 {
		return v, fmt.Errorf("template %s has no version yet: %w", t.Name, errdefs.ErrFailedPrecondition)
	}
	return v, fmt.Errorf("template %s has no version %d (its versions: %s): %w", t.Name, n, listSome(have, 10), errdefs.ErrNotFound)
}

// liveClone is a clone record with its volume.
type liveClone struct {
	rec meta.Clone
	vol meta.Volume
}

// liveClones lists the clones whose volume exists.
func (s *Server) liveClones(ctx context.Context) ([]liveClone, error) {
	recs, err := s.meta.ListClones(ctx)
	if err != nil {
		return nil, err
	}
	vols, err := s.meta.ListVolumes(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]meta.Volume{}
	for _, v := range vols {
		byName[v.Name] = v
	}
	out := make([]liveClone, 0, len(recs))
	for _, r := range recs {
		if v, ok := byName[r.Name]; ok {
			out = append(out, liveClone{r, v})
		}
	}
	return out, nil
}

// activeAt is the start of a clone's idle clock: its last I/O on this node,
// its creation, its last reset or extension, or the node's start, the
// latest of them (I/O before a restart is not known).
func (s *Server) activeAt(rec meta.Clone) time.Time {
	t := rec.Created
	for _, u := range []time.Time{rec.Touched, s.started, s.agent.LastIO(rec.Name)} {
		if u.After(t) {
			t = u
		}
	}
	return t
}

// expired says why the clone controller deletes the clone at now, or "".
func expired(rec meta.Clone, active, now time.Time) string {
	switch {
	case rec.Protected:
		return ""
	case !rec.Expires.IsZero() && !now.Before(rec.Expires):
		return expiredTTL
	case rec.IdleExpiry > 0 && now.Sub(active) >= rec.IdleExpiry:
		return expiredIdle
	}
	return ""
}

func (s *Server) cloneView(ctx context.Context, rec meta.Clone, vol meta.Volume, now time.Time) (*pb.Clone, error) {
	active := s.activeAt(rec)
	c := &pb.Clone{
		Name: rec.Name, Template: rec.Template, Version: int32(rec.Version), Tenant: rec.Tenant, Owner: rec.Owner,
		CreatedAt: timestamppb.New(rec.Created), IdleExpirySeconds: int64(rec.IdleExpiry / time.Second),
		ActiveAt: timestamppb.New(active), Protected: rec.Protected, Expired: expired(rec, active, now),
	}
	if !rec.Expires.IsZero() {
		c.ExpiresAt = timestamppb.New(rec.Expires)
	}
	if rec.IdleExpiry > 0 {
		c.IdleExpiresAt = timestamppb.New(active.Add(rec.IdleExpiry))
	}
	v, err := s.viewOf(ctx, vol)
	if err != nil {
		return nil, err
	}
	c.Volume = v
	return c, nil
}

// cloneFor returns the clone record name and its volume if the caller may
// act on them; a missing volume is a zero Volume.
func (s *Server) cloneFor(ctx context.Context, name, action string) (meta.Clone, meta.Volume, error) {
	if err := errdefs.ValidateName("clone", name); err != nil {
		return meta.Clone{}, meta.Volume{}, err
	}
	rec, err := s.meta.GetClone(ctx, name)
	if err != nil {
		return rec, meta.Volume{}, err
	}
	vol, err := s.meta.GetVolume(ctx, name)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		// What is left of an interrupted operation: its owner may finish it.
		vol = meta.Volume{Name: name, Tenant: rec.Tenant}
	case err != nil:
		return rec, vol, err
	}
	if err := s.authorizeVolume(ctx, vol, action); err != nil {
		return rec, vol, err
	}
	return rec, vol, nil
}

// ListClones lists the clones the caller may see.
func (s *Server) ListClones(ctx context.Context, req *pb.ListClonesRequest) (*pb.ListClonesResponse, error) {
	clones, err := s.liveClones(ctx)
	if err != nil {
		return nil, err
	}
	caller := CallerFrom(ctx)
	now := time.Now()
	resp := &pb.ListClonesResponse{Clones: []*pb.Clone{}}
	for _, c := range clones {
		if !mayReach(caller, c.vol) || (req.Template != "" && c.rec.Template != req.Template) {
			continue
		}
		v, err := s.cloneView(ctx, c.rec, c.vol, now)
		if err != nil {
			return nil, err
		}
		resp.Clones = append(resp.Clones, v)
	}
	return resp, nil
}

// GetClone describes one clone.
func (s *Server) GetClone(ctx context.Context, req *pb.GetCloneRequest) (*pb.Clone, error) {
	rec, vol, err := s.cloneFor(ctx, req.Name, actRead)
	if err != nil {
		return nil, err
	}
	if vol.Rev == 0 {
		return nil, fmt.Errorf("clone %q has no volume (an interrupted reset: reset it again, or delete it): %w", req.Name, errdefs.ErrNotFound)
	}
	return s.cloneView(ctx, rec, vol, time.Now())
}

// ResetClone makes the clone's volume again from its template version (or
// another), keeping its name, tenant and QoS limits: its writes and its
// own snapshots are dropped. Refused while the clone is in use.
func (s *Server) ResetClone(ctx context.Context, req *pb.ResetCloneRequest) (*pb.Clone, error) {
	if req.Version < 0 {
		return nil, fmt.Errorf("version %d: want a version number, or 0 for the clone's own: %w", req.Version, errdefs.ErrInvalidArgument)
	}
	rec, vol, err := s.cloneFor(ctx, req.Name, "reset")
	if err != nil {
		return nil, err
	}
	if err := s.authorizeTemplate(ctx, rec.Template, actClone); err != nil {
		return nil, err
	}
	unlock := s.locks.lock(cloneLock(req.Name))
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()

	tpl, err := s.meta.GetTemplate(ctx, rec.Template)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("template %s of clone %s was deleted, so the clone cannot be reset: %w", rec.Template, rec.Name, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	n := rec.Version
	if req.Version > 0 {
		n = int(req.Version)
	}
	ver, err := pickVersion(tpl, n, req.Latest)
	if err != nil {
		return nil, err
	}
	lim := vol.QoS
	if vol.Rev != 0 {
		if vol.Node == s.node {
			if err := s.agent.Busy(req.Name, "reset"); err != nil {
				return nil, err
			}
		}
		if _, err := s.DeleteVolume(system(ctx), &pb.DeleteVolumeRequest{Name: req.Name}); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return nil, err
		}
	} else if lim, err = s.cloneLimits(ctx, nil); err != nil {
		return nil, err
	}
	if _, err := s.create(ctx, req.Name, 0, ver.Volume, ver.Snapshot, cloneLabels(tpl.Name, ver.Number), lim, rec.Tenant); err != nil {
		return nil, fmt.Errorf("clone %s was emptied but not made again (reset it again): %w", req.Name, err)
	}
	rec, err = s.updateClone(ctx, req.Name, func(c *meta.Clone) {
		c.Version = ver.Number
		c.Touched = time.Now().UTC()
	})
	if err != nil {
		return nil, err
	}
	if vol, err = s.meta.GetVolume(ctx, req.Name); err != nil {
		return nil, err
	}
	return s.cloneView(ctx, rec, vol, time.Now())
}

// ExtendClone sets the clone's TTL anew from now, and its idle expiry and
// protection when the request sets them.
func (s *Server) ExtendClone(ctx context.Context, req *pb.ExtendCloneRequest) (*pb.Clone, error) {
	ttl, err := cloneDuration("ttl", req.TtlSeconds)
	if err != nil {
		return nil, err
	}
	var idle time.Duration
	if req.IdleExpirySeconds != nil {
		if idle, err = cloneDuration("idle expiry", *req.IdleExpirySeconds); err != nil {
			return nil, err
		}
	}
	if _, _, err := s.cloneFor(ctx, req.Name, "extend"); err != nil {
		return nil, err
	}
	unlock := s.locks.lock(cloneLock(req.Name))
	defer unlock()
	rec, err := s.updateClone(ctx, req.Name, func(c *meta.Clone) {
		now := time.Now().UTC()
		c.Expires = time.Time{}
		if ttl > 0 {
			c.Expires = now.Add(ttl)
		}
		if req.IdleExpirySeconds != nil {
			c.IdleExpiry = idle
		}
		if req.Protected != nil {
			c.Protected = *req.Protected
		}
		c.Touched = now
	})
	if err != nil {
		return nil, err
	}
	vol, err := s.meta.GetVolume(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	return s.cloneView(ctx, rec, vol, time.Now())
}

// DeleteClone deletes the clone's volume (refused while in use) and record.
func (s *Server) DeleteClone(ctx context.Context, req *pb.DeleteCloneRequest) (*pb.DeleteCloneResponse, error) {
	if _, _, err := s.cloneFor(ctx, req.Name, actDelete); err != nil {
		return nil, err
	}
	unlock := s.locks.lock(cloneLock(req.Name))
	defer unlock()
	if err := s.deleteClone(system(ctx), req.Name); err != nil {
		return nil, err
	}
	return &pb.DeleteCloneResponse{}, nil
}

// deleteClone deletes clone name's volume, then its record.
func (s *Server) deleteClone(ctx context.Context, name string) error {
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()
	if _, err := s.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: name}); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	rec, err := s.meta.GetClone(ctx, name)
	if err == nil {
		err = s.meta.DeleteClone(ctx, rec)
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	return err
}

// updateClone applies fn to the clone's record, reading it again when it
// changed concurrently.
func (s *Server) updateClone(ctx context.Context, name string, fn func(*meta.Clone)) (meta.Clone, error) {
	for {
		c, err := s.meta.GetClone(ctx, name)
		if err != nil {
			return c, err
		}
		fn(&c)
		c, err = s.meta.UpdateClone(ctx, c)
		if !errors.Is(err, meta.ErrConflict) {
			return c, err
		}
	}
}

// expireClones is one pass of the clone controller: it deletes the clones
// of this node past their TTL or idle past their idle expiry (unless
// protected), and the records of clones whose volume is gone. A clone in
// use (mounted, exported, mapped) is deleted by a later pass, once
// released. It returns the names of the clones it deleted.
func (s *Server) expireClones(ctx context.Context, now time.Time) []string {
	ctx = system(ctx)
	recs, err := s.meta.ListClones(ctx)
	if err != nil {
		s.log.Warn("clone controller: list clones", "err", err)
		return nil
	}
	var deleted []string
	for _, rec := range recs {
		vol, err := s.meta.GetVolume(ctx, rec.Name)
		if errors.Is(err, errdefs.ErrNotFound) {
			// Deleted as a volume, or never made: drop the record once no
			// operation can still be making it.
			if now.Sub(rec.Created) > opTimeout && now.Sub(rec.Touched) > opTimeout {
				if err := s.meta.DeleteClone(ctx, rec); err == nil {
					s.log.Info("clone controller: removed the record of a clone whose volume is gone", "clone", rec.Name)
				}
			}
			continue
		}
		if err != nil || vol.Node != s.node || vol.State != meta.StateReady {
			continue
		}
		why := expired(rec, s.activeAt(rec), now)
		if why == "" {
			continue
		}
		unlock := s.locks.lock(cloneLock(rec.Name))
		// Read again under the lock: an extension may have come.
		cur, err := s.meta.GetClone(ctx, rec.Name)
		if err == nil && expired(cur, s.activeAt(cur), now) != "" {
			err = s.deleteClone(ctx, rec.Name)
			switch {
			case err == nil:
				deleted = append(deleted, rec.Name)
				s.log.Info("clone controller: deleted an expired clone", "clone", rec.Name, "template", rec.Template, "tenant", rec.Tenant, "reason", why)
			case errors.Is(err, errdefs.ErrFailedPrecondition):
				if s.warnedInUse(rec.Name) {
					s.log.Info("clone controller: an expired clone is in use; it is deleted once released", "clone", rec.Name, "reason", why, "err", err)
				}
			default:
				s.log.Warn("clone controller: deleting an expired clone", "clone", rec.Name, "err", err)
			}
		}
		unlock()
	}
	return deleted
}

// warnedInUse says whether to log that clone name is expired but in use:
// once per clone and node run.
func (s *Server) warnedInUse(name string) bool {
	s.expiryMu.Lock()
	defer s.expiryMu.Unlock()
	if s.inUseLogged == nil {
		s.inUseLogged = map[string]bool{}
	}
	first := !s.inUseLogged[name]
	s.inUseLogged[name] = true
	return first
}

// cloneControllerLoop runs expireClones every interval until stop closes.
// The controller runs on every node for its own clones; with several
// nodes it will run under leader election.
func (s *Server) cloneControllerLoop(interval time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			s.expireClones(ctx, now)
			cancel()
		}
	}
}

package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/agent"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/mask"
	"github.com/strata-storage/strata/internal/meta"
)

// Labels on the volumes of template versions and of clones.
const (
	LabelTemplate        = "templates.strata.io/template"
	LabelTemplateVersion = "templates.strata.io/version"
)

const (
	// templateSnapshot is the snapshot of a version's volume that clones
	// are made from: the masked data, sealed.
	templateSnapshot = "masked"
	// maxTemplateName leaves room in volume names for "tpl-NAME-vN".
	maxTemplateName = 48
	// buildTimeout bounds the making of a version, masking included.
	buildTimeout = 6 * time.Hour
)

// versionVolume names the volume of version n of template t; the source
// volume's snapshot the version is made from has the same name while it
// exists.
func versionVolume(t string, n int) string { return fmt.Sprintf("tpl-%s-v%d", t, n) }

func templateLock(name string) string { return "template/" + name }

func validateTemplateName(name string) error {
	if err := errdefs.ValidateName("template", name); err != nil {
		return err
	}
	if len(name) > maxTemplateName {
		return fmt.Errorf("template name %q is longer than %d characters: %w", name, maxTemplateName, errdefs.ErrInvalidArgument)
	}
	return nil
}

// CreateTemplate makes template req.Name and its version 1 from volume
// req.Source; a failure leaves no template (see build).
func (s *Server) CreateTemplate(ctx context.Context, req *pb.CreateTemplateRequest) (*pb.Template, error) {
	if err := validateTemplateName(req.Name); err != nil {
		return nil, err
	}
	if err := errdefs.ValidateName("volume", req.Source); err != nil {
		return nil, err
	}
	if req.Keep < 0 {
		return nil, fmt.Errorf("keep %d: want 0 (all versions) or more: %w", req.Keep, errdefs.ErrInvalidArgument)
	}
	rules, err := mask.Parse([]byte(req.Rules))
	if err != nil {
		return nil, err
	}
	unlock := s.locks.lock(templateLock(req.Name))
	defer unlock()
	ctx, cancel := detach(ctx, buildTimeout)
	defer cancel()

	if _, err := s.meta.GetTemplate(ctx, req.Name); err == nil {
		return nil, fmt.Errorf("template %q exists; refresh it (strata template refresh %s) or delete it first: %w", req.Name, req.Name, errdefs.ErrAlreadyExists)
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	if _, err := s.readyVolume(ctx, req.Source); err != nil {
		return nil, fmt.Errorf("template source: %w", err)
	}
	secret, err := s.saltSecret(ctx, rules)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	tpl, err := s.meta.CreateTemplate(ctx, meta.Template{
		Name: req.Name, Source: req.Source, Rules: req.Rules, Keep: int(req.Keep), Created: now,
		Building: 1, BuildStarted: now, LastAttempt: now,
	})
	if err != nil {
		return nil, err
	}
	tpl, err = s.build(ctx, tpl, rules, req.Rules, secret)
	if err != nil {
		// A template without a version is no use: the error says why.
		if cur, gerr := s.meta.GetTemplate(ctx, req.Name); gerr == nil && len(cur.Versions) == 0 {
			if derr := s.meta.DeleteTemplate(ctx, cur); derr != nil {
				s.log.Warn("removing a template whose first version failed", "template", req.Name, "err", derr)
			}
		}
		return nil, err
	}
	return s.templateView(ctx, tpl, nil, nil)
}

// RefreshTemplate makes the next version of a template from its source's
// current data, then drops the versions beyond keep that no clone uses.
func (s *Server) RefreshTemplate(ctx context.Context, req *pb.RefreshTemplateRequest) (*pb.Template, error) {
	if err := validateTemplateName(req.Name); err != nil {
		return nil, err
	}
	if req.Keep != nil && *req.Keep < 0 {
		return nil, fmt.Errorf("keep %d: want 0 (all versions) or more: %w", *req.Keep, errdefs.ErrInvalidArgument)
	}
	unlock := s.locks.lock(templateLock(req.Name))
	defer unlock()
	ctx, cancel := detach(ctx, buildTimeout)
	defer cancel()

	tpl, err := s.meta.GetTemplate(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	text := tpl.Rules
	if req.Rules != "" {
		text = req.Rules
	}
	rules, err := mask.Parse([]byte(text))
	if err != nil {
		return nil, err
	}
	if _, err := s.readyVolume(ctx, tpl.Source); err != nil {
		return nil, fmt.Errorf("template source: %w", err)
	}
	secret, err := s.saltSecret(ctx, rules)
	if err != nil {
		return nil, err
	}
	n := 1
	if v, ok := tpl.Latest(); ok {
		n = v.Number + 1
	}
	now := time.Now().UTC()
	tpl.Building, tpl.BuildStarted, tpl.LastAttempt = n, now, now
	if req.Keep != nil {
		tpl.Keep = int(*req.Keep)
	}
	if tpl, err = s.meta.UpdateTemplate(ctx, tpl); err != nil {
		return nil, err
	}
	if tpl, err = s.build(ctx, tpl, rules, text, secret); err != nil {
		return nil, err
	}
	tpl = s.prune(ctx, tpl)
	return s.templateView(ctx, tpl, nil, nil)
}

// saltSecret returns the value of the rules' salt secret.
func (s *Server) saltSecret(ctx context.Context, rules *mask.Rules) ([]byte, error) {
	sec, err := s.meta.GetSecret(ctx, rules.SaltSecret)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("the rules' salt secret %q is not set: set it first (strata secret set %s): %w", rules.SaltSecret, rules.SaltSecret, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, err
	}
	if len(sec.Value) == 0 {
		return nil, fmt.Errorf("the rules' salt secret %q is empty: %w", rules.SaltSecret, errdefs.ErrFailedPrecondition)
	}
	return sec.Value, nil
}

// buildLog opens the log of an attempt at version n of template t.
func (s *Server) buildLog(t string, n int) (*os.File, error) {
	dir := filepath.Join(s.templateDir, "logs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	base := fmt.Sprintf("%s-v%d-%s", t, n, time.Now().UTC().Format("20060102-150405"))
	for i := 1; ; i++ {
		name := base + ".log"
		if i > 1 {
			name = fmt.Sprintf("%s-%d.log", base, i)
		}
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_EXCL, 0o600)
		if !errors.Is(err, os.ErrExist) {
			return f, err
		}
	}
}

// build makes version tpl.Building of the template (recorded before the
// call): snapshot the source, make the working clone from it, mount it,
// mask it (mask.Run), unmount it and seal it with a snapshot, then record
// the version. A failure at any step unmounts and deletes the working
// clone and the source's snapshot, keeps the log, and records why; nothing
// is published.
func (s *Server) build(ctx context.Context, tpl meta.Template, rules *mask.Rules, rulesText string, secret []byte) (meta.Template, error) {
	ctx = system(ctx)
	n := tpl.Building
	vol := versionVolume(tpl.Name, n)
	start := time.Now()
	logf, err := s.buildLog(tpl.Name, n)
	if err != nil {
		return s.buildFailed(ctx, tpl, "open the build log", err, "")
	}
	defer logf.Close()
	note := func(format string, args ...any) {
		fmt.Fprintf(logf, "%s strata: %s\n", time.Now().UTC().Format("2006-01-02 15:04:05.000 UTC"), fmt.Sprintf(format, args...))
	}
	note("making version %d of template %s from volume %s", n, tpl.Name, tpl.Source)

	var work, target string
	mounted := false
	fail := func(step string, err error) (meta.Template, error) {
		note("failed: %s: %v", step, err)
		if mounted {
			if _, uerr := s.agent.Unmount(target); uerr != nil {
				note("unmount %s: %v", target, uerr)
				s.log.Error("unmounting the working clone of a failed template version", "volume", vol, "err", uerr)
			} else {
				mounted = false
			}
		}
		if work != "" && !mounted {
			os.RemoveAll(work)
		}
		s.removeWorkingClone(ctx, tpl, n, note)
		note("the working clone was removed; nothing was published")
		return s.buildFailed(ctx, tpl, step, err, logf.Name())
	}

	if err := s.versionNamesFree(ctx, tpl.Source, vol); err != nil {
		note("failed: %v", err)
		return s.buildFailed(ctx, tpl, "take the version's names", err, logf.Name())
	}
	s.syncMounts(tpl.Source, note)
	if _, err := s.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: tpl.Source, Name: vol}); err != nil {
		return fail("snapshot "+tpl.Source, err)
	}
	zero := int64(0)
	labels := map[string]string{LabelTemplate: tpl.Name, LabelTemplateVersion: strconv.Itoa(n)}
	// No QoS limit on the working clone (not the clone defaults): masking
	// rewrites whole tables.
	if _, err := s.CloneVolume(ctx, &pb.CloneVolumeRequest{Source: tpl.Source + "@" + vol, Name: vol, Labels: labels,
		Qos: &pb.QosLimits{MaxReadIops: &zero, MaxWriteIops: &zero, MaxReadBytesPerSecond: &zero, MaxWriteBytesPerSecond: &zero}}); err != nil {
		return fail("make the working clone", err)
	}
	// The clone holds the snapshot's layers; the source keeps no trace.
	if _, err := s.DeleteSnapshot(ctx, &pb.DeleteSnapshotRequest{Volume: tpl.Source, Name: vol}); err != nil {
		note("delete snapshot %s@%s: %v", tpl.Source, vol, err)
	}
	note("working clone %s made from %s", vol, tpl.Source)

	// The database's user must be able to reach the data directory and
	// the socket: a directory of its own under the system's temporary
	// directory (the node's data directory is private), traversable.
	work, err = os.MkdirTemp("", "strata-tpl-")
	if err != nil {
		return fail("make a work directory", err)
	}
	target = filepath.Join(work, "fs")
	for _, d := range []string{work, target, filepath.Join(work, "w")} {
		err := os.MkdirAll(d, 0o711)
		if err == nil {
			err = os.Chmod(d, 0o711)
		}
		if err != nil {
			return fail("make a work directory", err)
		}
	}
	m, err := s.agent.Mount(ctx, vol, agent.MountOptions{Target: target})
	if err != nil {
		return fail("mount the working clone", err)
	}
	mounted = true
	if m.Formatted {
		return fail("mount the working clone", fmt.Errorf("volume %s has no filesystem: template sources must hold the database's filesystem (strata volume mount makes one): %w", tpl.Source, errdefs.ErrFailedPrecondition))
	}
	note("working clone mounted at %s (%s)", m.Target, m.FSType)

	rep, err := mask.Run(ctx, mask.Job{Rules: rules, Secret: secret, Root: m.Target, WorkDir: filepath.Join(work, "w"), Log: logf, Trim: true})
	if err != nil {
		var se *mask.StepError
		step := "mask"
		if errors.As(err, &se) {
			step, err = se.Step, se.Err
		}
		return fail(step, err)
	}
	if _, err := s.agent.Unmount(m.Target); err != nil {
		return fail("unmount the working clone", err)
	}
	mounted = false
	os.RemoveAll(work)
	work = ""
	sn, err := s.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Volume: vol, Name: templateSnapshot})
	if err != nil {
		return fail("seal the version", err)
	}

	ver := meta.TemplateVersion{
		Number: n, Volume: vol, Snapshot: templateSnapshot, Created: time.Now().UTC(), Size: sn.SizeBytes,
		Server: rep.Server, Database: rep.Database, Sampled: rep.Sampled,
		BuildSeconds: time.Since(start).Seconds(), Log: logf.Name(),
	}
	for _, t := range rep.Tables {
		ver.Tables = append(ver.Tables, meta.MaskedTable{Name: t.Name, Rows: t.Rows, Columns: t.Columns})
	}
	tpl, err = s.updateTemplate(ctx, tpl.Name, func(t *meta.Template) {
		t.Versions = append(t.Versions, ver)
		t.Building, t.BuildStarted = 0, time.Time{}
		t.Rules = rulesText
		t.LastError, t.LastLog = "", ""
	})
	if err != nil {
		return fail("record the version", err)
	}
	note("published version %d of template %s (%s@%s) in %s", n, tpl.Name, vol, templateSnapshot, time.Since(start).Round(time.Millisecond))
	s.log.Info("template version published", "template", tpl.Name, "version", n, "seconds", ver.BuildSeconds)
	return tpl, nil
}

// heldVersion is the template version a volume holds.
type heldVersion struct {
	template string
	meta.TemplateVersion
	// building: the version is being made, and the volume is its working
	// clone.
	building bool
}

// templateVersionOf says which template version volume holds: a published
// one (clones are made from its sealed snapshot) or the one being made
// (its working clone). ok is false for every other volume, clones of
// versions included. The templates' records decide, not the volume's name
// or labels (clones have the labels too).
func (s *Server) templateVersionOf(ctx context.Context, volume string) (h heldVersion, ok bool, err error) {
	tpls, err := s.meta.ListTemplates(ctx)
	if err != nil {
		return h, false, err
	}
	for _, t := range tpls {
		for _, v := range t.Versions {
			if v.Volume == volume {
				return heldVersion{template: t.Name, TemplateVersion: v}, true, nil
			}
		}
		if t.Building != 0 && versionVolume(t.Name, t.Building) == volume {
			v := meta.TemplateVersion{Number: t.Building, Volume: volume, Snapshot: templateSnapshot}
			return heldVersion{template: t.Name, TemplateVersion: v, building: true}, true, nil
		}
	}
	return h, false, nil
}

// refuseTemplateVersion refuses to do (delete, revert, resize) volume, or
// to delete its snapshot when snapshot is set, when the volume holds a
// template version (templateVersionOf): a version changes only through its
// template, or its clones and the template's record would no longer match
// the data. The node's own work (system) passes: it is what prunes and
// deletes versions.
func (s *Server) refuseTemplateVersion(ctx context.Context, volume, snapshot, do string) error {
	if isSystem(ctx) {
		return nil
	}
	h, ok, err := s.templateVersionOf(ctx, volume)
	if err != nil || !ok {
		return err
	}
	what := "volume " + volume
	if snapshot != "" {
		if snapshot != h.Snapshot {
			return nil
		}
		what = "snapshot " + volume + "@" + snapshot
	}
	held := fmt.Sprintf("version %d, which clones are made from (%s@%s)", h.Number, h.Volume, h.Snapshot)
	if h.building {
		held = fmt.Sprintf("the working clone of version %d, being made; a failed build removes it", h.Number)
	}
	return fmt.Errorf("cannot %s %s: it belongs to template %s (%s); drop old versions with strata template refresh %s --keep N, or the template with strata template delete %s: %w",
		do, what, h.template, held, h.template, h.template, errdefs.ErrFailedPrecondition)
}

// versionNamesFree checks that nothing has the names a version's build
// gives its working clone (vol) and the source's snapshot (source@vol): a
// failed build removes what has them (removeWorkingClone), which must be
// what the build made.
func (s *Server) versionNamesFree(ctx context.Context, source, vol string) error {
	taken := func(what string) error {
		return fmt.Errorf("%s exists, and making the version needs the name: rename or delete it: %w", what, errdefs.ErrFailedPrecondition)
	}
	if _, err := s.meta.GetVolume(ctx, vol); err == nil {
		return taken(fmt.Sprintf("a volume named %s", vol))
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	if _, err := s.meta.GetClone(ctx, vol); err == nil {
		return taken(fmt.Sprintf("a clone named %s", vol))
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	if _, err := s.meta.GetSnapshot(ctx, source, vol); err == nil {
		return taken(fmt.Sprintf("snapshot %s@%s", source, vol))
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	return nil
}

// syncMounts writes back what the filesystems mounted from volume on this
// node hold in memory, so that the snapshot has it (a database fsyncs
// what it commits anyway; this covers the rest).
func (s *Server) syncMounts(volume string, note func(string, ...any)) {
	st, err := s.agent.Status(volume)
	if err != nil {
		return
	}
	for _, m := range st.Mounts {
		f, err := os.Open(m)
		if err == nil {
			err = unix.Syncfs(int(f.Fd()))
			f.Close()
		}
		if err != nil {
			note("sync the filesystem of %s at %s: %v", volume, m, err)
		}
	}
}

// removeWorkingClone deletes the working clone of version n and the
// source's snapshot it was made from, when they exist.
func (s *Server) removeWorkingClone(ctx context.Context, tpl meta.Template, n int, note func(string, ...any)) {
	vol := versionVolume(tpl.Name, n)
	if _, err := s.meta.GetVolume(ctx, vol); err == nil {
		if _, err := s.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: vol}); err != nil {
			note("delete the working clone %s: %v", vol, err)
			s.log.Error("deleting the working clone of a failed template version", "volume", vol, "err", err)
		}
	}
	if _, err := s.meta.GetSnapshot(ctx, tpl.Source, vol); err == nil {
		if _, err := s.DeleteSnapshot(ctx, &pb.DeleteSnapshotRequest{Volume: tpl.Source, Name: vol}); err != nil {
			note("delete snapshot %s@%s: %v", tpl.Source, vol, err)
		}
	}
}

// buildFailed records why version tpl.Building failed and returns the
// error the caller gets: what failed, then why, keeping the error's kind
// (a failure with none is FailedPrecondition: the data could not be masked).
func (s *Server) buildFailed(ctx context.Context, tpl meta.Template, step string, err error, logPath string) (meta.Template, error) {
	n := tpl.Building
	where := "the working clone was removed"
	if logPath != "" {
		where += "; server log: " + logPath
	}
	msg := fmt.Sprintf("template %s version %d was not published (%s): %s", tpl.Name, n, where, step)
	if errdefs.GRPCCode(err) == codes.Internal {
		err = fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
	}
	full := fmt.Errorf("%s: %w", msg, err)
	if cur, uerr := s.updateTemplate(ctx, tpl.Name, func(t *meta.Template) {
		t.Building, t.BuildStarted = 0, time.Time{}
		t.LastError = step + ": " + err.Error()
		t.LastLog = logPath
	}); uerr == nil {
		tpl = cur
	} else {
		s.log.Warn("recording a failed template version", "template", tpl.Name, "err", uerr)
	}
	s.log.Warn("template version not published", "template", tpl.Name, "version", n, "step", step, "err", err, "log", logPath)
	return tpl, full
}

// updateTemplate applies fn to the template's record, reading it again
// when it changed concurrently.
func (s *Server) updateTemplate(ctx context.Context, name string, fn func(*meta.Template)) (meta.Template, error) {
	for {
		t, err := s.meta.GetTemplate(ctx, name)
		if err != nil {
			return t, err
		}
		fn(&t)
		t, err = s.meta.UpdateTemplate(ctx, t)
		if !errors.Is(err, meta.ErrConflict) {
			return t, err
		}
	}
}

// prune drops the oldest versions beyond tpl.Keep that no clone uses; a
// version clones use stays until a later refresh finds it unused.
func (s *Server) prune(ctx context.Context, tpl meta.Template) meta.Template {
	if tpl.Keep <= 0 || len(tpl.Versions) <= tpl.Keep {
		return tpl
	}
	used, err := s.clonesByVersion(ctx, tpl.Name)
	if err != nil {
		s.log.Warn("listing clones to prune template versions", "template", tpl.Name, "err", err)
		return tpl
	}
	ctx = system(ctx)
	var drop []int
	for _, v := range tpl.Versions[:len(tpl.Versions)-tpl.Keep] {
		if used[v.Number] > 0 {
			continue
		}
		if _, err := s.DeleteVolume(ctx, &pb.DeleteVolumeRequest{Name: v.Volume}); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			s.log.Warn("dropping a template version", "template", tpl.Name, "version", v.Number, "err", err)
			continue
		}
		drop = append(drop, v.Number)
	}
	if len(drop) == 0 {
		return tpl
	}
	cur, err := s.updateTemplate(ctx, tpl.Name, func(t *meta.Template) {
		t.Versions = slices.DeleteFunc(t.Versions, func(v meta.TemplateVersion) bool { return slices.Contains(drop, v.Number) })
	})
	if err != nil {
		s.log.Warn("recording dropped template versions", "template", tpl.Name, "err", err)
		return tpl
	}
	return cur
}

// clonesByVersion counts the clones of each version of template t whose
// volume exists.
func (s *Server) clonesByVersion(ctx context.Context, t string) (map[int]int, error) {
	clones, err := s.liveClones(ctx)
	if err != nil {
		return nil, err
	}
	n := map[int]int{}
	for _, c := range clones {
		if c.rec.Template == t {
			n[c.rec.Version]++
		}
	}
	return n, nil
}

// ListTemplates lists the templates the caller may see (a developer: those
// granted to its tenant).
func (s *Server) ListTemplates(ctx context.Context, req *pb.ListTemplatesRequest) (*pb.ListTemplatesResponse, error) {
	visible, err := s.templateFilter(ctx)
	if err != nil {
		return nil, err
	}
	tpls, err := s.meta.ListTemplates(ctx)
	if err != nil {
		return nil, err
	}
	clones, err := s.liveClones(ctx)
	if err != nil {
		return nil, err
	}
	grants, err := s.meta.ListGrants(ctx, "")
	if err != nil {
		return nil, err
	}
	resp := &pb.ListTemplatesResponse{Templates: []*pb.Template{}}
	for _, t := range tpls {
		if !visible(t.Name) {
			continue
		}
		v, err := s.templateView(ctx, t, clones, grants)
		if err != nil {
			return nil, err
		}
		resp.Templates = append(resp.Templates, v)
	}
	return resp, nil
}

// GetTemplate describes one template.
func (s *Server) GetTemplate(ctx context.Context, req *pb.GetTemplateRequest) (*pb.Template, error) {
	if err := validateTemplateName(req.Name); err != nil {
		return nil, err
	}
	if err := s.authorizeTemplate(ctx, req.Name, actRead); err != nil {
		return nil, err
	}
	return s.describeTemplate(ctx, req.Name)
}

// describeTemplate describes template name as it is now.
func (s *Server) describeTemplate(ctx context.Context, name string) (*pb.Template, error) {
	t, err := s.meta.GetTemplate(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.templateView(ctx, t, nil, nil)
}

// templateView describes a template to the caller; clones are the live
// clones and grants the grants (of this template or of every one), each
// listed when nil.
func (s *Server) templateView(ctx context.Context, t meta.Template, clones []liveClone, grants []meta.Grant) (*pb.Template, error) {
	var err error
	if clones == nil {
		if clones, err = s.liveClones(ctx); err != nil {
			return nil, err
		}
	}
	if grants == nil {
		if grants, err = s.meta.ListGrants(ctx, t.Name); err != nil {
			return nil, err
		}
	}
	count := map[int]int{}
	for _, c := range clones {
		if c.rec.Template == t.Name {
			count[c.rec.Version]++
		}
	}
	v := &pb.Template{
		Name: t.Name, Source: t.Source, Rules: t.Rules, Keep: int32(t.Keep), CreatedAt: timestamppb.New(t.Created),
		Versions: []*pb.TemplateVersion{}, Building: int32(t.Building), LastError: t.LastError, LastLog: t.LastLog,
		Grants: grantViews(CallerFrom(ctx), t.Name, grants),
	}
	if !t.LastAttempt.IsZero() {
		v.LastAttemptAt = timestamppb.New(t.LastAttempt)
	}
	for _, ver := range t.Versions {
		pv := &pb.TemplateVersion{
			Number: int32(ver.Number), Volume: ver.Volume, Snapshot: ver.Snapshot, CreatedAt: timestamppb.New(ver.Created),
			SizeBytes: ver.Size, Server: ver.Server, Database: ver.Database, SampledValues: int32(ver.Sampled),
			BuildSeconds: ver.BuildSeconds, Clones: int32(count[ver.Number]), Log: ver.Log,
		}
		for _, mt := range ver.Tables {
			pv.Tables = append(pv.Tables, &pb.MaskedTable{Name: mt.Name, Rows: mt.Rows, MaskedColumns: int32(mt.Columns)})
		}
		v.Versions = append(v.Versions, pv)
	}
	return v, nil
}

// DeleteTemplate removes a template, its versions' volumes, its build logs
// and its grants. Refused while clones of it exist, unless req.Force: the
// clones keep their data (their layers are shared) but cannot be reset.
func (s *Server) DeleteTemplate(ctx context.Context, req *pb.DeleteTemplateRequest) (*pb.DeleteTemplateResponse, error) {
	if err := validateTemplateName(req.Name); err != nil {
		return nil, err
	}
	unlock := s.locks.lock(templateLock(req.Name))
	defer unlock()
	ctx, cancel := detach(ctx, opTimeout)
	defer cancel()

	tpl, err := s.meta.GetTemplate(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	clones, err := s.liveClones(ctx)
	if err != nil {
		return nil, err
	}
	var orphans []string
	for _, c := range clones {
		if c.rec.Template == tpl.Name {
			orphans = append(orphans, c.rec.Name)
		}
	}
	if len(orphans) > 0 && !req.Force {
		return nil, fmt.Errorf("template %s has %d clone(s) (%s): delete them first, or delete with --force (they keep working but can no longer be reset): %w",
			tpl.Name, len(orphans), listSome(orphans, 5), errdefs.ErrFailedPrecondition)
	}
	sctx := system(ctx)
	for _, v := range tpl.Versions {
		if _, err := s.DeleteVolume(sctx, &pb.DeleteVolumeRequest{Name: v.Volume}); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("delete version %d of template %s: %w", v.Number, tpl.Name, err)
		}
	}
	if logs, err := filepath.Glob(filepath.Join(s.templateDir, "logs", tpl.Name+"-v*.log")); err == nil {
		for _, l := range logs {
			os.Remove(l)
		}
	}
	if _, err := s.updateTemplate(ctx, tpl.Name, func(t *meta.Template) { t.Versions = nil }); err != nil {
		return nil, err
	}
	// Its grants go with the record (meta.DeleteTemplate).
	if cur, err := s.meta.GetTemplate(ctx, tpl.Name); err == nil {
		if err := s.meta.DeleteTemplate(ctx, cur); err != nil {
			return nil, err
		}
	}
	return &pb.DeleteTemplateResponse{OrphanedClones: orphans}, nil
}

func listSome(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:n], ", ") + fmt.Sprintf(" and %d more", len(names)-n)
}

// reconcileTemplates finishes what a crash interrupted: the working clone
// and source snapshot of a version being built are removed (a template
// without a version goes too), and clone records whose volume is gone are
// dropped.
func (s *Server) reconcileTemplates(ctx context.Context) error {
	ctx = system(ctx)
	tpls, err := s.meta.ListTemplates(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tpls {
		if t.Building == 0 {
			continue
		}
		if _, published := t.Version(t.Building); !published {
			s.log.Info("removing the working clone of a template version whose making was interrupted", "template", t.Name, "version", t.Building)
			s.removeWorkingClone(ctx, t, t.Building, func(format string, args ...any) {
				s.log.Warn(fmt.Sprintf(format, args...), "template", t.Name)
			})
		}
		if len(t.Versions) == 0 {
			if err := s.meta.DeleteTemplate(ctx, t); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		n := t.Building
		if _, err := s.updateTemplate(ctx, t.Name, func(t *meta.Template) {
			t.Building, t.BuildStarted = 0, time.Time{}
			t.LastError = fmt.Sprintf("version %d was interrupted by a stop of the node; nothing was published", n)
		}); err != nil {
			errs = append(errs, err)
		}
	}
	clones, err := s.meta.ListClones(ctx)
	if err != nil {
		return err
	}
	for _, c := range clones {
		if _, err := s.meta.GetVolume(ctx, c.Name); errors.Is(err, errdefs.ErrNotFound) {
			s.log.Info("removing the record of a clone whose volume is gone", "clone", c.Name)
			if err := s.meta.DeleteClone(ctx, c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

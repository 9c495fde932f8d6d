package server

import (
	"cmp"
	"context"
	"fmt"
	"strings"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// AdminUser is the user name of the admin token strata up makes, which has
// no user record. It cannot be taken by a user.
const AdminUser = "admin"

// Caller is who makes a call: the user its token belongs to, that user's
// role (meta.RoleAdmin, RoleDeveloper, RoleViewer) and, for a developer,
// its tenant.
type Caller struct{ User, Role, Tenant string }

type callerKey struct{}

func withCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

type systemKey struct{}

// system returns ctx acting as the node itself (an admin): for work the
// server does on its own behalf (building versions, expiring clones,
// reconciling), which the caller was authorized for, or which has no caller.
// The node itself also changes what callers may not (see
// refuseTemplateVersion).
func system(ctx context.Context) context.Context {
	return context.WithValue(withCaller(ctx, Caller{User: "strata", Role: meta.RoleAdmin}), systemKey{}, true)
}

// isSystem says whether ctx is the node's own work (system), which no
// call can be: the auth interceptor builds every call's context.
func isSystem(ctx context.Context) bool {
	v, _ := ctx.Value(systemKey{}).(bool)
	return v
}

// CallerFrom returns the caller of the call ctx belongs to, which the auth
// interceptor sets for every call. Without one (work the server does on
// its own) it is the zero Caller, whom no check allows anything.
func CallerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// String names the caller in messages: "developer alice of tenant team-a".
func (c Caller) String() string {
	if c.Role == "" {
		return "an anonymous caller"
	}
	s := c.Role + " " + c.User
	if c.Role == meta.RoleAdmin && c.User == AdminUser {
		s = "admin"
	}
	if c.Tenant != "" {
		s += " of tenant " + c.Tenant
	}
	return s
}

// access says who may call a method besides admins, who may call every
// method that has a rule. Developers and viewers then go through the
// handler's checks of each object (authorizeVolume): a developer reaches
// only its tenant's volumes, a viewer only reads.
type access struct {
	viewer, developer bool
	// why a developer may not call it, when that is not obvious.
	why string
}

var (
	// adminOnly: changes that only an admin makes.
	adminOnly = access{}
	// readAll: reads of metadata; developers see their tenant's objects only.
	readAll = access{viewer: true, developer: true}
	// tenantWrite: what a developer does to its tenant's volumes.
	tenantWrite = access{developer: true}
	// viewerRead: reads of what developers have no business with.
	viewerRead = access{viewer: true}
)

// methodAccess is the access rule of every API method, by full gRPC method
// name. A method without a rule is refused to everyone (deny by default),
// and TestEveryMethodHasAnAccessRule fails: a new RPC needs its line here.
var methodAccess = map[string]access{
	pb.VolumeService_CreateVolume_FullMethodName:         {why: "a tenant's volumes are made only as clones of the templates granted to it"},
	pb.VolumeService_ListVolumes_FullMethodName:          readAll,
	pb.VolumeService_GetVolume_FullMethodName:            readAll,
	pb.VolumeService_DeleteVolume_FullMethodName:         tenantWrite,
	pb.VolumeService_ResizeVolume_FullMethodName:         tenantWrite,
	pb.VolumeService_CloneVolume_FullMethodName:          {why: "a tenant's volumes are made only as clones of the templates granted to it"},
	pb.VolumeService_RevertVolume_FullMethodName:         tenantWrite,
	pb.VolumeService_ExportVolume_FullMethodName:         tenantWrite,
	pb.VolumeService_MountVolume_FullMethodName:          tenantWrite,
	pb.VolumeService_UnmountVolume_FullMethodName:        tenantWrite,
	pb.VolumeService_MapVolume_FullMethodName:            tenantWrite,
	pb.VolumeService_UnmapVolume_FullMethodName:          tenantWrite,
	pb.VolumeService_UpdateVolume_FullMethodName:         {why: "QoS limits are set by admins"},
	pb.VolumeService_AttachVolume_FullMethodName:         tenantWrite,
	pb.VolumeService_UpdateVolumeReplicas_FullMethodName: {why: "the number of replicas is set by admins"},
	pb.VolumeService_CheckVolume_FullMethodName:          readAll,

	pb.SnapshotService_CreateSnapshot_FullMethodName: tenantWrite,
	pb.SnapshotService_ListSnapshots_FullMethodName:  readAll,
	pb.SnapshotService_DeleteSnapshot_FullMethodName: tenantWrite,

	pb.ClusterService_GetStatus_FullMethodName:    readAll,
	pb.ClusterService_SetSetting_FullMethodName:   adminOnly,
	pb.ClusterService_GetSettings_FullMethodName:  viewerRead,
	pb.ClusterService_GetJoinToken_FullMethodName: adminOnly,
	// JoinCluster is authenticated by the join token in its request, not
	// by an API token (see the auth interceptor); no role calls it.
	pb.ClusterService_JoinCluster_FullMethodName: adminOnly,

	pb.UserService_CreateUser_FullMethodName:      adminOnly,
	pb.UserService_ListUsers_FullMethodName:       viewerRead,
	pb.UserService_DeleteUser_FullMethodName:      adminOnly,
	pb.UserService_RotateUserToken_FullMethodName: adminOnly,
	pb.UserService_WhoAmI_FullMethodName:          readAll,

	pb.SecretService_SetSecret_FullMethodName:    adminOnly,
	pb.SecretService_ListSecrets_FullMethodName:  viewerRead,
	pb.SecretService_DeleteSecret_FullMethodName: adminOnly,

	// Developers see and clone only the templates granted to their tenant
	// (authorizeTemplate, templateFilter); clones are their tenant's volumes.
	pb.TemplateService_CreateTemplate_FullMethodName:  adminOnly,
	pb.TemplateService_RefreshTemplate_FullMethodName: adminOnly,
	pb.TemplateService_ListTemplates_FullMethodName:   readAll,
	pb.TemplateService_GetTemplate_FullMethodName:     readAll,
	pb.TemplateService_DeleteTemplate_FullMethodName:  adminOnly,
	pb.TemplateService_GrantTemplate_FullMethodName:   {why: "templates are granted by admins"},
	pb.TemplateService_RevokeTemplate_FullMethodName:  {why: "templates are granted by admins"},
	pb.CloneService_CreateClone_FullMethodName:        tenantWrite,
	pb.CloneService_ListClones_FullMethodName:         readAll,
	pb.CloneService_GetClone_FullMethodName:           readAll,
	pb.CloneService_ResetClone_FullMethodName:         tenantWrite,
	pb.CloneService_ExtendClone_FullMethodName:        tenantWrite,
	pb.CloneService_DeleteClone_FullMethodName:        tenantWrite,
}

// authorizeMethod checks the caller's role against the method's rule.
func authorizeMethod(c Caller, method string) error {
	a, ok := methodAccess[method]
	if !ok {
		return fmt.Errorf("%s has no access rule, so no one may call it: %w", method, errdefs.ErrPermissionDenied)
	}
	var why string
	switch c.Role {
	case meta.RoleAdmin:
		return nil
	case meta.RoleViewer:
		if a.viewer {
			return nil
		}
		why = "viewers have read-only access"
	case meta.RoleDeveloper:
		if a.developer {
			return nil
		}
		why = cmp.Or(a.why, "developers manage only their tenant's clones")
	default:
		return fmt.Errorf("%s: role %q is unknown to this server: %w", c, c.Role, errdefs.ErrPermissionDenied)
	}
	return fmt.Errorf("%s may not call %s: %s: %w", c, shortMethod(method), why, errdefs.ErrPermissionDenied)
}

// shortMethod turns "/strata.v1.VolumeService/CreateVolume" into
// "VolumeService.CreateVolume".
func shortMethod(m string) string {
	m = strings.TrimPrefix(m, "/")
	if i := strings.LastIndex(m, "/"); i >= 0 {
		svc := m[:i]
		if j := strings.LastIndex(svc, "."); j >= 0 {
			svc = svc[j+1:]
		}
		return svc + "." + m[i+1:]
	}
	return m
}

// What a caller does to a volume, as authorizeVolume's messages say it.
const (
	actRead           = "read"
	actDelete         = "delete"
	actResize         = "resize"
	actRevert         = "revert"
	actExport         = "export"
	actMount          = "mount"
	actUnmount        = "unmount"
	actMap            = "map"
	actUnmap          = "unmap"
	actUpdate         = "update"
	actSnapshot       = "snapshot"
	actClone          = "clone"
	actListSnapshots  = "list the snapshots of"
	actDeleteSnapshot = "delete a snapshot of"
	actAttach         = "attach"
	actCheck          = "check"
	actReplicas       = "change the replicas of"
)

// authorizeVolume checks that the caller may act on the volume rec: an
// admin on every volume, a viewer only to read, a developer only on its
// tenant's volumes (and their snapshots). A refusal is
// errdefs.ErrPermissionDenied, saying who was refused what and why; it
// says whether the volume belongs to no tenant, but never which other
// tenant it belongs to.
func (s *Server) authorizeVolume(ctx context.Context, rec meta.Volume, action string) error {
	c := CallerFrom(ctx)
	var why string
	switch c.Role {
	case meta.RoleAdmin:
		return nil
	case meta.RoleViewer:
		if action == actRead || action == actListSnapshots {
			return nil
		}
		why = "viewers have read-only access"
	case meta.RoleDeveloper:
		if mayReach(c, rec) {
			return nil
		}
		why = "it belongs to another tenant"
		if rec.Tenant == "" {
			why = "it belongs to no tenant"
		}
	default:
		why = fmt.Sprintf("role %q is unknown to this server", c.Role)
	}
	return fmt.Errorf("%s may not %s volume %q: %s: %w", c, action, rec.Name, why, errdefs.ErrPermissionDenied)
}

// mayReach says whether the caller may see volume rec at all: in lists,
// counts and reads.
func mayReach(c Caller, rec meta.Volume) bool {
	switch c.Role {
	case meta.RoleAdmin, meta.RoleViewer:
		return true
	case meta.RoleDeveloper:
		return c.Tenant != "" && rec.Tenant == c.Tenant
	}
	return false
}

// volumeFor returns the record of volume name if the caller may act on it
// here (see onThisNode). Admins skip nothing but the check.
func (s *Server) volumeFor(ctx context.Context, name, action string) (meta.Volume, error) {
	rec, err := s.meta.GetVolume(ctx, name)
	if err != nil {
		return rec, err
	}
	if err := s.authorizeVolume(ctx, rec, action); err != nil {
		return meta.Volume{}, err
	}
	if err := s.onThisNode(ctx, rec, action); err != nil {
		return meta.Volume{}, err
	}
	return rec, nil
}

// readyVolumeFor is readyVolume for a caller who acts on the volume: one
// who may not is refused before the volume's state is looked at.
func (s *Server) readyVolumeFor(ctx context.Context, name, action string) (meta.Volume, error) {
	rec, err := s.readyVolume(ctx, name)
	if rec.Name == "" {
		return rec, err
	}
	if aerr := s.authorizeVolume(ctx, rec, action); aerr != nil {
		return meta.Volume{}, aerr
	}
	if nerr := s.onThisNode(ctx, rec, action); nerr != nil {
		return meta.Volume{}, nerr
	}
	return rec, err
}

// onThisNode refuses an action on the data of a volume that lives on
// another node: a volume's chain and engine are on the node that made it,
// and only that node's API may act on them (acting here would change the
// records and not the data). Reads of the records, snapshot lists and QoS
// updates (records, applied by the volume's node) go anywhere.
func (s *Server) onThisNode(ctx context.Context, rec meta.Volume, action string) error {
	if rec.Node == s.node || rec.Node == "" {
		return nil
	}
	switch action {
	case actRead, actListSnapshots, actUpdate, actAttach:
		return nil
	}
	where := ""
	if n, err := s.meta.GetNode(ctx, rec.Node); err == nil && n.Addresses["api"] != "" {
		where = " (API " + n.Addresses["api"] + ")"
	}
	return fmt.Errorf("volume %q lives on node %s%s and only that node may %s it; this is node %s: %w",
		rec.Name, rec.Node, where, action, s.node, errdefs.ErrFailedPrecondition)
}

// authorizeTemplate checks that the caller may act on template name:
// admins on every template; viewers read every template; developers read
// and clone (actRead, actClone) only the templates granted to their tenant
// (meta.Grant), and do nothing else with templates. A refusal is
// errdefs.ErrPermissionDenied.
func (s *Server) authorizeTemplate(ctx context.Context, name, action string) error {
	c := CallerFrom(ctx)
	var why string
	switch c.Role {
	case meta.RoleAdmin:
		return nil
	case meta.RoleViewer:
		if action == actRead {
			return nil
		}
		why = "viewers have read-only access"
	case meta.RoleDeveloper:
		if action != actRead && action != actClone {
			why = "developers only read and clone templates"
			break
		}
		ok, err := s.meta.HasGrant(ctx, name, c.Tenant)
		if err != nil {
			return err
		}
		if ok && c.Tenant != "" {
			return nil
		}
		why = "it is not granted to tenant " + cmp.Or(c.Tenant, `""`) + " (strata template grant)"
	default:
		why = fmt.Sprintf("role %q is unknown to this server", c.Role)
	}
	return fmt.Errorf("%s may not %s template %q: %s: %w", c, action, name, why, errdefs.ErrPermissionDenied)
}

// templateFilter returns the test of which templates the caller may see,
// for lists: every template for admins and viewers, the granted ones for a
// developer.
func (s *Server) templateFilter(ctx context.Context) (func(template string) bool, error) {
	c := CallerFrom(ctx)
	switch c.Role {
	case meta.RoleAdmin, meta.RoleViewer:
		return func(string) bool { return true }, nil
	case meta.RoleDeveloper:
		grants, err := s.meta.ListGrants(ctx, "")
		if err != nil {
			return nil, err
		}
		granted := map[string]bool{}
		for _, g := range grants {
			if g.Tenant == c.Tenant && c.Tenant != "" {
				granted[g.Template] = true
			}
		}
		return func(t string) bool { return granted[t] }, nil
	}
	return func(string) bool { return false }, nil
}

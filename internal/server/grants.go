package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/meta"
)

// GrantTemplate lets the developers of tenant req.Tenant see and clone
// template req.Name; granting again changes nothing. It takes no template
// lock (a build holds it for hours): the grant is made in one etcd
// transaction with a check that the template exists (meta.PutGrant), and
// deleting a template removes its grants in one transaction too, so a
// grant cannot outlive a concurrent delete.
func (s *Server) GrantTemplate(ctx context.Context, req *pb.GrantTemplateRequest) (*pb.Template, error) {
	if err := validateGrant(req.Name, req.Tenant); err != nil {
		return nil, err
	}
	g, err := s.meta.PutGrant(ctx, req.Name, req.Tenant)
	if err != nil {
		return nil, err
	}
	s.log.Info("template granted", "template", req.Name, "tenant", req.Tenant, "by", CallerFrom(ctx).User, "since", g.Created)
	return s.describeTemplate(ctx, req.Name)
}

// RevokeTemplate takes back the grant of template req.Name to tenant
// req.Tenant. The tenant's clones of the template stay (they are its
// volumes), but can no longer be reset. A grant that does not exist is
// NotFound, naming the grants there are: a mistyped tenant must not pass
// for a revoked one.
func (s *Server) RevokeTemplate(ctx context.Context, req *pb.RevokeTemplateRequest) (*pb.Template, error) {
	if err := validateGrant(req.Name, req.Tenant); err != nil {
		return nil, err
	}
	if _, err := s.meta.GetTemplate(ctx, req.Name); err != nil {
		return nil, err
	}
	err := s.meta.DeleteGrant(ctx, req.Name, req.Tenant)
	if errors.Is(err, errdefs.ErrNotFound) {
		grants, lerr := s.meta.ListGrants(ctx, req.Name)
		if lerr != nil {
			return nil, lerr
		}
		return nil, fmt.Errorf("template %s is not granted to tenant %s (%s): %w", req.Name, req.Tenant, grantedText(grants), errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	s.log.Info("template grant revoked", "template", req.Name, "tenant", req.Tenant, "by", CallerFrom(ctx).User)
	return s.describeTemplate(ctx, req.Name)
}

func validateGrant(template, tenant string) error {
	if err := validateTemplateName(template); err != nil {
		return err
	}
	return errdefs.ValidateName("tenant", tenant)
}

// grantedText says which tenants grants name, for messages.
func grantedText(grants []meta.Grant) string {
	if len(grants) == 0 {
		return "it is granted to no tenant"
	}
	var names []string
	for _, g := range grants {
		names = append(names, g.Tenant)
	}
	return "it is granted to " + strings.Join(names, ", ")
}

// grantViews describes the grants of template t among grants (of t or of
// every template) that the caller may see: all for admins and viewers, its
// own tenant's for a developer (which other tenants have a template is
// theirs to know).
func grantViews(c Caller, t string, grants []meta.Grant) []*pb.TemplateGrant {
	out := []*pb.TemplateGrant{}
	for _, g := range grants {
		if g.Template != t {
			continue
		}
		if c.Role != meta.RoleAdmin && c.Role != meta.RoleViewer && (c.Tenant == "" || g.Tenant != c.Tenant) {
			continue
		}
		out = append(out, &pb.TemplateGrant{Tenant: g.Tenant, GrantedAt: timestamppb.New(g.Created)})
	}
	return out
}

package meta

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Grant lets the developers of a tenant see a template and make clones of
// it. Templates themselves are recorded elsewhere; a grant names one by
// name, and outlives nothing: remove a template's grants with the template
// (DeleteTemplateGrants).
type Grant struct {
	Template string    `json:"template"`
	Tenant   string    `json:"tenant"`
	Created  time.Time `json:"created"`
	Rev      int64     `json:"-"`
}

func grantPrefix(template string) string { return prefix + "grants/" + template + "/" }
func grantKey(template, tenant string) string {
	return grantPrefix(template) + tenant
}

// PutGrant grants template to tenant. Granting again changes nothing and
// returns the grant as it was first made.
func (s *Store) PutGrant(ctx context.Context, template, tenant string) (Grant, error) {
	g := Grant{Template: template, Tenant: tenant, Created: time.Now().UTC()}
	rev, err := s.put(ctx, grantKey(template, tenant), g, 0)
	if errors.Is(err, errdefs.ErrAlreadyExists) {
		return s.GetGrant(ctx, template, tenant)
	}
	if err != nil {
		return Grant{}, fmt.Errorf("grant of template %q to tenant %q: %w", template, tenant, err)
	}
	g.Rev = rev
	return g, nil
}

// GetGrant returns the grant of template to tenant; errdefs.ErrNotFound
// when there is none.
func (s *Store) GetGrant(ctx context.Context, template, tenant string) (Grant, error) {
	var g Grant
	rev, err := s.get(ctx, grantKey(template, tenant), &g)
	if err != nil {
		return Grant{}, fmt.Errorf("grant of template %q to tenant %q: %w", template, tenant, err)
	}
	g.Rev = rev
	return g, nil
}

// HasGrant says whether template is granted to tenant.
func (s *Store) HasGrant(ctx context.Context, template, tenant string) (bool, error) {
	_, err := s.GetGrant(ctx, template, tenant)
	if errors.Is(err, errdefs.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ListGrants returns the grants of template, or every grant when template
// is empty, sorted by template then tenant.
func (s *Store) ListGrants(ctx context.Context, template string) ([]Grant, error) {
	p := prefix + "grants/"
	if template != "" {
		p = grantPrefix(template)
	}
	return list(ctx, s, p, func(g *Grant, rev int64) { g.Rev = rev })
}

// DeleteGrant revokes the grant of template to tenant;
// errdefs.ErrNotFound when there is none.
func (s *Store) DeleteGrant(ctx context.Context, template, tenant string) error {
	if err := s.del(ctx, grantKey(template, tenant), 0); err != nil {
		return fmt.Errorf("grant of template %q to tenant %q: %w", template, tenant, err)
	}
	return nil
}

// DeleteTemplateGrants revokes every grant of template (when it is deleted).
func (s *Store) DeleteTemplateGrants(ctx context.Context, template string) error {
	if _, err := s.cli.Delete(ctx, grantPrefix(template), clientv3.WithPrefix()); err != nil {
		return etcdErr(err)
	}
	return nil
}

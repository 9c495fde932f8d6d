package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Grant lets the developers of a tenant see a template and make clones of
// it. A grant names a template by name and exists only with it: PutGrant
// grants only an existing template, and DeleteTemplate removes the
// template's grants with it, in one transaction each, so that no grant
// outlives its template (and passes on to a later template of that name).
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

// PutGrant grants template to tenant: errdefs.ErrNotFound when the
// template does not exist. Granting again changes nothing and returns the
// grant as it was first made.
func (s *Store) PutGrant(ctx context.Context, template, tenant string) (Grant, error) {
	g := Grant{Template: template, Tenant: tenant, Created: time.Now().UTC()}
	data, err := json.Marshal(g)
	if err != nil {
		return Grant{}, err
	}
	tkey, gkey := templateKey(template), grantKey(template, tenant)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(tkey), ">", 0), clientv3.Compare(clientv3.CreateRevision(gkey), "=", 0)).
		Then(clientv3.OpPut(gkey, string(data))).
		Else(clientv3.OpGet(tkey, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return Grant{}, etcdErr(err)
	}
	if resp.Succeeded {
		g.Rev = resp.Header.Revision
		return g, nil
	}
	if resp.Responses[0].GetResponseRange().Count == 0 {
		return Grant{}, fmt.Errorf("template %q: %w", template, errdefs.ErrNotFound)
	}
	return s.GetGrant(ctx, template, tenant)
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

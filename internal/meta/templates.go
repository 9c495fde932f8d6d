package meta

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Template is a masked template: the rules that make its versions from a
// source volume, and the versions made so far.
type Template struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	// Rules is the rules file (YAML) the next version is masked with.
	Rules string `json:"rules"`
	// Keep is how many versions refreshes keep (0: all).
	Keep    int       `json:"keep,omitempty"`
	Created time.Time `json:"created"`
	// Versions are the published versions, oldest first.
	Versions []TemplateVersion `json:"versions,omitempty"`
	// Building is the number of the version being made, 0 when none: its
	// working clone and the source's snapshot are named after it, so that
	// startup reconciliation can remove them after a crash.
	Building     int       `json:"building,omitempty"`
	BuildStarted time.Time `json:"buildStarted,omitzero"`
	LastError    string    `json:"lastError,omitempty"`
	LastLog      string    `json:"lastLog,omitempty"`
	LastAttempt  time.Time `json:"lastAttempt,omitzero"`
	Rev          int64     `json:"-"`
}

// TemplateVersion is one published version: the sealed snapshot of a
// masked working clone.
type TemplateVersion struct {
	Number   int           `json:"number"`
	Volume   string        `json:"volume"`
	Snapshot string        `json:"snapshot"`
	Created  time.Time     `json:"created"`
	Size     int64         `json:"size"`
	Server   string        `json:"server,omitempty"`
	Database string        `json:"database,omitempty"`
	Tables   []MaskedTable `json:"tables,omitempty"`
	Sampled  int           `json:"sampled"`
	// BuildSeconds is how long making the version took, end to end.
	BuildSeconds float64 `json:"buildSeconds"`
	Log          string  `json:"log,omitempty"`
}

// MaskedTable is one table a version masked.
type MaskedTable struct {
	Name    string `json:"name"`
	Rows    int64  `json:"rows"`
	Columns int    `json:"columns"`
}

// Version returns version n of the template, and whether it exists.
func (t Template) Version(n int) (TemplateVersion, bool) {
	for _, v := range t.Versions {
		if v.Number == n {
			return v, true
		}
	}
	return TemplateVersion{}, false
}

// Latest returns the newest version, and whether there is one.
func (t Template) Latest() (TemplateVersion, bool) {
	if len(t.Versions) == 0 {
		return TemplateVersion{}, false
	}
	return t.Versions[len(t.Versions)-1], true
}

func templateKey(name string) string { return prefix + "templates/" + name }

// GetTemplate returns template name; errdefs.ErrNotFound when missing.
func (s *Store) GetTemplate(ctx context.Context, name string) (Template, error) {
	var t Template
	rev, err := s.get(ctx, templateKey(name), &t)
	if err != nil {
		return Template{}, fmt.Errorf("template %q: %w", name, err)
	}
	t.Rev = rev
	return t, nil
}

// ListTemplates returns every template, sorted by name.
func (s *Store) ListTemplates(ctx context.Context) ([]Template, error) {
	return list(ctx, s, prefix+"templates/", func(t *Template, rev int64) { t.Rev = rev })
}

// CreateTemplate writes a new template; errdefs.ErrAlreadyExists when one
// of that name exists.
func (s *Store) CreateTemplate(ctx context.Context, t Template) (Template, error) {
	rev, err := s.put(ctx, templateKey(t.Name), t, 0)
	if err != nil {
		return Template{}, fmt.Errorf("template %q: %w", t.Name, err)
	}
	t.Rev = rev
	return t, nil
}

// UpdateTemplate replaces the template if it is still at revision t.Rev
// (ErrConflict otherwise).
func (s *Store) UpdateTemplate(ctx context.Context, t Template) (Template, error) {
	if t.Rev == 0 {
		return Template{}, fmt.Errorf("meta: update of template %q without a revision: %w", t.Name, errdefs.ErrInvalidArgument)
	}
	rev, err := s.put(ctx, templateKey(t.Name), t, t.Rev)
	if err != nil {
		return Template{}, fmt.Errorf("template %q: %w", t.Name, err)
	}
	t.Rev = rev
	return t, nil
}

// DeleteTemplate removes the template if it is still at revision t.Rev
// (any revision when 0), and its grants with it (see Grant).
func (s *Store) DeleteTemplate(ctx context.Context, t Template) error {
	key := templateKey(t.Name)
	cmp := clientv3.Compare(clientv3.ModRevision(key), "=", t.Rev)
	if t.Rev == 0 {
		cmp = clientv3.Compare(clientv3.CreateRevision(key), ">", 0)
	}
	resp, err := s.cli.Txn(ctx).
		If(cmp).
		Then(clientv3.OpDelete(key), clientv3.OpDelete(grantPrefix(t.Name), clientv3.WithPrefix())).
		Else(clientv3.OpGet(key, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return fmt.Errorf("template %q: %w", t.Name, etcdErr(err))
	}
	if resp.Succeeded {
		return nil
	}
	if resp.Responses[0].GetResponseRange().Count == 0 {
		return fmt.Errorf("template %q: %w", t.Name, errdefs.ErrNotFound)
	}
	return fmt.Errorf("template %q: %w", t.Name, ErrConflict)
}

// Clone is a self-service clone: a volume of the same name made from a
// template version, which the clone controller deletes once expired.
type Clone struct {
	// Name is the clone's volume.
	Name     string    `json:"name"`
	Template string    `json:"template"`
	Version  int       `json:"version"`
	Tenant   string    `json:"tenant,omitempty"`
	Owner    string    `json:"owner,omitempty"`
	Created  time.Time `json:"created"`
	// Expires is when the TTL runs out; zero for none.
	Expires time.Time `json:"expires,omitzero"`
	// IdleExpiry deletes the clone after that long without I/O; 0 for never.
	IdleExpiry time.Duration `json:"idleExpiry,omitempty"`
	Protected  bool          `json:"protected,omitempty"`
	// Touched is the last reset or extension, which restarts the idle clock.
	Touched time.Time `json:"touched,omitzero"`
	Rev     int64     `json:"-"`
}

func cloneKey(name string) string { return prefix + "clones/" + name }

// GetClone returns clone name; errdefs.ErrNotFound when missing.
func (s *Store) GetClone(ctx context.Context, name string) (Clone, error) {
	var c Clone
	rev, err := s.get(ctx, cloneKey(name), &c)
	if err != nil {
		return Clone{}, fmt.Errorf("clone %q: %w", name, err)
	}
	c.Rev = rev
	return c, nil
}

// ListClones returns every clone, sorted by name.
func (s *Store) ListClones(ctx context.Context) ([]Clone, error) {
	return list(ctx, s, prefix+"clones/", func(c *Clone, rev int64) { c.Rev = rev })
}

// CreateClone writes a new clone record; errdefs.ErrAlreadyExists when one
// of that name exists.
func (s *Store) CreateClone(ctx context.Context, c Clone) (Clone, error) {
	rev, err := s.put(ctx, cloneKey(c.Name), c, 0)
	if err != nil {
		return Clone{}, fmt.Errorf("clone %q: %w", c.Name, err)
	}
	c.Rev = rev
	return c, nil
}

// UpdateClone replaces the clone record if it is still at revision c.Rev.
func (s *Store) UpdateClone(ctx context.Context, c Clone) (Clone, error) {
	if c.Rev == 0 {
		return Clone{}, fmt.Errorf("meta: update of clone %q without a revision: %w", c.Name, errdefs.ErrInvalidArgument)
	}
	rev, err := s.put(ctx, cloneKey(c.Name), c, c.Rev)
	if err != nil {
		return Clone{}, fmt.Errorf("clone %q: %w", c.Name, err)
	}
	c.Rev = rev
	return c, nil
}

// DeleteClone removes the clone record if it is still at revision c.Rev
// (any revision when 0).
func (s *Store) DeleteClone(ctx context.Context, c Clone) error {
	if err := s.del(ctx, cloneKey(c.Name), c.Rev); err != nil {
		return fmt.Errorf("clone %q: %w", c.Name, err)
	}
	return nil
}

package meta

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Secret is a named value that server-side code uses (the masking engine's
// keyed-hash salt) and that the API never returns. It is kept in etcd as
// is: protect etcd (and its backups) as you protect the secrets.
type Secret struct {
	Name    string    `json:"name"`
	Value   []byte    `json:"value"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Rev     int64     `json:"-"`
}

func secretKey(name string) string { return prefix + "secrets/" + name }

// PutSecret sets secret name to value, making it or replacing its value
// (Created stays, Updated is now). It returns the record without its value.
func (s *Store) PutSecret(ctx context.Context, name string, value []byte) (Secret, error) {
	for {
		old, err := s.GetSecret(ctx, name)
		now := time.Now().UTC()
		sec := Secret{Name: name, Value: value, Created: now, Updated: now}
		switch {
		case err == nil:
			sec.Created = old.Created
		case !errors.Is(err, errdefs.ErrNotFound):
			return Secret{}, err
		}
		rev, err := s.put(ctx, secretKey(name), sec, old.Rev)
		if errors.Is(err, ErrConflict) || errors.Is(err, errdefs.ErrAlreadyExists) {
			continue // set concurrently: the last writer wins
		}
		if err != nil {
			return Secret{}, fmt.Errorf("secret %q: %w", name, err)
		}
		sec.Rev, sec.Value = rev, nil
		return sec, nil
	}
}

// GetSecret returns secret name with its value; errdefs.ErrNotFound when
// it was never set. For server-side code only: the API never returns a
// secret's value.
func (s *Store) GetSecret(ctx context.Context, name string) (Secret, error) {
	var sec Secret
	rev, err := s.get(ctx, secretKey(name), &sec)
	if err != nil {
		return Secret{}, fmt.Errorf("secret %q: %w", name, err)
	}
	sec.Rev = rev
	return sec, nil
}

// ListSecrets returns every secret, sorted by name, without their values.
func (s *Store) ListSecrets(ctx context.Context) ([]Secret, error) {
	return list(ctx, s, prefix+"secrets/", func(sec *Secret, rev int64) { sec.Rev, sec.Value = rev, nil })
}

// DeleteSecret removes secret name; errdefs.ErrNotFound when missing.
func (s *Store) DeleteSecret(ctx context.Context, name string) error {
	if err := s.del(ctx, secretKey(name), 0); err != nil {
		return fmt.Errorf("secret %q: %w", name, err)
	}
	return nil
}

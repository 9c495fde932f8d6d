package meta

import (
	"context"
	"fmt"
	"time"
)

// Setting is one cluster-wide setting. The store keeps its value as text;
// the API server knows the keys and validates the values.
type Setting struct {
	Key     string    `json:"key"`
	Value   string    `json:"value"`
	Updated time.Time `json:"updated"`
	Rev     int64     `json:"-"`
}

func settingKey(key string) string { return prefix + "settings/" + key }

// PutSetting writes a setting unconditionally: the last writer wins.
func (s *Store) PutSetting(ctx context.Context, st Setting) (Setting, error) {
	rev, err := s.overwrite(ctx, settingKey(st.Key), st)
	if err != nil {
		return Setting{}, fmt.Errorf("setting %q: %w", st.Key, err)
	}
	st.Rev = rev
	return st, nil
}

// GetSetting returns setting key; errdefs.ErrNotFound when it was never set.
func (s *Store) GetSetting(ctx context.Context, key string) (Setting, error) {
	var st Setting
	rev, err := s.get(ctx, settingKey(key), &st)
	if err != nil {
		return Setting{}, fmt.Errorf("setting %q: %w", key, err)
	}
	st.Rev = rev
	return st, nil
}

// ListSettings returns every setting that was set, sorted by key.
func (s *Store) ListSettings(ctx context.Context) ([]Setting, error) {
	return list(ctx, s, prefix+"settings/", func(st *Setting, rev int64) { st.Rev = rev })
}

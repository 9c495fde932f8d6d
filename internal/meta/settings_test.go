package meta

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/qos"
)

// TestSettingsAndLimitsSurviveRestart: settings and a volume's QoS limits
// are kept in etcd.
func TestSettingsAndLimitsSurviveRestart(t *testing.T) {
	ctx := context.Background()
	cfg := embeddedConfig(t)
	s := open(t, cfg)

	if _, err := s.GetSetting(ctx, "clone-default-max-iops"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("unset setting: %v, want not found", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for _, st := range []Setting{{Key: "b", Value: "1"}, {Key: "a", Value: "500"}, {Key: "a", Value: "1000,500", Updated: now}} {
		if _, err := s.PutSetting(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	lim := qos.Limits{WriteIOPS: 500, ReadBytesPerSec: 100 << 20}
	if _, err := s.CreateVolume(ctx, Volume{Name: "v", Size: 4096, Node: "n", State: StateReady, QoS: lim}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, cfg)
	defer s.Close()
	all, err := s.ListSettings(ctx)
	if err != nil || len(all) != 2 || all[0].Key != "a" || all[0].Value != "1000,500" || !all[0].Updated.Equal(now) || all[1].Value != "1" {
		t.Fatalf("settings after restart: %+v, %v", all, err)
	}
	if st, err := s.GetSetting(ctx, "b"); err != nil || st.Value != "1" || st.Rev == 0 {
		t.Fatalf("get b: %+v, %v", st, err)
	}
	v, err := s.GetVolume(ctx, "v")
	if err != nil || v.QoS != lim {
		t.Fatalf("volume limits after restart: %+v, %v", v.QoS, err)
	}
}

package agent

import (
	"context"
	"testing"

	"github.com/strata-storage/strata/internal/engine"
	"github.com/strata-storage/strata/internal/qos"
)

// TestLimitsFollowTheEngine: limits set before the engine starts apply when
// it starts, later ones at once, they survive the engine restart of a
// revert, and a deleted volume's limits are forgotten.
func TestLimitsFollowTheEngine(t *testing.T) {
	a := openAgent(t)
	ctx := context.Background()
	if _, err := a.Create("v", mib); err != nil {
		t.Fatal(err)
	}
	first := qos.Limits{WriteIOPS: 500}
	if err := a.SetLimits("v", first); err != nil {
		t.Fatal(err)
	}
	if err := a.SetLimits("v", qos.Limits{ReadIOPS: -1}); err == nil {
		t.Fatal("negative limit accepted")
	}
	engineLimits := func() qos.Limits {
		t.Helper()
		be, release, err := a.Exports().Open(ctx, "v")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		return be.(*engine.Volume).Limits()
	}
	if got := engineLimits(); got != first {
		t.Fatalf("engine started with %+v, want %+v", got, first)
	}
	second := qos.Limits{ReadIOPS: 100, WriteBytesPerSec: 10 << 20}
	if err := a.SetLimits("v", second); err != nil {
		t.Fatal(err)
	}
	if got := engineLimits(); got != second {
		t.Fatalf("running engine has %+v, want %+v", got, second)
	}
	if st, err := a.Status("v"); err != nil || st.Limits != second {
		t.Fatalf("status limits %+v, %v", st.Limits, err)
	}
	if _, err := a.Snapshot("v", "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Revert("v", "s"); err != nil {
		t.Fatal(err)
	}
	if got := engineLimits(); got != second {
		t.Fatalf("engine after revert has %+v, want %+v", got, second)
	}
	if err := a.Delete("v"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Create("v", mib); err != nil {
		t.Fatal(err)
	}
	if got := engineLimits(); !got.IsZero() {
		t.Fatalf("a volume made again under a deleted one's name has limits %+v", got)
	}
}

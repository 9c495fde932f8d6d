package main

import (
	"strings"
	"testing"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client/clienttest"
)

func TestMapAndUnmap(t *testing.T) {
	isolate(t)
	srv := clienttest.New(t)
	must(t, srv, "volume", "create", "raw", "--size", "1G")
	dev := must(t, srv, "volume", "map", "raw", "--read-only")
	if !strings.HasPrefix(dev, "/dev/loop") || strings.Count(dev, "\n") != 1 {
		t.Fatalf("volume map printed %q, want the device on one line", dev)
	}
	if r := srv.LastRequest("/MapVolume").(*stratav1.MapVolumeRequest); r.Name != "raw" || !r.ReadOnly {
		t.Errorf("MapVolume request %v", r)
	}
	if again := must(t, srv, "volume", "map", "raw"); again != dev {
		t.Errorf("second map printed %q, want %q", again, dev)
	}
	if out := must(t, srv, "volume", "inspect", "raw", "-o", "json"); !strings.Contains(out, strings.TrimSpace(dev)) {
		t.Errorf("inspect does not show the device:\n%s", out)
	}
	if out := must(t, srv, "volume", "inspect", "raw"); !strings.Contains(out, "Devices:") || !strings.Contains(out, strings.TrimSpace(dev)) {
		t.Errorf("inspect's table does not show the device:\n%s", out)
	}
	if out := must(t, srv, "volume", "unmap", "raw"); out != "unmapped volume raw\n" {
		t.Errorf("volume unmap printed %q", out)
	}
	if _, err := on(t, srv, "volume", "unmap", "raw"); err == nil || !strings.Contains(err.Error(), "not mapped") {
		t.Errorf("unmap of a volume not mapped: %v", err)
	}
	if _, err := on(t, srv, "volume", "map", "Bad_Name"); err == nil || !strings.Contains(err.Error(), "DNS label") {
		t.Errorf("map of a bad name: %v", err)
	}
}

package csi

import (
	"errors"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/strata-storage/strata/internal/errdefs"
)

func TestParseVolumeParams(t *testing.T) {
	p, err := parseVolumeParams(map[string]string{
		"repl": "1", "fs": "xfs", "zones": "a, b,,", "max_iops": "1000,500", "max_bandwidth": "200",
		"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db",
		"csi.storage.k8s.io/pv/name": "pvc-1", "csi.storage.k8s.io/fstype": "ext4",
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.fs != "xfs" || strings.Join(p.zones, "|") != "a|b" || p.pvcName != "data" || p.pvcNamespace != "db" {
		t.Errorf("params: %+v", p)
	}
	q := p.qos
	if q == nil || q.GetMaxReadIops() != 1000 || q.GetMaxWriteIops() != 500 ||
		q.GetMaxReadBytesPerSecond() != 200<<20 || q.GetMaxWriteBytesPerSecond() != 200<<20 {
		t.Errorf("qos: %v", q)
	}
	if p, err := parseVolumeParams(map[string]string{"max_iops": "300"}); err != nil || p.qos.MaxReadBytesPerSecond != nil || p.qos.GetMaxWriteIops() != 300 {
		t.Errorf("max_iops alone: %v %v (bandwidth must stay unset: a clone gets the cluster default)", p.qos, err)
	}
	if p, err := parseVolumeParams(nil); err != nil || p.qos != nil || p.zones != nil || p.fs != "" {
		t.Errorf("no parameters: %+v %v", p, err)
	}

	for params, want := range map[string]string{
		"repl=4":              "1, 2 or 3",
		"repl=0":              "1, 2 or 3",
		"repl=x":              "1, 2 or 3",
		"fs=btrfs":            "ext4 or xfs",
		"zones=,":             "at least one zone",
		"max_iops=-1":         "negative",
		"max_bandwidth=1,2,3": "one (both directions) or two",
		"colour=blue":         "unknown parameter \"colour\"",
		"Repl=1":              "unknown parameter",
	} {
		k, v, _ := strings.Cut(params, "=")
		_, err := parseVolumeParams(map[string]string{k: v})
		if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want invalid argument saying %q", params, err, want)
		}
	}
	if err := checkSnapshotParams(map[string]string{"csi.storage.k8s.io/volumesnapshot/name": "s"}); err != nil {
		t.Errorf("snapshot metadata refused: %v", err)
	}
	if err := checkSnapshotParams(map[string]string{"incremental": "true"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unknown snapshot parameter: %v", err)
	}
}

func TestZoneAllowed(t *testing.T) {
	for _, c := range []struct {
		zones []string
		zone  string
		want  bool
	}{
		{nil, "", true},
		{nil, "a", true},
		{[]string{"a", "b"}, "b", true},
		{[]string{"a", "b"}, "c", false},
		{[]string{"a"}, "", false}, // a node without a zone label is in no zone
	} {
		if got := zoneAllowed(c.zones, c.zone); got != c.want {
			t.Errorf("zoneAllowed(%v, %q) = %v", c.zones, c.zone, got)
		}
	}
}

func TestCheckCapabilities(t *testing.T) {
	mount := func(fs string, mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
		return &csi.VolumeCapability{
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs, MountFlags: flags}},
		}
	}
	block := &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
	}
	snw := csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	if fs, b, err := checkCapabilities([]*csi.VolumeCapability{mount("", snw), mount("xfs", csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY)}); err != nil || fs != "xfs" || b {
		t.Errorf("two mount capabilities: %q %v %v", fs, b, err)
	}
	if a, err := checkCapability(block); err != nil || !a.block || !a.singleWriter {
		t.Errorf("block: %+v %v", a, err)
	}
	if a, err := checkCapability(mount("", csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY)); err != nil || !a.readOnly {
		t.Errorf("reader only: %+v %v", a, err)
	}
	for name, caps := range map[string][]*csi.VolumeCapability{
		"none":         nil,
		"nil":          {nil},
		"multi node":   {mount("", csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)},
		"unknown mode": {mount("", csi.VolumeCapability_AccessMode_UNKNOWN)},
		"btrfs":        {mount("btrfs", snw)},
		"mount flags":  {mount("", snw, "noatime")},
		"no type":      {{AccessMode: &csi.VolumeCapability_AccessMode{Mode: snw}}},
		"two fs":       {mount("ext4", snw), mount("xfs", snw)},
	} {
		if _, _, err := checkCapabilities(caps); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want invalid argument", name, err)
		}
	}
}

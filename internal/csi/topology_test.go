package csi

import (
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestTopology(t *testing.T) {
	seg := nodeSegments("n1", map[string]string{"zone": "a", "rack": "r1"})
	if len(seg) != 2 || seg[TopologyNode] != "n1" || seg[TopologyZone] != "a" {
		t.Errorf("segments of a node with a zone: %v", seg)
	}
	if seg := nodeSegments("n2", nil); len(seg) != 1 || seg[TopologyNode] != "n2" {
		t.Errorf("segments of a node without a zone: %v", seg)
	}
	topo := func(kv ...string) *csi.Topology {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return &csi.Topology{Segments: m}
	}
	for _, c := range []struct {
		name string
		req  *csi.TopologyRequirement
		want bool
	}{
		{"no requirement", nil, true},
		{"preferred only", &csi.TopologyRequirement{Preferred: []*csi.Topology{topo(TopologyNode, "other")}}, true},
		{"this node", &csi.TopologyRequirement{Requisite: []*csi.Topology{topo(TopologyNode, "n1")}}, true},
		{"this zone", &csi.TopologyRequirement{Requisite: []*csi.Topology{topo(TopologyZone, "a")}}, true},
		{"one of several", &csi.TopologyRequirement{Requisite: []*csi.Topology{topo(TopologyZone, "b"), topo(TopologyNode, "n1", TopologyZone, "a")}}, true},
		{"another node", &csi.TopologyRequirement{Requisite: []*csi.Topology{topo(TopologyNode, "n2")}}, false},
		{"another zone", &csi.TopologyRequirement{Requisite: []*csi.Topology{topo(TopologyNode, "n1", TopologyZone, "b")}}, false},
		{"a key we do not report", &csi.TopologyRequirement{Requisite: []*csi.Topology{topo("kubernetes.io/hostname", "n1")}}, false},
	} {
		if got := accessible(c.req, seg); got != c.want {
			t.Errorf("%s: accessible = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestVolumeSize(t *testing.T) {
	const gib = 1 << 30
	for _, c := range []struct {
		name     string
		req, lim int64
		floor    int64
		want     int64
		wantCode codes.Code
	}{
		{"default", 0, 0, 0, gib, codes.OK},
		{"rounded up", 1000, 0, 0, 4096, codes.OK},
		{"exact", 64 << 20, 64 << 20, 0, 64 << 20, codes.OK},
		{"limit only", 0, 1 << 20, 0, 1 << 20, codes.OK},
		{"limit only, rounded down", 0, 10000, 0, 8192, codes.OK},
		{"source size", 0, 0, 3 * gib, 3 * gib, codes.OK},
		{"larger than the source", 5 * gib, 0, 3 * gib, 5 * gib, codes.OK},
		{"smaller than the source", gib, 2 * gib, 3 * gib, 0, codes.OutOfRange},
		{"no block fits", 1000, 2000, 0, 0, codes.OutOfRange},
		{"limit below a block", 0, 100, 0, 0, codes.OutOfRange},
		{"too large", 65 << 40, 0, 0, 0, codes.OutOfRange},
		{"limit below required", 2 * gib, gib, 0, 0, codes.InvalidArgument},
		{"negative", -1, 0, 0, 0, codes.InvalidArgument},
	} {
		got, err := volumeSize(&csi.CapacityRange{RequiredBytes: c.req, LimitBytes: c.lim}, c.floor)
		if status.Code(err) != c.wantCode || got != c.want {
			t.Errorf("%s: volumeSize = %d, %v; want %d, %v", c.name, got, err, c.want, c.wantCode)
		}
	}
	if got, err := volumeSize(nil, 0); err != nil || got != gib {
		t.Errorf("no capacity range: %d %v", got, err)
	}
	if !sizeFits(&csi.CapacityRange{RequiredBytes: 10}, 4096) || sizeFits(&csi.CapacityRange{RequiredBytes: 10, LimitBytes: 100}, 4096) ||
		sizeFits(&csi.CapacityRange{RequiredBytes: 8192}, 4096) || !sizeFits(nil, 4096) {
		t.Error("sizeFits")
	}
}

func TestPaginate(t *testing.T) {
	items := []string{"a", "b", "c", "d", "e"}
	id := func(s string) string { return s }
	page, next, err := paginate(items, id, "", 2)
	if err != nil || len(page) != 2 || page[1] != "b" || next != tokenPrefix+"c" {
		t.Fatalf("first page: %v %q %v", page, next, err)
	}
	page, next, err = paginate(items, id, next, 0)
	if err != nil || len(page) != 3 || page[0] != "c" || next != "" {
		t.Fatalf("rest: %v %q %v", page, next, err)
	}
	// The entry a token names was deleted: the page starts after it.
	page, _, err = paginate([]string{"a", "b", "d"}, id, tokenPrefix+"c", 0)
	if err != nil || len(page) != 1 || page[0] != "d" {
		t.Fatalf("after a deleted entry: %v %v", page, err)
	}
	if page, next, err := paginate(items, id, tokenPrefix+"z", 2); err != nil || len(page) != 0 || next != "" {
		t.Fatalf("past the end: %v %q %v", page, next, err)
	}
	for _, bad := range []string{"invalid-token", tokenPrefix} {
		if _, _, err := paginate(items, id, bad, 0); status.Code(err) != codes.Aborted {
			t.Errorf("token %q: %v, want Aborted", bad, err)
		}
	}
	if _, _, err := paginate(items, id, "", -1); status.Code(err) != codes.InvalidArgument {
		t.Errorf("negative max_entries: %v", err)
	}
}

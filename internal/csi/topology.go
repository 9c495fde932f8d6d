package csi

import (
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// zoneLabel is the node label (strata up --labels zone=...) the zone
// topology segment and the zones parameter use.
const zoneLabel = "zone"

// nodeSegments is the topology of a node: its name, and its zone when it
// has a zone label.
func nodeSegments(node string, labels map[string]string) map[string]string {
	seg := map[string]string{TopologyNode: node}
	if z := labels[zoneLabel]; z != "" {
		seg[TopologyZone] = z
	}
	return seg
}

// accessible says whether a node of topology seg meets the requisite
// topologies of req: one of them has every segment it names equal to the
// node's. No requisite topology means any node; preferred topologies only
// order the choice, and a volume can be made on one node only: this one.
func accessible(req *csi.TopologyRequirement, seg map[string]string) bool {
	if len(req.GetRequisite()) == 0 {
		return true
	}
	for _, t := range req.GetRequisite() {
		if matches(t.GetSegments(), seg) {
			return true
		}
	}
	return false
}

// matches says whether every segment of want is in have with its value.
func matches(want, have map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// describe names a topology in messages.
func describe(seg map[string]string) string {
	if z, ok := seg[TopologyZone]; ok {
		return fmt.Sprintf("node %s in zone %s", seg[TopologyNode], z)
	}
	return fmt.Sprintf("node %s (no zone label)", seg[TopologyNode])
}

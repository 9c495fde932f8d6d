package schedext

import (
	"fmt"
	"math"
	"strings"

	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// Scores of a node for one volume, by how close it is to the volume's
// nearest online replica.
const (
	ScoreReplica   int64 = 10 // the node holds a replica
	ScoreSameRack  int64 = 6  // same zone and same rack as a replica
	ScoreSameZone  int64 = 3  // same zone as a replica
	ScoreElsewhere int64 = 1  // anywhere else
)

// PoolNearlyFull is the share of a pool's filesystem in use past which the
// node's storage counts as degraded.
const PoolNearlyFull = 0.9

// Node is what placement needs to know of one Strata node.
type Node struct {
	Name string
	// Zone and Rack are the node's "zone" and "rack" labels (--labels).
	Zone, Rack string
	Online     bool
	// Degraded says the node's storage is degraded: it holds a replica of a
	// degraded volume, or its pool is more than PoolNearlyFull used.
	Degraded bool
}

// Volume is what placement needs to know of one Strata volume a pod uses.
type Volume struct {
	Name string
	// Claim is the PersistentVolumeClaim, "namespace/name", for messages.
	Claim string
	// Replicas are the names of the nodes holding a replica of the volume.
	// Empty when the volume is not placed yet: it constrains nothing then.
	Replicas []string
}

// Cluster is Strata's nodes by name: the state filter and prioritize
// decide on. Kubernetes nodes are matched to Strata nodes by name (the node
// daemon's --node-name is the Kubernetes node name).
type Cluster map[string]Node

// Reasons a node is filtered out.
const (
	ReasonNoStrataNode = "no Strata node"
	ReasonOffline      = "Strata node offline"
)

// Fit says whether a pod that uses vols can run on the node called name: ""
// when it can, else why not. A pod can run only on an online Strata node,
// and only if each of its volumes has a replica on an online node (today a
// volume is served by the nodes that hold its replicas, so a volume whose
// replicas are all offline can be served nowhere).
func (c Cluster) Fit(name string, vols []Volume) string {
	n, ok := c[name]
	if !ok {
		return ReasonNoStrataNode
	}
	if !n.Online {
		return ReasonOffline
	}
	for _, v := range vols {
		if !c.served(v) {
			return c.unservedReason(v)
		}
	}
	return ""
}

// served reports whether a replica of v is on an online node; a volume not
// placed yet is served wherever the pod goes.
func (c Cluster) served(v Volume) bool {
	if len(v.Replicas) == 0 {
		return true
	}
	for _, r := range v.Replicas {
		if c[r].Online {
			return true
		}
	}
	return false
}

func (c Cluster) unservedReason(v Volume) string {
	what := fmt.Sprintf("Strata volume %s (claim %s)", v.Name, v.Claim)
	if len(v.Replicas) == 1 {
		return fmt.Sprintf("%s cannot be served: node %s, which holds its only replica, is %s", what, v.Replicas[0], c.state(v.Replicas[0]))
	}
	return fmt.Sprintf("%s cannot be served: no node holding one of its replicas (%s) is online", what, strings.Join(v.Replicas, ", "))
}

func (c Cluster) state(name string) string {
	if _, ok := c[name]; !ok {
		return "not in the cluster"
	}
	return "offline"
}

// Score rates the node called name for a pod that uses vols, from
// extenderv1.MinExtenderPriority (0) to extenderv1.MaxExtenderPriority (10):
// for each volume, the node's proximity to the volume's nearest online
// replica (ScoreReplica, ScoreSameRack, ScoreSameZone, ScoreElsewhere, or 0
// when no replica is online), averaged over the volumes that are placed,
// halved when the node's storage is degraded, rounded to the nearest
// integer. A node that is not an online Strata node scores 0, and so does
// every node when no volume is placed yet.
func (c Cluster) Score(name string, vols []Volume) int64 {
	n, ok := c[name]
	if !ok || !n.Online {
		return extenderv1.MinExtenderPriority
	}
	var sum, placed int64
	for _, v := range vols {
		if len(v.Replicas) == 0 {
			continue
		}
		placed++
		best := int64(0)
		for _, r := range v.Replicas {
			if rn, ok := c[r]; ok && rn.Online {
				best = max(best, Proximity(n, rn))
			}
		}
		sum += best
	}
	if placed == 0 {
		return extenderv1.MinExtenderPriority
	}
	score := float64(sum) / float64(placed)
	if n.Degraded {
		score /= 2
	}
	return min(int64(math.Round(score)), extenderv1.MaxExtenderPriority)
}

// Proximity rates node n for a replica held by node r: ScoreReplica when n is
// r, ScoreSameRack when both are in the same rack of the same zone (racks are
// named within a zone), ScoreSameZone when both are in the same zone, else
// ScoreElsewhere. A missing label matches nothing.
func Proximity(n, r Node) int64 {
	switch {
	case n.Name == r.Name:
		return ScoreReplica
	case n.Rack != "" && n.Rack == r.Rack && n.Zone == r.Zone:
		return ScoreSameRack
	case n.Zone != "" && n.Zone == r.Zone:
		return ScoreSameZone
	default:
		return ScoreElsewhere
	}
}

// Package placement chooses the nodes that hold a volume's replicas. It is
// one pure function, Place, over a snapshot of the cluster's nodes: no etcd,
// no clock, and the same answer for the same input whatever the order of the
// nodes. The placement controller and volume creation call it; the replica
// set state machine (internal/replset) says when to.
//
// # Rules
//
// A node is eligible for a new replica when it is online, has at least the
// volume's size available in its pool, does not already hold one of the
// volume's replicas (Request.Keep), is not avoided (Request.Avoid), and passes
// the request's filters (Request.Nodes, Request.Zones).
//
// Capacity: volumes are thin-provisioned, so a replica takes pool space only
// as it is written, but a node must still have room for the whole volume
// now: Available >= Size. Space already promised to other thin volumes is
// not subtracted; over-commitment shows up as a filling pool, which the
// node's capacity alerts report, not as a refused placement.
//
// Failure domains: a node's zone is its "zone" label and its rack is its
// "rack" label within that zone (racks are named within a zone: rack r1 of
// zone a and rack r1 of zone b are two racks). Nodes without a zone label
// all share one anonymous zone, and nodes without a rack label share one
// anonymous rack of their zone: two unlabeled nodes are never assumed to
// fail independently. In a cluster with no labels at all, spreading has no
// effect and capacity decides.
//
// Choice: the new replicas are chosen one at a time; each goes to the
// eligible node that, compared in this order,
//
//  1. is in a zone none of the chosen or kept nodes is in,
//  2. is in a rack none of the chosen or kept nodes is in,
//  3. is Request.Prefer,
//  4. has the most Available,
//  5. has the smallest name.
//
// Choosing in this order maximizes the number of distinct zones of the
// replica set, then the number of distinct racks (a node in a new zone is in
// a new rack too, so taking a new zone never costs a rack). Prefer (the node
// a volume is created on, so that its engine has a local replica) is chosen
// first when nothing is kept, and otherwise wins only among nodes that
// spread the set equally well.
package placement

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/strata-storage/strata/internal/errdefs"
	"github.com/strata-storage/strata/internal/size"
)

// Node labels placement spreads replicas over.
const (
	// LabelZone is the node label naming its zone (strata up --labels zone=...).
	LabelZone = "zone"
	// LabelRack is the node label naming its rack within its zone.
	LabelRack = "rack"
)

// MaxReplicas is the most replicas a volume can have.
const MaxReplicas = 3

// maxReasons caps how many ineligible nodes an error explains.
const maxReasons = 10

// Node is what placement needs to know of one Strata node.
type Node struct {
	Name string
	// Labels are the node's labels; placement reads LabelZone and LabelRack.
	Labels map[string]string
	// Online says the node's heartbeat is current.
	Online bool
	// Capacity and Available are the node's pool size and free space, in bytes.
	Capacity, Available int64
}

// Request is what the volume needs.
type Request struct {
	// Replicas is how many replicas the volume has once placed, kept ones
	// included: 1 to MaxReplicas.
	Replicas int
	// Size is the volume's size in bytes: a new replica's node must have
	// that much available.
	Size int64
	// Nodes, when not empty, are the only nodes new replicas may go to
	// (strata volume create --nodes).
	Nodes []string
	// Zones, when not empty, are the only zones new replicas may go to
	// (--zones); a node without a zone label is in none of them.
	Zones []string
	// Keep are the nodes already holding replicas that stay (ha-update up,
	// replacing a failed replica). They are returned first, whatever their
	// state, count towards Replicas and towards the spread, and are not
	// subject to the filters. At most Replicas of them.
	Keep []string
	// Avoid are nodes no new replica may go to (the node whose replica is
	// being replaced, which may still hold its data). Names of nodes not in
	// the cluster are allowed here.
	Avoid []string
	// Prefer, when not empty, is a node to choose first if it is eligible
	// and spreads the set as well as any other (the node the volume is
	// created on). It is a hint: an ineligible Prefer is passed over.
	Prefer string
}

// candidate is one node that is not kept, and why it is not eligible.
type candidate struct {
	node   Node
	zone   string
	rack   string // zone + "\x00" + rack label: racks are named within a zone
	reason string // "" when eligible
}

// domains returns n's zone and rack keys.
func domains(n Node) (zone, rack string) {
	zone = n.Labels[LabelZone]
	return zone, zone + "\x00" + n.Labels[LabelRack]
}

// Place returns the nodes of the volume's replicas: req.Keep, in its order,
// followed by the nodes newly chosen, in the order they were chosen (see the
// package documentation for the rules), req.Replicas in all.
//
// It fails with errdefs.ErrInvalidArgument when the request is malformed
// (Replicas outside 1 to MaxReplicas, a negative Size, a node or zone the
// cluster does not have, a node both kept and avoided, more kept nodes than
// replicas, fewer requested nodes than replicas to place), and with
// errdefs.ErrFailedPrecondition when too few nodes are eligible now; that
// error names the eligible nodes and why each other one is not.
func Place(req Request, nodes []Node) ([]string, error) {
	if req.Replicas < 1 || req.Replicas > MaxReplicas {
		return nil, fmt.Errorf("placement: %d replicas requested, a volume has 1 to %d: %w", req.Replicas, MaxReplicas, errdefs.ErrInvalidArgument)
	}
	if req.Size < 0 {
		return nil, fmt.Errorf("placement: negative size %d: %w", req.Size, errdefs.ErrInvalidArgument)
	}
	byName := make(map[string]Node, len(nodes))
	zones := make(map[string]bool)
	for _, n := range nodes {
		if n.Name == "" {
			return nil, fmt.Errorf("placement: a node has no name: %w", errdefs.ErrInvalidArgument)
		}
		if _, dup := byName[n.Name]; dup {
			return nil, fmt.Errorf("placement: node %s is listed twice: %w", n.Name, errdefs.ErrInvalidArgument)
		}
		byName[n.Name] = n
		if z := n.Labels[LabelZone]; z != "" {
			zones[z] = true
		}
	}
	known := func(what string, names []string) (map[string]bool, error) {
		set := make(map[string]bool, len(names))
		for _, name := range names {
			if _, ok := byName[name]; !ok {
				return nil, fmt.Errorf("placement: %s node %q is not in the cluster: %w", what, name, errdefs.ErrInvalidArgument)
			}
			set[name] = true
		}
		return set, nil
	}
	allowed, err := known("requested", req.Nodes)
	if err != nil {
		return nil, err
	}
	keep, err := known("kept", req.Keep)
	if err != nil {
		return nil, err
	}
	if len(keep) != len(req.Keep) {
		return nil, fmt.Errorf("placement: a kept node is listed twice (%s): %w", strings.Join(req.Keep, ", "), errdefs.ErrInvalidArgument)
	}
	if len(keep) > req.Replicas {
		return nil, fmt.Errorf("placement: %d nodes kept for %d replicas: %w", len(keep), req.Replicas, errdefs.ErrInvalidArgument)
	}
	if req.Prefer != "" {
		if _, ok := byName[req.Prefer]; !ok {
			return nil, fmt.Errorf("placement: preferred node %q is not in the cluster: %w", req.Prefer, errdefs.ErrInvalidArgument)
		}
	}
	avoid := make(map[string]bool, len(req.Avoid))
	for _, name := range req.Avoid {
		if keep[name] {
			return nil, fmt.Errorf("placement: node %s is both kept and avoided: %w", name, errdefs.ErrInvalidArgument)
		}
		avoid[name] = true
	}
	inZones := make(map[string]bool, len(req.Zones))
	for _, z := range req.Zones {
		if !zones[z] {
			return nil, fmt.Errorf("placement: no node is in zone %q: %w", z, errdefs.ErrInvalidArgument)
		}
		inZones[z] = true
	}

	out := slices.Clone(req.Keep)
	need := req.Replicas - len(keep)
	if need == 0 {
		return out, nil
	}
	if len(allowed) > 0 {
		var usable []string
		for name := range allowed {
			if !keep[name] && !avoid[name] {
				usable = append(usable, name)
			}
		}
		if len(usable) < need {
			slices.Sort(usable)
			which := "none of the requested nodes"
			if len(usable) > 0 {
				which = "of the requested nodes only " + strings.Join(usable, ", ")
			}
			return nil, fmt.Errorf("placement: %s, but %s can take one: %w", needs(req, need), which, errdefs.ErrInvalidArgument)
		}
	}

	var cands []candidate
	for _, n := range nodes {
		if keep[n.Name] {
			continue
		}
		c := candidate{node: n}
		c.zone, c.rack = domains(n)
		switch {
		case avoid[n.Name]:
			c.reason = n.Name + " avoided"
		case len(allowed) > 0 && !allowed[n.Name]:
			c.reason = n.Name + " not requested"
		case len(inZones) > 0 && c.zone == "":
			c.reason = n.Name + " has no zone"
		case len(inZones) > 0 && !inZones[c.zone]:
			c.reason = n.Name + " in zone " + c.zone
		case !n.Online:
			c.reason = n.Name + " offline"
		case n.Available < req.Size:
			c.reason = n.Name + " has " + size.Format(max(n.Available, 0)) + " free"
		}
		cands = append(cands, c)
	}
	slices.SortFunc(cands, func(a, b candidate) int { return strings.Compare(a.node.Name, b.node.Name) })

	var eligible []candidate
	var reasons []string
	for _, c := range cands {
		if c.reason == "" {
			eligible = append(eligible, c)
		} else {
			reasons = append(reasons, c.reason)
		}
	}
	if len(eligible) < need {
		names := make([]string, len(eligible))
		for i, c := range eligible {
			names[i] = c.node.Name
		}
		list := "none"
		if len(names) > 0 {
			list = strings.Join(names, ", ")
		}
		if len(reasons) > maxReasons {
			reasons = append(reasons[:maxReasons], fmt.Sprintf("and %d more", len(reasons)-maxReasons))
		}
		why := ""
		if len(reasons) > 0 {
			why = " (" + strings.Join(reasons, ", ") + ")"
		}
		return nil, fmt.Errorf("placement: %s; eligible: %s%s: %w", needs(req, need), list, why, errdefs.ErrFailedPrecondition)
	}

	usedZone := make(map[string]bool)
	usedRack := make(map[string]bool)
	for _, name := range req.Keep {
		z, r := domains(byName[name])
		usedZone[z], usedRack[r] = true, true
	}
	for range need {
		best := 0
		for i := 1; i < len(eligible); i++ {
			if better(eligible[i], eligible[best], usedZone, usedRack, req.Prefer) {
				best = i
			}
		}
		c := eligible[best]
		out = append(out, c.node.Name)
		usedZone[c.zone], usedRack[c.rack] = true, true
		eligible = slices.Delete(eligible, best, best+1)
	}
	return out, nil
}

// better reports whether a ranks before b for the next replica, given the
// zones and racks the set already spans (see the package documentation).
func better(a, b candidate, usedZone, usedRack map[string]bool, prefer string) bool {
	if c := cmpTrue(!usedZone[a.zone], !usedZone[b.zone]); c != 0 {
		return c > 0
	}
	if c := cmpTrue(!usedRack[a.rack], !usedRack[b.rack]); c != 0 {
		return c > 0
	}
	if c := cmpTrue(a.node.Name == prefer, b.node.Name == prefer); c != 0 {
		return c > 0
	}
	if c := cmp.Compare(a.node.Available, b.node.Available); c != 0 {
		return c > 0
	}
	return a.node.Name < b.node.Name
}

// cmpTrue orders true after false.
func cmpTrue(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

// needs says what the request needs, for errors: "3 replicas need 3 online
// nodes with 10GiB free", "2 replicas need 1 more online node with 10GiB
// free besides n1".
func needs(req Request, need int) string {
	s := fmt.Sprintf("%d replica", req.Replicas)
	if req.Replicas == 1 {
		s += " needs "
	} else {
		s += "s need "
	}
	s += fmt.Sprint(need)
	if len(req.Keep) > 0 {
		s += " more"
	}
	s += " online node"
	if need > 1 {
		s += "s"
	}
	if req.Size > 0 {
		s += " with " + size.Format(req.Size) + " free"
	}
	if len(req.Keep) > 0 {
		s += " besides " + strings.Join(req.Keep, ", ")
	}
	return s
}

package placement

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/strata-storage/strata/internal/errdefs"
)

const gib = int64(1) << 30

// node returns an online node with avail GiB free of 100 and the labels
// given as "zone/rack" ("a/r1", "a", "/r1", "" for none).
func node(name, where string, avail int64) Node {
	n := Node{Name: name, Online: true, Capacity: 100 * gib, Available: avail * gib, Labels: map[string]string{}}
	zone, rack, _ := strings.Cut(where, "/")
	if zone != "" {
		n.Labels[LabelZone] = zone
	}
	if rack != "" {
		n.Labels[LabelRack] = rack
	}
	return n
}

func offline(n Node) Node { n.Online = false; return n }

func TestPlace(t *testing.T) {
	threeZones := []Node{
		node("n1", "a/r1", 50), node("n2", "a/r2", 60),
		node("n3", "b/r1", 40), node("n4", "b/r1", 45),
		node("n5", "c/r1", 10),
	}
	oneZone := []Node{
		node("n1", "a/r1", 50), node("n2", "a/r1", 60),
		node("n3", "a/r2", 40), node("n4", "a/r3", 30),
	}
	unlabeled := []Node{
		node("n1", "", 50), node("n2", "", 70), node("n3", "", 60), node("n4", "", 20),
	}
	for _, tc := range []struct {
		name  string
		req   Request
		nodes []Node
		want  []string
	}{
		{
			name:  "one replica goes to the node with most free",
			req:   Request{Replicas: 1, Size: gib},
			nodes: unlabeled,
			want:  []string{"n2"},
		},
		{
			name:  "capacity orders nodes when nothing else differs",
			req:   Request{Replicas: 3, Size: gib},
			nodes: unlabeled,
			want:  []string{"n2", "n3", "n1"},
		},
		{
			name:  "ties in capacity go to the smallest name",
			req:   Request{Replicas: 2, Size: gib},
			nodes: []Node{node("n3", "", 10), node("n1", "", 10), node("n2", "", 10)},
			want:  []string{"n1", "n2"},
		},
		{
			name:  "spread over zones before capacity",
			req:   Request{Replicas: 3, Size: gib},
			nodes: threeZones,
			// n2 has most free; then b (n4 beats n3 on space); then c though n5 is small.
			want: []string{"n2", "n4", "n5"},
		},
		{
			name:  "spread over racks within a zone",
			req:   Request{Replicas: 3, Size: gib},
			nodes: oneZone,
			// n2 (r1) has most free; n1 is r1 too, so r2 and r3 come first.
			want: []string{"n2", "n3", "n4"},
		},
		{
			name:  "zones before racks",
			req:   Request{Replicas: 2, Size: gib},
			nodes: []Node{node("n1", "a/r1", 90), node("n2", "a/r2", 80), node("n3", "b/r1", 10)},
			want:  []string{"n1", "n3"},
		},
		{
			name:  "racks when zones run out",
			req:   Request{Replicas: 3, Size: gib},
			nodes: []Node{node("n1", "a/r1", 90), node("n2", "a/r1", 85), node("n3", "a/r2", 10), node("n4", "b/r1", 5)},
			want:  []string{"n1", "n4", "n3"},
		},
		{
			name:  "unlabeled nodes share one zone",
			req:   Request{Replicas: 2, Size: gib},
			nodes: []Node{node("n1", "a", 10), node("n2", "", 90), node("n3", "", 80)},
			want:  []string{"n2", "n1"},
		},
		{
			name:  "prefer is chosen first",
			req:   Request{Replicas: 2, Size: gib, Prefer: "n4"},
			nodes: unlabeled,
			want:  []string{"n4", "n2"},
		},
		{
			name:  "prefer does not beat spread",
			req:   Request{Replicas: 2, Size: gib, Keep: []string{"n1"}, Prefer: "n2"},
			nodes: threeZones,
			want:  []string{"n1", "n4"},
		},
		{
			name:  "prefer beats capacity among equally spread nodes",
			req:   Request{Replicas: 2, Size: gib, Keep: []string{"n1"}, Prefer: "n3"},
			nodes: threeZones,
			want:  []string{"n1", "n3"},
		},
		{
			name:  "ineligible prefer is passed over",
			req:   Request{Replicas: 2, Size: 25 * gib, Prefer: "n4"},
			nodes: unlabeled,
			want:  []string{"n2", "n3"},
		},
		{
			name:  "offline and full nodes are skipped",
			req:   Request{Replicas: 2, Size: 55 * gib},
			nodes: []Node{offline(node("n1", "", 90)), node("n2", "", 50), node("n3", "", 60), node("n4", "", 55)},
			want:  []string{"n3", "n4"},
		},
		{
			name:  "a node needs room for the whole size, not more",
			req:   Request{Replicas: 1, Size: 20 * gib},
			nodes: []Node{node("n1", "", 20)},
			want:  []string{"n1"},
		},
		{
			name:  "nodes filter",
			req:   Request{Replicas: 2, Size: gib, Nodes: []string{"n4", "n1"}},
			nodes: unlabeled,
			want:  []string{"n1", "n4"},
		},
		{
			name:  "zones filter",
			req:   Request{Replicas: 2, Size: gib, Zones: []string{"b", "c"}},
			nodes: threeZones,
			want:  []string{"n4", "n5"},
		},
		{
			name:  "zones filter, more replicas than zones",
			req:   Request{Replicas: 3, Size: gib, Zones: []string{"b", "c"}},
			nodes: threeZones,
			want:  []string{"n4", "n5", "n3"},
		},
		{
			name:  "replacement keeps the others and avoids the failed node",
			req:   Request{Replicas: 3, Size: gib, Keep: []string{"n3", "n5"}, Avoid: []string{"n2"}},
			nodes: threeZones,
			// a is the zone the set lacks; n2 is avoided, so n1.
			want: []string{"n3", "n5", "n1"},
		},
		{
			name: "kept nodes need not be online, fit the filters or have room",
			req: Request{Replicas: 2, Size: 30 * gib, Keep: []string{"n5"}, Zones: []string{"a"},
				Avoid: []string{"gone"}},
			nodes: append(slices.Clone(threeZones[:4]), offline(node("n5", "c/r1", 1))),
			want:  []string{"n5", "n2"},
		},
		{
			name:  "ha-update up keeps the existing replica",
			req:   Request{Replicas: 3, Size: gib, Keep: []string{"n4"}},
			nodes: threeZones,
			want:  []string{"n4", "n2", "n5"},
		},
		{
			name:  "everything kept",
			req:   Request{Replicas: 2, Size: gib, Keep: []string{"n2", "n1"}},
			nodes: unlabeled,
			want:  []string{"n2", "n1"},
		},
		{
			name:  "size zero fits any online node",
			req:   Request{Replicas: 1},
			nodes: []Node{node("n1", "", 0)},
			want:  []string{"n1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Place(tc.req, tc.nodes)
			if err != nil {
				t.Fatalf("Place: %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Place = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPlaceRefused(t *testing.T) {
	nodes := []Node{
		node("n1", "a", 50), node("n2", "b", 60),
		offline(node("n3", "c", 90)), node("n4", "c", 2),
	}
	for _, tc := range []struct {
		name  string
		req   Request
		nodes []Node
		is    error
		msg   string // the whole message when not empty
	}{
		{
			name: "too few eligible nodes, with reasons",
			req:  Request{Replicas: 3, Size: 10 * gib},
			is:   errdefs.ErrFailedPrecondition,
			msg:  "placement: 3 replicas need 3 online nodes with 10GiB free; eligible: n1, n2 (n3 offline, n4 has 2GiB free): failed precondition",
		},
		{
			name: "replacement with none eligible",
			req:  Request{Replicas: 2, Size: 10 * gib, Keep: []string{"n1"}, Avoid: []string{"n2"}},
			is:   errdefs.ErrFailedPrecondition,
			msg:  "placement: 2 replicas need 1 more online node with 10GiB free besides n1; eligible: none (n2 avoided, n3 offline, n4 has 2GiB free): failed precondition",
		},
		{
			name:  "filters are reasons too",
			req:   Request{Replicas: 3, Size: gib, Zones: []string{"a", "c"}},
			nodes: append(slices.Clone(nodes), node("n5", "", 90)),
			is:    errdefs.ErrFailedPrecondition,
			msg:   "placement: 3 replicas need 3 online nodes with 1GiB free; eligible: n1, n4 (n2 in zone b, n3 offline, n5 has no zone): failed precondition",
		},
		{
			name: "nodes filter reasons",
			req:  Request{Replicas: 2, Size: 10 * gib, Nodes: []string{"n1", "n4"}},
			is:   errdefs.ErrFailedPrecondition,
			msg:  "placement: 2 replicas need 2 online nodes with 10GiB free; eligible: n1 (n2 not requested, n3 not requested, n4 has 2GiB free): failed precondition",
		},
		{
			name: "one replica, no room",
			req:  Request{Replicas: 1, Size: 100 * gib},
			is:   errdefs.ErrFailedPrecondition,
			msg:  "placement: 1 replica needs 1 online node with 100GiB free; eligible: none (n1 has 50GiB free, n2 has 60GiB free, n3 offline, n4 has 2GiB free): failed precondition",
		},
		{
			name: "fewer requested nodes than replicas",
			req:  Request{Replicas: 3, Size: gib, Nodes: []string{"n1", "n2", "n1"}},
			is:   errdefs.ErrInvalidArgument,
			msg:  "placement: 3 replicas need 3 online nodes with 1GiB free, but of the requested nodes only n1, n2 can take one: invalid argument",
		},
		{
			name: "requested nodes all kept",
			req:  Request{Replicas: 2, Size: gib, Nodes: []string{"n1"}, Keep: []string{"n1"}},
			is:   errdefs.ErrInvalidArgument,
			msg:  "placement: 2 replicas need 1 more online node with 1GiB free besides n1, but none of the requested nodes can take one: invalid argument",
		},
		{name: "zero replicas", req: Request{Replicas: 0}, is: errdefs.ErrInvalidArgument,
			msg: "placement: 0 replicas requested, a volume has 1 to 3: invalid argument"},
		{name: "four replicas", req: Request{Replicas: 4}, is: errdefs.ErrInvalidArgument},
		{name: "negative size", req: Request{Replicas: 1, Size: -1}, is: errdefs.ErrInvalidArgument},
		{name: "unknown requested node", req: Request{Replicas: 1, Nodes: []string{"n9"}}, is: errdefs.ErrInvalidArgument,
			msg: `placement: requested node "n9" is not in the cluster: invalid argument`},
		{name: "unknown zone", req: Request{Replicas: 1, Zones: []string{"z"}}, is: errdefs.ErrInvalidArgument,
			msg: `placement: no node is in zone "z": invalid argument`},
		{name: "unknown kept node", req: Request{Replicas: 2, Keep: []string{"n9"}}, is: errdefs.ErrInvalidArgument},
		{name: "unknown preferred node", req: Request{Replicas: 1, Prefer: "n9"}, is: errdefs.ErrInvalidArgument},
		{name: "kept twice", req: Request{Replicas: 3, Keep: []string{"n1", "n1"}}, is: errdefs.ErrInvalidArgument},
		{name: "more kept than replicas", req: Request{Replicas: 1, Keep: []string{"n1", "n2"}}, is: errdefs.ErrInvalidArgument},
		{name: "kept and avoided", req: Request{Replicas: 2, Keep: []string{"n1"}, Avoid: []string{"n1"}}, is: errdefs.ErrInvalidArgument},
		{name: "node listed twice", req: Request{Replicas: 1}, nodes: []Node{node("n1", "", 1), node("n1", "", 2)}, is: errdefs.ErrInvalidArgument},
		{name: "node without name", req: Request{Replicas: 1}, nodes: []Node{node("", "", 1)}, is: errdefs.ErrInvalidArgument},
		{name: "empty cluster", req: Request{Replicas: 1}, nodes: []Node{}, is: errdefs.ErrFailedPrecondition,
			msg: "placement: 1 replica needs 1 online node; eligible: none: failed precondition"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := nodes
			if tc.nodes != nil {
				ns = tc.nodes
			}
			got, err := Place(tc.req, ns)
			if err == nil {
				t.Fatalf("Place = %v, want an error", got)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q does not wrap %v", err, tc.is)
			}
			if !strings.HasPrefix(err.Error(), "placement: ") {
				t.Errorf("error %q has no package prefix", err)
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("error\n got %s\nwant %s", err, tc.msg)
			}
		})
	}
}

func TestPlaceReasonsCapped(t *testing.T) {
	var nodes []Node
	for _, name := range strings.Fields("a b c d e f g h i j k l") {
		nodes = append(nodes, offline(node(name, "", 10)))
	}
	_, err := Place(Request{Replicas: 1}, nodes)
	const want = "placement: 1 replica needs 1 online node; eligible: none (a offline, b offline, c offline, d offline, e offline, f offline, g offline, h offline, i offline, j offline, and 2 more): failed precondition"
	if err == nil || err.Error() != want {
		t.Fatalf("error\n got %v\nwant %s", err, want)
	}
}

// TestPlaceDeterministic checks that the order of the nodes does not change
// the answer, and that Place changes neither its request nor its nodes.
func TestPlaceDeterministic(t *testing.T) {
	nodes := []Node{
		node("n1", "a/r1", 50), node("n2", "a/r2", 50), node("n3", "b/r1", 50),
		node("n4", "b/r2", 50), node("n5", "c/r1", 50), node("n6", "c/r1", 50),
		node("n7", "", 50), node("n8", "/r1", 50), offline(node("n9", "d", 99)),
	}
	reqs := []Request{
		{Replicas: 3, Size: gib},
		{Replicas: 3, Size: gib, Keep: []string{"n6"}, Avoid: []string{"n5"}},
		{Replicas: 2, Size: gib, Prefer: "n8"},
		{Replicas: 2, Size: gib, Zones: []string{"a", "b"}},
	}
	wants := [][]string{
		{"n1", "n3", "n5"},
		{"n6", "n1", "n3"},
		{"n8", "n1"},
		{"n1", "n3"},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i, req := range reqs {
		for range 50 {
			shuffled := slices.Clone(nodes)
			rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
			before := slices.Clone(shuffled)
			keep := slices.Clone(req.Keep)
			got, err := Place(req, shuffled)
			if err != nil {
				t.Fatalf("Place(%+v): %v", req, err)
			}
			if !slices.Equal(got, wants[i]) {
				t.Fatalf("Place(%+v) = %v, want %v", req, got, wants[i])
			}
			if !slices.EqualFunc(before, shuffled, func(a, b Node) bool { return a.Name == b.Name }) || !slices.Equal(keep, req.Keep) {
				t.Fatalf("Place changed its input")
			}
			if len(req.Keep) > 0 {
				got[0] = "changed"
				if req.Keep[0] == "changed" {
					t.Fatalf("Place returned req.Keep's array")
				}
			}
		}
	}
}

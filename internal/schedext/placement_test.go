package schedext

import (
	"strings"
	"testing"
)

// testCluster: two zones; a1 and a2 share rack r1 of zone a, a3 is in rack
// r2 of zone a, b1 is in zone b (whose rack is also called r1), c1 has no
// labels, off1 is offline, full1 is in rack r1 of zone a with a full pool.
var testCluster = Cluster{
	"a1":    {Name: "a1", Zone: "a", Rack: "r1", Online: true},
	"a2":    {Name: "a2", Zone: "a", Rack: "r1", Online: true},
	"a3":    {Name: "a3", Zone: "a", Rack: "r2", Online: true},
	"b1":    {Name: "b1", Zone: "b", Rack: "r1", Online: true},
	"c1":    {Name: "c1", Online: true},
	"off1":  {Name: "off1", Zone: "a", Rack: "r1"},
	"full1": {Name: "full1", Zone: "a", Rack: "r1", Online: true, Degraded: true},
}

func TestProximity(t *testing.T) {
	for _, tc := range []struct {
		n, r string
		want int64
	}{
		{"a1", "a1", ScoreReplica},
		{"a2", "a1", ScoreSameRack},
		{"a3", "a1", ScoreSameZone},
		{"b1", "a1", ScoreElsewhere}, // same rack name, other zone
		{"c1", "a1", ScoreElsewhere},
		{"a1", "c1", ScoreElsewhere},
		{"c1", "c1", ScoreReplica},
	} {
		if got := Proximity(testCluster[tc.n], testCluster[tc.r]); got != tc.want {
			t.Errorf("Proximity(%s, replica on %s) = %d, want %d", tc.n, tc.r, got, tc.want)
		}
	}
	// Racks without zones: the same rack name is the same rack.
	if got := Proximity(Node{Name: "x", Rack: "r"}, Node{Name: "y", Rack: "r"}); got != ScoreSameRack {
		t.Errorf("same rack, no zones: %d, want %d", got, ScoreSameRack)
	}
}

func TestScore(t *testing.T) {
	onA1 := Volume{Name: "v1", Claim: "ns/c1", Replicas: []string{"a1"}}
	onB1 := Volume{Name: "v2", Claim: "ns/c2", Replicas: []string{"b1"}}
	onOff := Volume{Name: "v3", Claim: "ns/c3", Replicas: []string{"off1"}}
	unplaced := Volume{Name: "v4", Claim: "ns/c4"}
	threeReplicas := Volume{Name: "v5", Claim: "ns/c5", Replicas: []string{"off1", "a3", "b1"}}
	for _, tc := range []struct {
		name string
		node string
		vols []Volume
		want int64
	}{
		{"holds the replica", "a1", []Volume{onA1}, 10},
		{"same rack", "a2", []Volume{onA1}, 6},
		{"same zone", "a3", []Volume{onA1}, 3},
		{"same rack name in another zone", "b1", []Volume{onA1}, 1},
		{"no labels", "c1", []Volume{onA1}, 1},
		{"not a Strata node", "k8s-only", []Volume{onA1}, 0},
		{"offline node", "off1", []Volume{onOff}, 0},
		{"degraded node halved", "full1", []Volume{onA1}, 3},
		{"degraded node holding the replica", "full1", []Volume{{Name: "v", Replicas: []string{"full1"}}}, 5},
		{"average of two volumes, rounded half up", "a1", []Volume{onA1, onB1}, 6},                // (10+1)/2 = 5.5
		{"average: same rack and same zone", "a2", []Volume{onA1, {Replicas: []string{"a3"}}}, 5}, // (6+3)/2 = 4.5
		{"degraded average", "full1", []Volume{onA1, onB1}, 2},                                    // (6+1)/2/2 = 1.75
		{"unplaced volumes do not count", "a2", []Volume{onA1, unplaced}, 6},
		{"only unplaced volumes", "a1", []Volume{unplaced}, 0},
		{"no online replica", "a1", []Volume{onOff}, 0},
		{"nearest online replica counts", "a2", []Volume{threeReplicas}, 3},
		{"offline replica's rack does not count", "full1", []Volume{threeReplicas}, 2}, // zone a: 3/2 = 1.5
		{"holds one of three replicas", "b1", []Volume{threeReplicas}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := testCluster.Score(tc.node, tc.vols); got != tc.want {
				t.Errorf("Score(%s) = %d, want %d", tc.node, got, tc.want)
			}
		})
	}
}

func TestFit(t *testing.T) {
	onA1 := Volume{Name: "v1", Claim: "ns/c1", Replicas: []string{"a1"}}
	onOff := Volume{Name: "v3", Claim: "ns/c3", Replicas: []string{"off1"}}
	onGone := Volume{Name: "v6", Claim: "ns/c6", Replicas: []string{"gone"}}
	allOff := Volume{Name: "v7", Claim: "ns/c7", Replicas: []string{"off1", "gone"}}
	oneOn := Volume{Name: "v8", Claim: "ns/c8", Replicas: []string{"off1", "b1"}}
	for _, tc := range []struct {
		name string
		node string
		vols []Volume
		want string // substring of the reason; "" when the node fits
	}{
		{"replica here", "a1", []Volume{onA1}, ""},
		{"replica elsewhere, online", "b1", []Volume{onA1}, ""},
		{"degraded node still fits", "full1", []Volume{onA1}, ""},
		{"unplaced volume", "c1", []Volume{{Name: "v", Claim: "ns/c"}}, ""},
		{"one of two replicas online", "a1", []Volume{oneOn}, ""},
		{"not a Strata node", "k8s-only", []Volume{onA1}, ReasonNoStrataNode},
		{"offline Strata node", "off1", []Volume{onA1}, ReasonOffline},
		{"only replica offline", "a1", []Volume{onA1, onOff},
			"Strata volume v3 (claim ns/c3) cannot be served: node off1, which holds its only replica, is offline"},
		{"only replica on an unknown node", "a1", []Volume{onGone}, "node gone, which holds its only replica, is not in the cluster"},
		{"no replica online", "a1", []Volume{allOff}, "no node holding one of its replicas (off1, gone) is online"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := testCluster.Fit(tc.node, tc.vols)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("Fit(%s) = %q, want %q", tc.node, got, tc.want)
			}
		})
	}
}

package schedext

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
)

func TestClaims(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop"},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{
			{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-web-0"}}},
			{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}},
			{Name: "again", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-web-0", ReadOnly: true}}},
			{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		}},
	}
	want := []string{"data-web-0", "web-0-scratch"}
	if got := Claims(pod); !reflect.DeepEqual(got, want) {
		t.Errorf("Claims = %q, want %q", got, want)
	}
	if got := Claims(&corev1.Pod{}); got != nil {
		t.Errorf("Claims of a pod without volumes = %q", got)
	}
}

func claimVolume(name, claim, ns, node, state string, created time.Time) *stratav1.Volume {
	return &stratav1.Volume{
		Name: name, Node: node, State: state, CreatedAt: timestamppb.New(created),
		Labels: map[string]string{LabelClaimName: claim, LabelClaimNamespace: ns},
	}
}

func TestPodVolumes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	vols := []*stratav1.Volume{
		claimVolume("pvc-1", "data", "shop", "n1", "ready", t0),
		claimVolume("pvc-2", "data", "other", "n2", "ready", t0),                    // same claim name, other namespace
		claimVolume("pvc-3", "logs", "shop", "n1", "ready", t0),                     // retained volume of an older "logs" claim
		claimVolume("pvc-4", "logs", "shop", "n3", "ready", t0.Add(time.Hour)),      // the newer one
		claimVolume("pvc-5", "logs", "shop", "n4", "deleting", t0.Add(2*time.Hour)), // newest but going away
		claimVolume("pvc-6", "web-0-scratch", "shop", "", "creating", t0),
		{Name: "plain", Node: "n1", State: "ready"}, // no claim labels
	}
	got := podVolumes("shop", []string{"data", "logs", "web-0-scratch", "unknown"}, vols)
	want := []Volume{
		{Name: "pvc-1", Claim: "shop/data", Replicas: []string{"n1"}},
		{Name: "pvc-4", Claim: "shop/logs", Replicas: []string{"n3"}},
		{Name: "pvc-6", Claim: "shop/web-0-scratch"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("podVolumes =\n%+v\nwant\n%+v", got, want)
	}
	if got := podVolumes("shop", []string{"unknown"}, vols); got != nil {
		t.Errorf("podVolumes of an unknown claim = %+v", got)
	}
}

func TestNewCluster(t *testing.T) {
	st := &stratav1.Status{Nodes: []*stratav1.Node{
		{Name: "n1", State: "online", Labels: map[string]string{"zone": "a", "rack": "r1", "ssd": "yes"}, PoolCapacityBytes: 100, PoolAvailableBytes: 50},
		{Name: "n2", State: "offline", Labels: map[string]string{"zone": "b"}},
		{Name: "n3", State: "online", PoolCapacityBytes: 100, PoolAvailableBytes: 9},  // 91% used
		{Name: "n4", State: "online", PoolCapacityBytes: 100, PoolAvailableBytes: 10}, // 90% used: not yet
		{Name: "n5", State: "online"},
	}}
	vols := []*stratav1.Volume{
		{Name: "ok", Node: "n4", State: "ready"},
		{Name: "bad", Node: "n5", State: "degraded"},
		{Name: "lost", Node: "gone", State: "missing"},
	}
	want := Cluster{
		"n1": {Name: "n1", Zone: "a", Rack: "r1", Online: true},
		"n2": {Name: "n2", Zone: "b"},
		"n3": {Name: "n3", Online: true, Degraded: true},
		"n4": {Name: "n4", Online: true},
		"n5": {Name: "n5", Online: true, Degraded: true},
	}
	if got := newCluster(st, vols); !reflect.DeepEqual(got, want) {
		t.Errorf("newCluster =\n%+v\nwant\n%+v", got, want)
	}
}

func TestReplicasAreTheInSyncOnes(t *testing.T) {
	v := &stratav1.Volume{Node: "n1", Replicas: []*stratav1.VolumeReplica{
		{Node: "n1", Mode: "in-sync"}, {Node: "n2", Mode: "out"}, {Node: "n3", Mode: "in-sync"},
	}}
	if got := replicas(v); !slices.Equal(got, []string{"n1", "n3"}) {
		t.Fatalf("replicas %v, want [n1 n3]", got)
	}
	if got := replicas(&stratav1.Volume{Node: "n1"}); !slices.Equal(got, []string{"n1"}) {
		t.Fatalf("replicas of a volume without a replica list: %v", got)
	}
}

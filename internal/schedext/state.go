package schedext

import (
	"slices"

	corev1 "k8s.io/api/core/v1"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
)

// Labels the extender reads. The CSI driver records the claim a volume was
// provisioned for (the external-provisioner's csi.storage.k8s.io/pvc/*
// parameters) as volume labels; nodes carry their failure domains as node
// labels (strata up --labels zone=a,rack=r1).
const (
	LabelClaimName      = "csi.storage.k8s.io/pvc/name"
	LabelClaimNamespace = "csi.storage.k8s.io/pvc/namespace"
	LabelZone           = "zone"
	LabelRack           = "rack"
)

// Volume states that make a volume degraded: "degraded" (a replica is
// missing or behind) and "missing" (the node that should hold the volume
// does not have it).
var degradedStates = []string{"degraded", "missing"}

// Claims returns the names of the PersistentVolumeClaims pod uses, in the
// pod's namespace, each once: the claimName of its persistentVolumeClaim
// volumes and, for its generic ephemeral volumes, the claim Kubernetes
// makes for them, named POD-VOLUME.
func Claims(pod *corev1.Pod) []string {
	var out []string
	for _, v := range pod.Spec.Volumes {
		name := ""
		switch {
		case v.PersistentVolumeClaim != nil:
			name = v.PersistentVolumeClaim.ClaimName
		case v.Ephemeral != nil:
			name = pod.Name + "-" + v.Name
		}
		if name != "" && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// replicas returns the names of the nodes holding an in-sync replica of
// v (its node, from a server that does not report replicas).
func replicas(v *stratav1.Volume) []string {
	var out []string
	for _, r := range v.Replicas {
		if r.Mode == "in-sync" {
			out = append(out, r.Node)
		}
	}
	if len(out) == 0 && len(v.Replicas) == 0 && v.Node != "" {
		out = []string{v.Node}
	}
	return out
}

func degraded(v *stratav1.Volume) bool { return slices.Contains(degradedStates, v.State) }

// newCluster builds the cluster from the API's status and every volume: a
// node is degraded when it holds a replica of a degraded volume or when its
// pool is more than PoolNearlyFull used.
func newCluster(st *stratav1.Status, vols []*stratav1.Volume) Cluster {
	c := Cluster{}
	for _, n := range st.GetNodes() {
		used := n.PoolCapacityBytes - n.PoolAvailableBytes
		c[n.Name] = Node{
			Name:     n.Name,
			Zone:     n.Labels[LabelZone],
			Rack:     n.Labels[LabelRack],
			Online:   n.State == "online",
			Degraded: n.PoolCapacityBytes > 0 && float64(used) > PoolNearlyFull*float64(n.PoolCapacityBytes),
		}
	}
	for _, v := range vols {
		if !degraded(v) {
			continue
		}
		for _, r := range replicas(v) {
			if n, ok := c[r]; ok {
				n.Degraded = true
				c[r] = n
			}
		}
	}
	return c
}

// podVolumes returns the Strata volumes provisioned for claims in
// namespace; claims without one (another driver's, or not provisioned yet)
// are left out. When several volumes carry the same claim (a claim deleted
// and made again while its old volume was retained), the newest one that is
// not being deleted is the claim's.
func podVolumes(namespace string, claims []string, vols []*stratav1.Volume) []Volume {
	var out []Volume
	for _, claim := range claims {
		var best *stratav1.Volume
		for _, v := range vols {
			if v.Labels[LabelClaimName] != claim || v.Labels[LabelClaimNamespace] != namespace {
				continue
			}
			if best == nil || newer(v, best) {
				best = v
			}
		}
		if best != nil {
			out = append(out, Volume{
				Name:     best.Name,
				Claim:    namespace + "/" + claim,
				Replicas: replicas(best),
			})
		}
	}
	return out
}

// newer says whether a is a better match for a claim than b.
func newer(a, b *stratav1.Volume) bool {
	if (a.State == "deleting") != (b.State == "deleting") {
		return b.State == "deleting"
	}
	return a.GetCreatedAt().AsTime().After(b.GetCreatedAt().AsTime())
}

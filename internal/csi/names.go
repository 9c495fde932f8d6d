package csi

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Names of the driver and of what it records on volumes and reports to the
// CO.
const (
	// DriverName is the CSI driver's name (StorageClass provisioner).
	DriverName = "strata.csi.io"

	// LabelName records the CSI name a volume was created for, so that a
	// repeated CreateVolume finds it (names that are not Strata names map
	// to one; see strataName).
	LabelName = "csi.strata.io/name"
	// LabelFS records the filesystem asked for (StorageClass parameter fs,
	// or the capability's fs_type), made on the first NodeStageVolume.
	LabelFS = "csi.strata.io/fs"
	// LabelPVCName and LabelPVCNamespace record the claim a volume was
	// provisioned for (the external-provisioner passes them with
	// --extra-create-metadata); the scheduler extender finds a pod's
	// volumes by them.
	LabelPVCName      = "csi.storage.k8s.io/pvc/name"
	LabelPVCNamespace = "csi.storage.k8s.io/pvc/namespace"

	// TopologyNode and TopologyZone are the topology keys the driver
	// reports: the node's name, and its "zone" label when it has one.
	TopologyNode = "topology.strata.io/node"
	TopologyZone = "topology.strata.io/zone"

	// cloneSnapshotPrefix starts the names of the snapshots the driver
	// takes of a source volume to clone it (content source "volume").
	cloneSnapshotPrefix = "csi-clone-"
)

// maxLabelValue is the longest label value the API takes.
const maxLabelValue = 253

// strataName maps a CSI volume or snapshot name to a Strata name (a
// lower-case DNS label of at most 63 characters). A name that is one
// already is kept (Kubernetes' "pvc-<uid>"); any other becomes its
// lower-cased, sanitized start plus 16 hex digits of its SHA-256, so that
// the mapping is deterministic and two CSI names that differ (in case, in
// a long tail) get different Strata names.
func strataName(name string) string {
	if errdefs.ValidateName("volume", name) == nil {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "-" + hex.EncodeToString(sum[:])[:16]
	var b strings.Builder
	dash := true // no leading dash
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
			dash = false
		case !dash:
			b.WriteByte('-')
			dash = true
		}
	}
	prefix := b.String()
	if max := 63 - len(suffix); len(prefix) > max {
		prefix = prefix[:max]
	}
	prefix = strings.TrimRight(prefix, "-")
	if prefix == "" {
		prefix = "csi"
	}
	return prefix + suffix
}

// nameLabel is the value LabelName records for a CSI name: the name itself
// when a label can hold it (printable ASCII, at most 253 characters), its
// SHA-256 otherwise.
func nameLabel(name string) string {
	ok := len(name) <= maxLabelValue
	for i := 0; ok && i < len(name); i++ {
		ok = name[i] >= 0x20 && name[i] <= 0x7e
	}
	if ok {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// snapshotID is the CSI snapshot ID of snapshot snap of volume vol.
func snapshotID(vol, snap string) string { return vol + "@" + snap }

// parseSnapshotID splits a snapshot ID; ok is false when id cannot name a
// Strata snapshot (and so names none).
func parseSnapshotID(id string) (vol, snap string, ok bool) {
	vol, snap, ok = strings.Cut(id, "@")
	if !ok || errdefs.ValidateName("volume", vol) != nil || errdefs.ValidateName("snapshot", snap) != nil {
		return "", "", false
	}
	return vol, snap, true
}

// validVolumeID says whether id can name a Strata volume.
func validVolumeID(id string) bool { return errdefs.ValidateName("volume", id) == nil }

// cloneSnapshotName names the snapshot of the source volume that volume
// (a Strata name) is cloned from: derived from the clone's name, so that a
// retried CreateVolume finds the snapshot its first attempt took.
func cloneSnapshotName(volume string) string {
	sum := sha256.Sum256([]byte(volume))
	return cloneSnapshotPrefix + hex.EncodeToString(sum[:])[:32]
}

// isCloneSnapshot says whether a snapshot name is one cloneSnapshotName
// makes: the driver's own, deleted with the clone, and no reason to keep
// its volume from being deleted.
func isCloneSnapshot(name string) bool { return strings.HasPrefix(name, cloneSnapshotPrefix) }

// Package chain is the layered replica store: one pool directory holds many
// chains (volumes); each chain is a stack of layers, sparse files holding the
// 4 KiB blocks written while the layer was the head. Sealed layers are
// immutable and may be shared by several chains (clones), with reference
// counts derived from the chains that list them.
//
// A Chain is safe for concurrent use. It knows nothing of the network or etcd.
package chain

import "time"

// BlockSize is the unit of allocation, of the extent index, and of
// read-modify-write for unaligned writes.
const BlockSize = 4096

// Extent is a byte range of a volume.
type Extent struct {
	Offset int64
	Length int64
}

// SnapshotInfo describes one snapshot of a chain.
type SnapshotInfo struct {
	Name    string
	Layer   string // identity of the sealed layer the snapshot ends at
	Size    int64  // volume size when the snapshot was taken
	Created time.Time
	// Clones counts the other chains that still use this snapshot's layer.
	Clones int
}

// Info is a point-in-time description of a chain.
type Info struct {
	Name      string
	Size      int64
	Allocated int64  // bytes this chain's own (unshared) layers occupy on disk
	Layers    int    // depth of the chain, head included
	Parent    string // "VOL@SNAP" this chain was cloned from, or ""
	Snapshots []SnapshotInfo
}

// Usage is the space of the pool's filesystem.
type Usage struct {
	Capacity  int64 // bytes of the filesystem holding the pool
	Available int64 // bytes free for the pool
	Allocated int64 // bytes held by all layers of the pool
}

// DeleteSnapshotResult says what deleting a snapshot did to its data.
type DeleteSnapshotResult struct {
	// KeptForClones is the number of clones that still use the snapshot's
	// layer, which therefore stays on disk until the last of them is gone.
	KeptForClones int
}

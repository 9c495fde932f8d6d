// Package replica holds the replicas an engine writes to. Local is the
// replica in this node's pool; the replica server and its remote client
// (the data protocol) join it when replication lands.
package replica

import "github.com/strata-storage/strata/internal/chain"

// Local is a replica backed by a chain in this node's pool.
type Local struct{ *chain.Chain }

// NewLocal returns the local replica over c.
func NewLocal(c *chain.Chain) *Local { return &Local{Chain: c} }

// Snapshot seals the chain's head as snapshot name.
func (l *Local) Snapshot(name string) error {
	_, err := l.Chain.Snapshot(name)
	return err
}

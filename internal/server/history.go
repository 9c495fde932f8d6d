package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/engine"
	"github.com/strata-storage/strata/internal/errdefs"
)

// historyClonePrefix names the temporary clones copyHistory pins a
// snapshot with; Reconcile removes those a crash left behind.
const historyClonePrefix = "strata-history-"

// historyChunk is the most copyHistory reads and writes at once.
const historyChunk = 4 << 20

// copyHistory gives a new, empty replica of volume name on node the
// volume's snapshots (architecture invariant 5: a rebuilt replica gets the
// sealed layers it lacks), before its catch-up copies the head: for each
// snapshot of this node's in-sync replica, oldest first, what changed
// since the one before is read from a temporary clone of it (which pins
// its layers while snapshots are deleted) and written to the replica,
// which then seals a snapshot of the same name. r is the replica, opened
// at the engine's epoch; the engine sends it no write until the catch-up.
//
// It does nothing for a replica that already has data or snapshots, when
// this node holds no in-sync replica, and when a snapshot's size differs
// from the volume's (the replica was made at the current size). On an
// error the replica keeps what was copied, and its catch-up copies the
// current data in full.
func (s *Server) copyHistory(ctx context.Context, name string, eng *engine.Volume, node string, r engine.Replica) error {
	if !slices.Contains(eng.InSync(), s.node) || node == s.node {
		return nil
	}
	src, err := s.agent.Pool().Open(name)
	if err != nil {
		return err
	}
	snaps := src.Snapshots()
	if len(snaps) == 0 {
		return nil
	}
	have, err := s.replicaSnapshots(ctx, name, node)
	if err != nil {
		return err
	}
	if len(have) > 0 {
		return nil
	}
	if es, err := s.replicaExtents(ctx, name, node, ""); err != nil || len(es) > 0 {
		return err // it holds data: its catch-up compares it
	}
	size := r.Size()
	for _, sn := range snaps {
		if sn.Size != size {
			return fmt.Errorf("snapshot %s@%s is %d bytes and the volume %d: %w", name, sn.Name, sn.Size, size, errdefs.ErrFailedPrecondition)
		}
	}
	start := time.Now()
	var copied int64
	prev := ""
	for _, sn := range snaps {
		n, err := s.copySnapshot(name, src, prev, sn.Name, r)
		copied += n
		if err != nil {
			return fmt.Errorf("snapshot %s@%s: %w", name, sn.Name, err)
		}
		prev = sn.Name
	}
	s.log.Info("copied the volume's snapshots to a new replica", "volume", name, "node", node,
		"snapshots", len(snaps), "copied_bytes", copied, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// copySnapshot writes what changed in src between snapshots prev ("" for
// the start) and snap, as of snap, to r, and seals it there as snap.
func (s *Server) copySnapshot(name string, src *chain.Chain, prev, snap string, r engine.Replica) (int64, error) {
	es, err := src.ChangedExtents(prev, snap)
	if err != nil {
		return 0, err
	}
	var b [6]byte
	rand.Read(b[:])
	tmp := historyClonePrefix + hex.EncodeToString(b[:])
	pool := s.agent.Pool()
	view, err := pool.Clone(name, snap, tmp, 0)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err := pool.Delete(tmp); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			s.log.Warn("removing a snapshot clone (the next start does)", "chain", tmp, "err", err)
		}
	}()
	buf := make([]byte, historyChunk)
	var copied int64
	for _, e := range es {
		n, _, err := engine.CopyExtent(r, view, engine.Extent{Offset: e.Offset, Length: e.Length}, buf)
		copied += n
		if err != nil {
			return copied, err
		}
	}
	if err := r.Flush(); err != nil {
		return copied, err
	}
	return copied, r.Snapshot(snap)
}

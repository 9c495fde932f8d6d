package replica

import "github.com/strata-storage/strata/internal/chain"

// Local is a replica backed by a chain in this node's pool: what an engine
// uses for its own node's copy, and what the replica server serves remote
// engines from. A Local opened at an epoch goes through the same fence as
// the replica server's connections, so a stale engine on this node cannot
// write either. It is safe for concurrent use.
type Local struct {
	c *chain.Chain
	f *Fence // nil: unfenced
}

// NewLocal returns the unfenced local replica over c: every call goes to
// the chain. It is for volumes with one replica, where no other engine
// can take over; replicated volumes use OpenLocal.
func NewLocal(c *chain.Chain) *Local { return &Local{c: c} }

// OpenLocal returns the local replica over c fenced at epoch (see
// Epochs.Open): opening at an epoch older than the volume's fails with
// ErrStaleEpoch, and once a later Open raises the epoch, every call but
// Size fails with ErrStaleEpoch and leaves the chain untouched.
func OpenLocal(c *chain.Chain, epochs *Epochs, epoch uint64) (*Local, error) {
	f, err := epochs.Open(c.Name(), epoch)
	if err != nil {
		return nil, err
	}
	return &Local{c: c, f: f}, nil
}

// Chain returns the chain the replica writes to.
func (l *Local) Chain() *chain.Chain { return l.c }

// Fence returns the replica's fence; nil when it is unfenced.
func (l *Local) Fence() *Fence { return l.f }

// ReadAt reads len(p) bytes at off.
func (l *Local) ReadAt(p []byte, off int64) (int, error) {
	if err := l.f.enter(); err != nil {
		return 0, err
	}
	defer l.f.leave()
	return l.c.ReadAt(p, off)
}

// WriteAt writes p at off.
func (l *Local) WriteAt(p []byte, off int64) (int, error) {
	if err := l.f.enter(); err != nil {
		return 0, err
	}
	defer l.f.leave()
	if err := l.f.mark(off, min(int64(len(p)), l.c.Size()-off)); err != nil {
		return 0, err
	}
	return l.c.WriteAt(p, off)
}

// Flush makes every completed write durable.
func (l *Local) Flush() error {
	if err := l.f.enter(); err != nil {
		return err
	}
	defer l.f.leave()
	return l.c.Flush()
}

// Trim discards the range; it reads as zeros afterwards.
func (l *Local) Trim(off, length int64) error {
	if err := l.f.enter(); err != nil {
		return err
	}
	defer l.f.leave()
	if err := l.f.mark(off, min(length, l.c.Size()-off)); err != nil {
		return err
	}
	return l.c.Trim(off, length)
}

// WriteZeroes makes the range read as zeros.
func (l *Local) WriteZeroes(off, length int64) error {
	if err := l.f.enter(); err != nil {
		return err
	}
	defer l.f.leave()
	if err := l.f.mark(off, min(length, l.c.Size()-off)); err != nil {
		return err
	}
	return l.c.WriteZeroes(off, length)
}

// Size returns the volume size in bytes. It is not fenced: it changes
// nothing and has no way to report an error.
func (l *Local) Size() int64 { return l.c.Size() }

// Grow raises the volume size.
func (l *Local) Grow(size int64) error {
	if err := l.f.enter(); err != nil {
		return err
	}
	defer l.f.leave()
	return l.c.Grow(size)
}

// Snapshot seals the chain's head as snapshot name.
func (l *Local) Snapshot(name string) error {
	if err := l.f.enter(); err != nil {
		return err
	}
	defer l.f.leave()
	_, err := l.c.Snapshot(name)
	return err
}

// Revert drops every write since snapshot name, the chain's latest.
func (l *Local) Revert(name string) error {
	if err := l.f.enter(); err != nil {
		return err
	}
	defer l.f.leave()
	if l.f != nil {
		// What the revert changes is what changed since the snapshot.
		es, err := l.c.ChangedExtents(name, "")
		if err != nil {
			return err
		}
		for _, e := range es {
			if err := l.f.mark(e.Offset, e.Length); err != nil {
				return err
			}
		}
	}
	return l.c.Revert(name)
}

// Checkpoint tells the replica that everything written through the
// engine before it is durable on every in-sync replica: its dirty-region
// log keeps only the regions written since the previous checkpoint.
func (l *Local) Checkpoint() error {
	if err := l.f.enter(); err != nil {
		return err
	}
	defer l.f.leave()
	if l.f == nil {
		return nil
	}
	return l.f.v.dirty.checkpoint()
}

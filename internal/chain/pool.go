package chain

import "errors"

// errTODO marks the stub bodies the chain implementation replaces.
var errTODO = errors.New("chain: not implemented yet")

// Pool is a directory holding chains and their layers. All chains of a pool
// share its layer files; a layer is removed when no chain lists it.
type Pool struct{}

// OpenPool opens (creating it if missing) the pool in dir, finishes or rolls
// back any operation a crash interrupted, and removes layers no chain uses.
func OpenPool(dir string) (*Pool, error) { return nil, errTODO }

// Close flushes and closes every open chain of the pool.
func (p *Pool) Close() error { return errTODO }

// Create makes an empty chain of size bytes (a multiple of BlockSize).
// Creating a chain that exists with the same size returns it (idempotent);
// with another size it fails with errdefs.ErrAlreadyExists.
func (p *Pool) Create(name string, size int64) (*Chain, error) { return nil, errTODO }

// Open returns the chain called name. The pool keeps one open handle per
// chain and returns it to every caller; it stays open until Delete or Close.
// A missing chain is errdefs.ErrNotFound.
func (p *Pool) Open(name string) (*Chain, error) { return nil, errTODO }

// Clone makes chain dst whose lower layers are the layers of src up to its
// snapshot snap, plus an empty head: O(1) whatever the size. size is the
// new chain's size; 0 means the snapshot's size; smaller is an error.
func (p *Pool) Clone(src, snap, dst string, size int64) (*Chain, error) { return nil, errTODO }

// Delete closes and removes chain name. Layers that other chains still use
// stay until their last user is gone. Deleting a missing chain is
// errdefs.ErrNotFound.
func (p *Pool) Delete(name string) error { return errTODO }

// List returns the names of the pool's chains, sorted.
func (p *Pool) List() ([]string, error) { return nil, errTODO }

// Usage reports the space of the pool's filesystem and of its layers.
func (p *Pool) Usage() (Usage, error) { return Usage{}, errTODO }

// Chain is one volume's stack of layers. See the package comment.
type Chain struct{}

// Name returns the chain's name.
func (c *Chain) Name() string { return "" }

// Size returns the volume size in bytes.
func (c *Chain) Size() int64 { return 0 }

// ReadAt reads len(p) bytes at off. Blocks never written read as zeros.
// Reading past Size is an error.
func (c *Chain) ReadAt(p []byte, off int64) (int, error) { return 0, errTODO }

// WriteAt writes p at off into the head; unaligned edges are read, merged
// and written back a whole block at a time. A full pool fails with ENOSPC
// and leaves the chain usable. Writes are durable after Flush.
func (c *Chain) WriteAt(p []byte, off int64) (int, error) { return 0, errTODO }

// Flush makes every write and trim completed before it durable.
func (c *Chain) Flush() error { return errTODO }

// Trim discards the range: it reads as zeros afterwards, never as an older
// layer's data, and the head's space is given back where whole blocks are.
func (c *Chain) Trim(off, length int64) error { return errTODO }

// WriteZeroes makes the range read as zeros, like Trim.
func (c *Chain) WriteZeroes(off, length int64) error { return errTODO }

// Grow raises the volume size; shrinking is errdefs.ErrFailedPrecondition.
func (c *Chain) Grow(size int64) error { return errTODO }

// Snapshot seals the head as snapshot name and starts a new empty head:
// O(1), no data copied. A duplicate name is errdefs.ErrAlreadyExists.
func (c *Chain) Snapshot(name string) (SnapshotInfo, error) { return SnapshotInfo{}, errTODO }

// Snapshots lists the chain's snapshots, oldest first.
func (c *Chain) Snapshots() []SnapshotInfo { return nil }

// Revert drops every write since snapshot name (and later snapshots are
// kept) by starting a new empty head on top of it; the size goes back to
// the snapshot's size.
func (c *Chain) Revert(name string) error { return errTODO }

// DeleteSnapshot removes snapshot name. Its layer is merged into its upper
// neighbour in the background and its space given back, unless clones still
// use it, in which case it stays until the last of them is deleted.
func (c *Chain) DeleteSnapshot(name string) (DeleteSnapshotResult, error) {
	return DeleteSnapshotResult{}, errTODO
}

// ChangedExtents returns the ranges written, trimmed or zeroed after
// snapshot from up to snapshot to. from "" means the start of the chain;
// to "" means the current head. Adjacent ranges are merged.
func (c *Chain) ChangedExtents(from, to string) ([]Extent, error) { return nil, errTODO }

// Info describes the chain.
func (c *Chain) Info() Info { return Info{} }

package replica

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/strata-storage/strata/internal/chain"
	"github.com/strata-storage/strata/internal/errdefs"
)

// Control is a client of a replica server's volume-level operations,
// which need no engine: create, delete, list, checksums, extents, and the
// listing and deletion of snapshots. It
// holds one connection bound to no volume and is safe for concurrent use.
// Like a Remote, it breaks for good when a request times out or the
// connection fails (errdefs.ErrUnavailable); dial a new one then.
type Control struct {
	r *Remote
}

// DialControl connects to the replica server at addr.
func DialControl(ctx context.Context, addr string, opts ...Option) (*Control, error) {
	r, err := dial(ctx, addr, "", 0, opts)
	if err != nil {
		return nil, err
	}
	return &Control{r: r}, nil
}

// Close closes the connection; calls in flight fail with
// errdefs.ErrUnavailable.
func (c *Control) Close() error { return c.r.Close() }

// Err returns why the connection is broken, or nil while it works.
func (c *Control) Err() error { return c.r.Err() }

// do runs one request, waiting until ctx is done and, when timeout > 0,
// at most timeout (which breaks the connection).
func (c *Control) do(ctx context.Context, o op, off, length uint64, payload []byte, timeout time.Duration) ([]byte, error) {
	call := getCall(o, off, length)
	call.payload = payload
	if !c.r.send(ctx.Done(), call, timeout) {
		// The reply may still come: the call is the connection's now.
		return nil, fmt.Errorf("replica: %v on %s: %w", o, c.r.addr, ctx.Err())
	}
	resp, err := call.resp, call.err
	putCall(call)
	if err != nil {
		var we *wireError
		if errors.As(err, &we) {
			return nil, fmt.Errorf("replica: %v on %s: %w", o, c.r.addr, err)
		}
		return nil, err
	}
	return resp, nil
}

// Create makes an empty volume of size bytes on the server's pool. Like
// chain.Pool.Create, creating a volume that exists with the same size
// succeeds; with another size it fails with errdefs.ErrAlreadyExists.
func (c *Control) Create(ctx context.Context, volume string, size int64) error {
	if size < 0 {
		return fmt.Errorf("replica: create %q: size %d: %w", volume, size, errdefs.ErrInvalidArgument)
	}
	p, err := encodeStrs(nil, volume)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, opCreate, 0, uint64(size), p, c.r.timeout)
	return err
}

// Delete removes a volume from the server's pool; a missing one is
// errdefs.ErrNotFound. Connections bound to it fail from then on. Its
// epoch stays (see Epochs).
func (c *Control) Delete(ctx context.Context, volume string) error {
	p, err := encodeStrs(nil, volume)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, opDelete, 0, 0, p, c.r.timeout)
	return err
}

// List returns the names of the volumes of the server's pool, sorted.
func (c *Control) List(ctx context.Context) ([]string, error) {
	resp, err := c.do(ctx, opList, 0, 0, nil, c.r.timeout)
	if err != nil {
		return nil, err
	}
	names, err := decodeStrs(resp, -1)
	if err != nil {
		return nil, c.protocolError(opList, err)
	}
	return names, nil
}

// Checksums returns the SHA-256 of each region-sized piece of the volume's
// range [off, off+length) on the server (see the package function
// Checksums): comparing them between replicas finds the regions that
// differ. It reads the whole range, so it is bounded by ctx only, not by
// the request timeout.
func (c *Control) Checksums(ctx context.Context, volume string, off, length, region int64) ([]Checksum, error) {
	if off < 0 || length < 0 || region <= 0 {
		return nil, fmt.Errorf("replica: checksums of %q [%d, +%d) by %d: %w", volume, off, length, region, errdefs.ErrInvalidArgument)
	}
	p, err := encodeStrs(binary.BigEndian.AppendUint64(nil, uint64(region)), volume)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, opChecksums, uint64(off), uint64(length), p, 0)
	if err != nil {
		return nil, err
	}
	want := length / region
	if length%region != 0 {
		want++
	}
	if int64(len(resp)) != want*sha256.Size {
		return nil, c.protocolError(opChecksums, fmt.Errorf("reply of %d bytes for %d regions", len(resp), want))
	}
	out := make([]Checksum, want)
	for i := range out {
		copy(out[i][:], resp[i*sha256.Size:])
	}
	return out, nil
}

// Extents returns the volume's ranges written, trimmed or zeroed after
// snapshot from up to snapshot to on the server: chain.ChangedExtents
// over the wire ("" is the chain's start for from, the head for to). It
// is bounded by ctx only, not by the request timeout. A list longer than
// one reply is fetched in several, which, when to is the head, may see
// writes that land meanwhile.
func (c *Control) Extents(ctx context.Context, volume, from, to string) ([]chain.Extent, error) {
	p, err := encodeStrs(nil, volume, from, to)
	if err != nil {
		return nil, err
	}
	out := []chain.Extent{}
	var resume int64
	for {
		resp, err := c.do(ctx, opExtents, uint64(resume), 0, p, 0)
		if err != nil {
			return nil, err
		}
		if len(resp)%16 != 0 {
			return nil, c.protocolError(opExtents, fmt.Errorf("reply of %d bytes", len(resp)))
		}
		n := len(resp) / 16
		for i := 0; i < n; i++ {
			e := chain.Extent{
				Offset: int64(binary.BigEndian.Uint64(resp[16*i:])),
				Length: int64(binary.BigEndian.Uint64(resp[16*i+8:])),
			}
			if e.Offset < resume || e.Length <= 0 {
				return nil, c.protocolError(opExtents, fmt.Errorf("extent [%d, +%d) out of order", e.Offset, e.Length))
			}
			out = append(out, e)
			resume = e.Offset + e.Length
		}
		if n < maxExtentsPerReply {
			return out, nil
		}
	}
}

// Snapshots returns the names of the volume's snapshots on the server,
// oldest first.
func (c *Control) Snapshots(ctx context.Context, volume string) ([]string, error) {
	p, err := encodeStrs(nil, volume)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, opSnapshots, 0, 0, p, c.r.timeout)
	if err != nil {
		return nil, err
	}
	names, err := decodeStrs(resp, -1)
	if err != nil {
		return nil, c.protocolError(opSnapshots, err)
	}
	return names, nil
}

// DeleteSnapshot deletes the volume's snapshot on the server (see
// chain.Chain.DeleteSnapshot); a missing one is errdefs.ErrNotFound. It
// returns how many clones keep the snapshot's layers there.
func (c *Control) DeleteSnapshot(ctx context.Context, volume, snapshot string) (int, error) {
	p, err := encodeStrs(nil, volume, snapshot)
	if err != nil {
		return 0, err
	}
	resp, err := c.do(ctx, opDeleteSnapshot, 0, 0, p, c.r.timeout)
	if err != nil {
		return 0, err
	}
	if len(resp) != 8 || binary.BigEndian.Uint64(resp) > 1<<31 {
		return 0, c.protocolError(opDeleteSnapshot, fmt.Errorf("reply of %d bytes", len(resp)))
	}
	return int(binary.BigEndian.Uint64(resp)), nil
}

// DirtyRegions returns the byte offsets of the DirtyRegion-sized regions
// of the volume that the server's dirty-region log lists (see
// Epochs.DirtyRegions): where writes may have been in flight when the
// volume's last engine stopped.
func (c *Control) DirtyRegions(ctx context.Context, volume string) ([]int64, error) {
	p, err := encodeStrs(nil, volume)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, opDirty, 0, 0, p, c.r.timeout)
	if err != nil {
		return nil, err
	}
	if len(resp)%8 != 0 {
		return nil, c.protocolError(opDirty, fmt.Errorf("reply of %d bytes", len(resp)))
	}
	out := make([]int64, len(resp)/8)
	for i := range out {
		o := binary.BigEndian.Uint64(resp[8*i:])
		if o%DirtyRegion != 0 || o > 1<<62 || (i > 0 && int64(o) <= out[i-1]) {
			return nil, c.protocolError(opDirty, fmt.Errorf("region offset %d", o))
		}
		out[i] = int64(o)
	}
	return out, nil
}

// Clone makes volume dst on the server a thin clone of its snapshot
// src@snap (chain.Pool.Clone): size 0 keeps the snapshot's size.
func (c *Control) Clone(ctx context.Context, src, snap, dst string, size int64) error {
	if size < 0 {
		return fmt.Errorf("replica: clone %s@%s to %q: size %d: %w", src, snap, dst, size, errdefs.ErrInvalidArgument)
	}
	p, err := encodeStrs(nil, src, snap, dst)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, opClone, 0, uint64(size), p, c.r.timeout)
	return err
}

func (c *Control) protocolError(o op, err error) error {
	return fmt.Errorf("replica: %v on %s: bad reply: %v: %w", o, c.r.addr, err, errdefs.ErrUnavailable)
}

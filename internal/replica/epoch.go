package replica

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/strata-storage/strata/internal/atomicfile"
	"github.com/strata-storage/strata/internal/errdefs"
)

// ErrStaleEpoch is wrapped by every refusal of an older epoch: opening a
// volume at an epoch lower than the highest this node has seen for it, or
// I/O through a handle whose epoch a later open has overtaken. It wraps
// errdefs.ErrFailedPrecondition, so it maps to FailedPrecondition codes.
var ErrStaleEpoch = fmt.Errorf("stale epoch: %w", errdefs.ErrFailedPrecondition)

// Epochs remembers, per volume, the highest epoch this node has seen
// (architecture invariant 3), and fences the handles opened at older ones.
// It keeps one file per volume, <dir>/<volume>.epoch, holding the epoch in
// decimal, replaced crash-safely (temp file, fsync, rename, fsync dir) before
// a higher epoch is accepted, so that a restart never forgets an epoch it
// acknowledged.
//
// One Epochs must serve every replica of a pool on this node (the replica
// server and the Local replicas of engines alike): fencing works between
// handles of one Epochs, and the files belong to one process at a time.
//
// An epoch outlives its volume's chain: deleting a volume keeps its file,
// so a stale engine cannot write into a replica re-created under the same
// name; a re-created volume must be opened at an epoch at least as high.
//
// Epochs is safe for concurrent use.
type Epochs struct {
	dir string

	mu   sync.Mutex
	vols map[string]*volEpoch
}

// volEpoch is the fence of one volume. I/O holds mu shared for its whole
// duration; raising the epoch holds it exclusively, so that when Open
// returns, no I/O of an older handle is running or can start.
type volEpoch struct {
	mu     sync.RWMutex
	loaded bool   // cur was read from the file; guarded by mu
	cur    uint64 // guarded by mu
	// dirty is the volume's dirty-region log (see dirtyLog), which the
	// fenced writes of every handle mark.
	dirty *dirtyLog
}

// OpenEpochs returns the epoch store kept in dir, creating dir if needed.
// A pool's epochs conventionally live in the pool directory's "epochs"
// subdirectory.
func OpenEpochs(dir string) (*Epochs, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("replica: open epochs: %w", err)
	}
	// Leftovers of an interrupted write: the file they were to replace is
	// intact.
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("replica: open epochs: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.HasSuffix(e.Name(), ".tmp") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return &Epochs{dir: dir, vols: map[string]*volEpoch{}}, nil
}

func (e *Epochs) vol(volume string) *volEpoch {
	e.mu.Lock()
	defer e.mu.Unlock()
	v := e.vols[volume]
	if v == nil {
		v = &volEpoch{dirty: newDirtyLog(filepath.Join(e.dir, volume+".dirty"))}
		e.vols[volume] = v
	}
	return v
}

// DirtyRegions returns the byte offsets of the DirtyRegion-sized regions
// of volume that may have had writes in flight when its last engine
// stopped: those written through a fenced handle since the checkpoint
// before the last one. It is ErrDirtyUnknown when the log is unreadable.
func (e *Epochs) DirtyRegions(volume string) ([]int64, error) {
	if err := errdefs.ValidateName("volume", volume); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	return e.vol(volume).dirty.regions()
}

// DropDirty forgets volume's dirty-region log, file included (the volume
// was deleted). Its epoch stays.
func (e *Epochs) DropDirty(volume string) error {
	if err := errdefs.ValidateName("volume", volume); err != nil {
		return fmt.Errorf("replica: %w", err)
	}
	v := e.vol(volume)
	l := v.dirty
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.writing {
		l.cond.Wait()
	}
	if err := os.Remove(l.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replica: volume %q: remove the dirty-region log: %w", volume, err)
	}
	l.onDisk, l.cur, l.unknown, l.loaded = map[int64]struct{}{}, map[int64]struct{}{}, false, true
	return nil
}

func (e *Epochs) path(volume string) string {
	return filepath.Join(e.dir, volume+".epoch")
}

// load reads the volume's epoch from its file, once. Call with v.mu held
// exclusively.
func (e *Epochs) load(volume string, v *volEpoch) error {
	if v.loaded {
		return nil
	}
	data, err := os.ReadFile(e.path(volume))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		v.cur = 0
	case err != nil:
		return fmt.Errorf("replica: volume %q: read epoch: %w", volume, err)
	default:
		n, perr := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
		if perr != nil {
			return fmt.Errorf("replica: volume %q: corrupt epoch file %s: %w", volume, e.path(volume), errdefs.ErrFailedPrecondition)
		}
		v.cur = n
	}
	v.loaded = true
	return nil
}

// Current returns the highest epoch seen for volume, 0 if none.
func (e *Epochs) Current(volume string) (uint64, error) {
	if err := errdefs.ValidateName("volume", volume); err != nil {
		return 0, fmt.Errorf("replica: %w", err)
	}
	v := e.vol(volume)
	v.mu.RLock()
	if v.loaded {
		defer v.mu.RUnlock()
		return v.cur, nil
	}
	v.mu.RUnlock()
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := e.load(volume, v); err != nil {
		return 0, err
	}
	return v.cur, nil
}

// Open returns a fence for I/O on volume at epoch. An epoch lower than the
// highest seen is refused with an error wrapping ErrStaleEpoch; a higher
// one is persisted first, then accepted, and from then on every handle of
// an older epoch is refused. Open waits for the I/O in flight through
// older handles to end, so that none of it lands after Open returns.
// Opening at the current epoch again is allowed (a reconnecting engine).
func (e *Epochs) Open(volume string, epoch uint64) (*Fence, error) {
	if err := errdefs.ValidateName("volume", volume); err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	v := e.vol(volume)
	v.mu.RLock()
	if v.loaded && epoch <= v.cur {
		cur := v.cur
		v.mu.RUnlock()
		if epoch < cur {
			return nil, staleEpoch(volume, epoch, cur)
		}
		return &Fence{volume: volume, epoch: epoch, v: v}, nil
	}
	v.mu.RUnlock()

	v.mu.Lock()
	defer v.mu.Unlock()
	if err := e.load(volume, v); err != nil {
		return nil, err
	}
	if epoch < v.cur {
		return nil, staleEpoch(volume, epoch, v.cur)
	}
	if epoch > v.cur {
		data := []byte(strconv.FormatUint(epoch, 10) + "\n")
		if err := atomicfile.Write(filepath.Join(e.dir, volume+".epoch"), data, 0o644); err != nil {
			return nil, fmt.Errorf("replica: volume %q: persist epoch %d: %w", volume, epoch, err)
		}
		v.cur = epoch
	}
	return &Fence{volume: volume, epoch: epoch, v: v}, nil
}

func staleEpoch(volume string, epoch, cur uint64) error {
	return fmt.Errorf("replica: volume %q: epoch %d is older than epoch %d: %w", volume, epoch, cur, ErrStaleEpoch)
}

// Fence admits I/O on one volume at one epoch, as long as no later Open
// has raised the volume's epoch above it. A nil *Fence admits everything
// (an unfenced replica).
type Fence struct {
	volume string
	epoch  uint64
	v      *volEpoch
}

// Epoch returns the epoch the fence was opened at.
func (f *Fence) Epoch() uint64 { return f.epoch }

// Volume returns the volume the fence guards.
func (f *Fence) Volume() string { return f.volume }

// Check reports whether I/O is still admitted: nil, or an error wrapping
// ErrStaleEpoch.
func (f *Fence) Check() error {
	if err := f.enter(); err != nil {
		return err
	}
	f.leave()
	return nil
}

// enter admits one I/O, which must call leave when done; while it runs no
// Open can raise the epoch.
func (f *Fence) enter() error {
	if f == nil {
		return nil
	}
	f.v.mu.RLock()
	if cur := f.v.cur; cur > f.epoch {
		f.v.mu.RUnlock()
		return staleEpoch(f.volume, f.epoch, cur)
	}
	return nil
}

// mark records in the volume's dirty-region log that [off, off+n) is
// about to change; called between enter and leave.
func (f *Fence) mark(off, n int64) error {
	if f == nil {
		return nil
	}
	return f.v.dirty.mark(off, n)
}

func (f *Fence) leave() {
	if f != nil {
		f.v.mu.RUnlock()
	}
}

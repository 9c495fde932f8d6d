package chain

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-storage/strata/internal/errdefs"
)

// MaxSize is the largest volume a chain holds (the index keeps a pointer per
// 4 MiB of volume).
const MaxSize = 64 << 40

// chainMeta is the content of chains/<name>.json.
type chainMeta struct {
	Name      string     `json:"name"`
	Size      int64      `json:"size"`
	Layers    []string   `json:"layers"` // bottom..head
	Snapshots []snapMeta `json:"snapshots,omitempty"`
	Parent    string     `json:"parent,omitempty"`
}

type snapMeta struct {
	Name    string    `json:"name"`
	Layer   string    `json:"layer"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

func (m *chainMeta) clone() *chainMeta {
	n := *m
	n.Layers = append([]string(nil), m.Layers...)
	n.Snapshots = append([]snapMeta(nil), m.Snapshots...)
	return &n
}

func (m *chainMeta) head() string { return m.Layers[len(m.Layers)-1] }

func (m *chainMeta) layerPos(id string) int {
	for i, l := range m.Layers {
		if l == id {
			return i
		}
	}
	return -1
}

func (m *chainMeta) snapshot(name string) (int, *snapMeta) {
	for i := range m.Snapshots {
		if m.Snapshots[i].Name == name {
			return i, &m.Snapshots[i]
		}
	}
	return -1, nil
}

// Pool is a directory holding chains and their layers. All chains of a pool
// share its layer files; a layer is removed when no chain lists it.
//
// Locking: p.mu guards the metadata of every chain, the layer table and the
// set of open chains, and serializes metadata writes. A chain's own mu guards
// its index and head. Order: p.mu before any Chain.mu.
type Pool struct {
	dir string

	mu     sync.Mutex
	closed bool
	metas  map[string]*chainMeta
	chains map[string]*Chain
	layers map[string]*layer

	// The merge worker (see merge.go).
	kick        chan struct{}
	stop        chan struct{}
	done        chan struct{}
	idle        *sync.Cond // on mu: broadcast when the worker goes idle
	mergeBusy   bool
	mergeKicked bool
	mergeErr    error
	mergeFailed map[string]bool // layers whose merge failed since the last kick
}

// OpenPool opens (creating it if missing) the pool in dir, finishes or rolls
// back any operation a crash interrupted, and removes layers no chain uses.
// Reference counts are derived from the chains' metadata, never stored.
// Snapshot deletes that a crash interrupted resume in the background.
func OpenPool(dir string) (*Pool, error) {
	for _, d := range []string{dir, filepath.Join(dir, "layers"), filepath.Join(dir, "chains")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("chain: open pool: %w", err)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return nil, fmt.Errorf("chain: open pool: statfs: %w", err)
	}
	if st.Bsize > BlockSize {
		// SEEK_DATA would report whole filesystem blocks as data, hiding
		// lower layers' blocks next to the ones written.
		return nil, fmt.Errorf("chain: open pool: filesystem block size %d is larger than %d: %w", st.Bsize, BlockSize, errdefs.ErrFailedPrecondition)
	}
	p := &Pool{
		dir:         dir,
		metas:       map[string]*chainMeta{},
		chains:      map[string]*Chain{},
		layers:      map[string]*layer{},
		kick:        make(chan struct{}, 1),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		mergeFailed: map[string]bool{},
	}
	p.idle = sync.NewCond(&p.mu)
	ents, err := os.ReadDir(filepath.Join(dir, "chains"))
	if err != nil {
		return nil, fmt.Errorf("chain: open pool: %w", err)
	}
	for _, e := range ents {
		path := filepath.Join(dir, "chains", e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			os.Remove(path) // interrupted metadata write
			continue
		}
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("chain: open pool: %w", err)
		}
		var m chainMeta
		if err := json.Unmarshal(data, &m); err != nil || len(m.Layers) == 0 {
			return nil, fmt.Errorf("chain: open pool: corrupt metadata %s: %v", path, err)
		}
		p.metas[m.Name] = &m
	}
	p.recount()
	// Garbage: layers no chain lists, temp files, the zero log of sealed
	// layers and the map a crash left on a head (a snapshot that never
	// committed).
	heads := map[string]bool{}
	for _, m := range p.metas {
		heads[m.head()] = true
	}
	ents, err = os.ReadDir(filepath.Join(dir, "layers"))
	if err != nil {
		return nil, fmt.Errorf("chain: open pool: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		id, ext, _ := strings.Cut(name, ".")
		_, used := p.layers[id]
		if strings.HasPrefix(name, ".") || !used ||
			(ext == "zero" && !heads[id]) || (ext == "map" && heads[id]) {
			os.Remove(filepath.Join(dir, "layers", name))
		}
	}
	go p.mergeWorker()
	p.kickMerges()
	return p, nil
}

// recount derives the reference count of every layer from the chains'
// metadata and removes the layers nobody lists. Call with p.mu held.
func (p *Pool) recount() {
	for _, l := range p.layers {
		l.refs = 0
	}
	for _, m := range p.metas {
		for _, id := range m.Layers {
			l := p.layers[id]
			if l == nil {
				l = &layer{id: id}
				p.layers[id] = l
			}
			l.refs++
		}
	}
	for id, l := range p.layers {
		if l.refs == 0 && l.pins == 0 {
			p.removeLayer(id)
		}
	}
}

func (p *Pool) removeLayer(id string) {
	if l := p.layers[id]; l != nil {
		l.close()
	}
	delete(p.layers, id)
	for _, ext := range []string{".data", ".map", ".zero"} {
		os.Remove(p.layerPath(id, ext))
	}
}

func (p *Pool) writeMeta(m *chainMeta) error {
	data, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return fmt.Errorf("chain: %w", err)
	}
	return writeFileAtomic(filepath.Join(p.dir, "chains"), m.Name+".json", data)
}

func newLayerID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// newHeadFiles creates the empty data file and zero log of a new head.
func (p *Pool) newHeadFiles() (string, error) {
	id := newLayerID()
	for _, ext := range []string{".data", ".zero"} {
		f, err := os.OpenFile(p.layerPath(id, ext), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			os.Remove(p.layerPath(id, ".data"))
			return "", fmt.Errorf("chain: new layer: %w", err)
		}
		f.Close()
	}
	if err := syncDir(filepath.Join(p.dir, "layers")); err != nil {
		return "", fmt.Errorf("chain: new layer: %w", err)
	}
	return id, nil
}

func (p *Pool) errClosed() error {
	return fmt.Errorf("chain: pool closed: %w", errdefs.ErrFailedPrecondition)
}

// Close stops background merges, then flushes and closes every open chain of
// the pool. An interrupted merge resumes at the next OpenPool.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	var first error
	for _, c := range p.chains {
		c.mu.Lock()
		if err := c.close(); err != nil && first == nil {
			first = err
		}
		c.mu.Unlock()
	}
	p.chains = map[string]*Chain{}
	for _, l := range p.layers {
		l.close()
	}
	p.idle.Broadcast()
	return first
}

func validSize(size int64) error {
	if size <= 0 || size%BlockSize != 0 || size > MaxSize {
		return fmt.Errorf("chain: size %d must be a positive multiple of %d up to %d: %w", size, BlockSize, int64(MaxSize), errdefs.ErrInvalidArgument)
	}
	return nil
}

// Create makes an empty chain of size bytes (a multiple of BlockSize).
// Creating a chain that exists with the same size returns it (idempotent);
// with another size it fails with errdefs.ErrAlreadyExists.
func (p *Pool) Create(name string, size int64) (*Chain, error) {
	if err := errdefs.ValidateName("volume", name); err != nil {
		return nil, err
	}
	if err := validSize(size); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, p.errClosed()
	}
	if m := p.metas[name]; m != nil {
		if m.Size != size || m.Parent != "" {
			return nil, fmt.Errorf("chain: volume %q exists with size %d: %w", name, m.Size, errdefs.ErrAlreadyExists)
		}
		return p.openLocked(name, false)
	}
	id, err := p.newHeadFiles()
	if err != nil {
		return nil, err
	}
	m := &chainMeta{Name: name, Size: size, Layers: []string{id}}
	if err := p.writeMeta(m); err != nil {
		p.removeLayer(id)
		return nil, err
	}
	p.metas[name] = m
	p.recount()
	return p.openLocked(name, true)
}

// Open returns the chain called name. The pool keeps one open handle per
// chain and returns it to every caller; it stays open until Delete or Close.
// A missing chain is errdefs.ErrNotFound.
func (p *Pool) Open(name string) (*Chain, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, p.errClosed()
	}
	if p.metas[name] == nil {
		return nil, fmt.Errorf("chain: volume %q: %w", name, errdefs.ErrNotFound)
	}
	return p.openLocked(name, false)
}

// Clone makes chain dst whose lower layers are the layers of src up to its
// snapshot snap, plus an empty head: O(1) whatever the size. size is the
// new chain's size; 0 means the snapshot's size; smaller is an error.
// Cloning again with the same source and size returns the existing clone.
func (p *Pool) Clone(src, snap, dst string, size int64) (*Chain, error) {
	if err := errdefs.ValidateName("volume", dst); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, p.errClosed()
	}
	sm := p.metas[src]
	if sm == nil {
		return nil, fmt.Errorf("chain: clone source %q: %w", src, errdefs.ErrNotFound)
	}
	_, s := sm.snapshot(snap)
	if s == nil {
		return nil, fmt.Errorf("chain: snapshot %s@%s: %w", src, snap, errdefs.ErrNotFound)
	}
	if size == 0 {
		size = s.Size
	}
	if err := validSize(size); err != nil {
		return nil, err
	}
	if size < s.Size {
		return nil, fmt.Errorf("chain: clone size %d is smaller than snapshot size %d: %w", size, s.Size, errdefs.ErrInvalidArgument)
	}
	parent := src + "@" + snap
	if m := p.metas[dst]; m != nil {
		if m.Parent == parent && m.Size == size {
			return p.openLocked(dst, false)
		}
		return nil, fmt.Errorf("chain: volume %q: %w", dst, errdefs.ErrAlreadyExists)
	}
	pos := sm.layerPos(s.Layer)
	id, err := p.newHeadFiles()
	if err != nil {
		return nil, err
	}
	m := &chainMeta{Name: dst, Size: size, Parent: parent}
	m.Layers = append(append([]string(nil), sm.Layers[:pos+1]...), id)
	if err := p.writeMeta(m); err != nil {
		p.removeLayer(id)
		return nil, err
	}
	p.metas[dst] = m
	p.recount()
	return p.openLocked(dst, true)
}

// Delete closes and removes chain name. Layers that other chains still use
// stay until their last user is gone; layers that only this chain named and
// that other chains use are merged into their upper neighbour when that is
// possible. Deleting a missing chain is errdefs.ErrNotFound.
func (p *Pool) Delete(name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return p.errClosed()
	}
	if p.metas[name] == nil {
		return fmt.Errorf("chain: volume %q: %w", name, errdefs.ErrNotFound)
	}
	if c := p.chains[name]; c != nil {
		c.mu.Lock()
		c.close()
		c.mu.Unlock()
		delete(p.chains, name)
	}
	if err := os.Remove(filepath.Join(p.dir, "chains", name+".json")); err != nil {
		return fmt.Errorf("chain: delete %q: %w", name, err)
	}
	if err := syncDir(filepath.Join(p.dir, "chains")); err != nil {
		return fmt.Errorf("chain: delete %q: %w", name, err)
	}
	delete(p.metas, name)
	p.recount()
	p.kickMergesLocked()
	return nil
}

// List returns the names of the pool's chains, sorted.
func (p *Pool) List() ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, p.errClosed()
	}
	names := make([]string, 0, len(p.metas))
	for n := range p.metas {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Usage reports the space of the pool's filesystem and of its layers.
func (p *Pool) Usage() (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p.dir, &st); err != nil {
		return Usage{}, fmt.Errorf("chain: statfs: %w", err)
	}
	u := Usage{
		Capacity:  int64(st.Blocks) * int64(st.Bsize),
		Available: int64(st.Bavail) * int64(st.Bsize),
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.layers {
		for _, ext := range []string{".data", ".map", ".zero"} {
			u.Allocated += allocated(p.layerPath(id, ext))
		}
	}
	return u, nil
}

// openLocked returns the open handle of chain name, opening it if needed.
// fresh says the head was just created (no scan needed).
func (p *Pool) openLocked(name string, fresh bool) (*Chain, error) {
	if c := p.chains[name]; c != nil {
		return c, nil
	}
	c, err := p.loadChain(p.metas[name], fresh)
	if err != nil {
		return nil, err
	}
	p.chains[name] = c
	return c, nil
}

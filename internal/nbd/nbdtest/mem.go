// Package nbdtest holds test doubles for code that serves or consumes NBD
// backends: a device in memory, so that tests and benchmarks measure the
// server rather than a store.
package nbdtest

import "sync"

// Mem is a growable device in memory. It implements nbd.Backend and is safe
// for concurrent use.
type Mem struct {
	mu   sync.RWMutex
	data []byte
}

// NewMem returns a zeroed device of size bytes.
func NewMem(size int64) *Mem { return &Mem{data: make([]byte, size)} }

func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return copy(p, m.data[off:]), nil
}

func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.data[off:], p), nil
}

func (m *Mem) Flush() error { return nil }

func (m *Mem) Trim(off, length int64) error { return m.WriteZeroes(off, length) }

func (m *Mem) WriteZeroes(off, length int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+length])
	return nil
}

func (m *Mem) Size() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int64(len(m.data))
}

// Grow raises the size to size bytes; the new part reads as zeros.
func (m *Mem) Grow(size int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if size > int64(len(m.data)) {
		m.data = append(m.data, make([]byte, size-int64(len(m.data)))...)
	}
}

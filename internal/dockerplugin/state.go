package dockerplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// volumeState is what the plugin remembers about one volume on this node.
type volumeState struct {
	// FS is the filesystem asked for at create time, made on first mount.
	FS string `json:"fs,omitempty"`
	// Mounts are the Docker mount IDs that use the volume on this node.
	Mounts []string `json:"mounts,omitempty"`
}

// stateFile is the plugin's state, kept in memory and saved to one JSON file
// after every change, crash-safely (temp file, fsync, rename, fsync dir).
type stateFile struct {
	path string

	mu   sync.Mutex
	vols map[string]volumeState
}

type stateDoc struct {
	Version int                    `json:"version"`
	Volumes map[string]volumeState `json:"volumes"`
}

func loadState(path string) (*stateFile, error) {
	s := &stateFile{path: path, vols: map[string]volumeState{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (move it away to start with no mount counts): %w", path, err)
	}
	for name, v := range doc.Volumes {
		s.vols[name] = v
	}
	return s, nil
}

// get returns a copy of the volume's state (the zero value when unknown).
func (s *stateFile) get(name string) volumeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vols[name]
	v.Mounts = slices.Clone(v.Mounts)
	return v
}

// all returns a copy of every volume's state.
func (s *stateFile) all() map[string]volumeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]volumeState, len(s.vols))
	for name, v := range s.vols {
		v.Mounts = slices.Clone(v.Mounts)
		out[name] = v
	}
	return out
}

// update changes one volume's state and saves; on a failed save the change
// is undone in memory too.
func (s *stateFile) update(name string, fn func(*volumeState)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.vols[name]
	v := old
	v.Mounts = slices.Clone(old.Mounts)
	fn(&v)
	if v.FS == "" && len(v.Mounts) == 0 {
		delete(s.vols, name)
	} else {
		s.vols[name] = v
	}
	if err := s.saveLocked(); err != nil {
		if had {
			s.vols[name] = old
		} else {
			delete(s.vols, name)
		}
		return err
	}
	return nil
}

// remove forgets a volume and saves.
func (s *stateFile) remove(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.vols[name]
	if !had {
		return nil
	}
	delete(s.vols, name)
	if err := s.saveLocked(); err != nil {
		s.vols[name] = old
		return err
	}
	return nil
}

func (s *stateFile) saveLocked() error {
	b, err := json.MarshalIndent(stateDoc{Version: 1, Volumes: s.vols}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return writeFileAtomic(s.path, append(b, '\n'))
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new content: temp file, fsync, rename, fsync of the directory.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("save state: sync %s: %w", dir, err)
	}
	return nil
}

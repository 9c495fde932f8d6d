package chain

import (
	"context"
	"errors"
	"fmt"
	"sort"
)

// Merges. A sealed layer L that no snapshot names (its snapshot was deleted,
// or the chain that named it is gone) is merged into the layer U above it
// once every chain listing L has U directly above it; chains listing L
// without U (clones of L's snapshot) keep L alive until they are deleted.
//
// The merge copies into U every block of L that is visible through U and
// adds L's zero runs to U. Every intermediate state reads the same through U
// for every chain listing L under U, so a crash mid-merge is harmless: the
// layer is still listed and unnamed, and OpenPool resumes the merge. When
// done it rewrites U's map (sealed U) or extends its zero log (head U), then
// the metadata of every chain listing L, then L's files go.
//
// Design change: one merge worker per pool rather than per chain: a merge
// into a shared sealed layer touches several chains, and serial merges keep
// the background I/O of a busy pool bounded. The worker stops in Pool.Close.

var errAborted = errors.New("chain: merge aborted")

type mergeJob struct {
	l, u string
	c    *Chain // chain whose head is u, or nil when u is sealed
}

// kickMergesLocked asks the worker to look for merges. Call with p.mu held.
func (p *Pool) kickMergesLocked() {
	p.mergeFailed = map[string]bool{}
	p.mergeKicked = true
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *Pool) kickMerges() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kickMergesLocked()
}

// WaitMerges blocks until no merge is running or pending. It returns the
// last merge error when a merge failed (it is retried at the next snapshot
// delete, volume delete or OpenPool).
func (p *Pool) WaitMerges(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.idle.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed {
			return p.errClosed()
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !p.mergeBusy && !p.mergeKicked {
			if len(p.mergeFailed) > 0 {
				return p.mergeErr
			}
			return nil
		}
		p.idle.Wait()
	}
}

func (p *Pool) mergeWorker() {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		case <-p.kick:
		}
		for {
			p.mu.Lock()
			p.mergeKicked = false
			var job *mergeJob
			if !p.closed {
				job = p.nextMergeLocked()
			}
			if job == nil {
				p.mergeBusy = false
				p.idle.Broadcast()
				p.mu.Unlock()
				break
			}
			p.mergeBusy = true
			p.layers[job.l].pins++
			p.layers[job.u].pins++
			p.mu.Unlock()

			err := p.merge(job)

			p.mu.Lock()
			if l := p.layers[job.l]; l != nil {
				l.pins--
			}
			if u := p.layers[job.u]; u != nil {
				u.pins--
			}
			if err != nil && !errors.Is(err, errAborted) {
				p.mergeErr = err
				p.mergeFailed[job.l] = true
			}
			p.recount()
			p.mu.Unlock()
			select {
			case <-p.stop:
				p.mu.Lock()
				p.mergeBusy = false
				p.idle.Broadcast()
				p.mu.Unlock()
				return
			default:
			}
		}
	}
}

// nextMergeLocked finds a layer to merge, opening the chain whose head it
// merges into. Call with p.mu held.
func (p *Pool) nextMergeLocked() *mergeJob {
	named := map[string]bool{}
	above := map[string]map[string]bool{}
	names := make([]string, 0, len(p.metas))
	for name, m := range p.metas {
		names = append(names, name)
		for _, s := range m.Snapshots {
			named[s.Layer] = true
		}
		for i, id := range m.Layers {
			next := ""
			if i+1 < len(m.Layers) {
				next = m.Layers[i+1]
			}
			if above[id] == nil {
				above[id] = map[string]bool{}
			}
			above[id][next] = true
		}
	}
	sort.Strings(names)
	for _, name := range names {
		m := p.metas[name]
		for i, id := range m.Layers[:len(m.Layers)-1] {
			if named[id] || p.mergeFailed[id] || len(above[id]) != 1 {
				continue
			}
			job := &mergeJob{l: id, u: m.Layers[i+1]}
			if job.u == m.head() {
				c, err := p.openLocked(name, false)
				if err != nil {
					p.mergeErr = err
					p.mergeFailed[id] = true
					continue
				}
				job.c = c
			}
			return job
		}
	}
	return nil
}

func (p *Pool) stopping() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

const mergeBatch = 256 // blocks copied per lock hold

func (p *Pool) merge(job *mergeJob) error {
	lAlloc, lZero, err := p.readMap(job.l)
	if err != nil {
		return err
	}
	p.mu.Lock()
	ll, ul := p.layers[job.l], p.layers[job.u]
	p.mu.Unlock()
	lf, err := ll.file(p)
	if err != nil {
		return err
	}
	if job.c != nil {
		return p.mergeIntoHead(job, lf, lAlloc, lZero)
	}
	uAlloc, uZero, err := p.readMap(job.u)
	if err != nil {
		return err
	}
	uf, err := ul.file(p)
	if err != nil {
		return err
	}
	toCopy := subtract(subtract(lAlloc, uAlloc), uZero)
	buf := make([]byte, mergeBatch*BlockSize)
	for _, r := range toCopy {
		for s := r.start; s < r.end(); s += mergeBatch {
			if p.stopping() {
				return errAborted
			}
			n := min(r.end()-s, mergeBatch)
			b := buf[:n*BlockSize]
			if _, err := lf.ReadAt(b, s*BlockSize); err != nil {
				return fmt.Errorf("chain: merge read: %w", err)
			}
			if _, err := uf.WriteAt(b, s*BlockSize); err != nil {
				return fmt.Errorf("chain: merge write: %w", err)
			}
		}
	}
	if err := fdatasync(uf); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	users, ok := p.mergeableLocked(job)
	if !ok {
		return errAborted
	}
	if err := p.writeMap(job.u, union(uAlloc, toCopy), union(uZero, lZero)); err != nil {
		return err
	}
	return p.dropMergedLocked(job, users)
}

// mergeableLocked re-checks, at commit time, that every chain listing L has
// U directly above it and that no snapshot names L; it returns those chains.
func (p *Pool) mergeableLocked(job *mergeJob) ([]*chainMeta, bool) {
	var users []*chainMeta
	for _, m := range p.metas {
		for _, s := range m.Snapshots {
			if s.Layer == job.l {
				return nil, false
			}
		}
		k := m.layerPos(job.l)
		if k < 0 {
			continue
		}
		if k+1 >= len(m.Layers) || m.Layers[k+1] != job.u {
			return nil, false
		}
		users = append(users, m)
	}
	sort.Slice(users, func(i, j int) bool { return users[i].Name < users[j].Name })
	return users, len(users) > 0
}

// dropMergedLocked removes L from the metadata of every chain listing it and
// renumbers L as U in their indexes. Call with p.mu held.
func (p *Pool) dropMergedLocked(job *mergeJob, users []*chainMeta) error {
	for _, m := range users {
		nm := m.clone()
		nm.Layers = append(nm.Layers[:nm.layerPos(job.l)], nm.Layers[nm.layerPos(job.l)+1:]...)
		c := p.chains[m.Name]
		if c != nil {
			c.mu.Lock()
		}
		err := p.commit(c, nm)
		if err == nil && c != nil {
			from, to := c.slotOf[job.l], c.slotOf[job.u]
			c.idx.remap(from, to)
			c.slots[from] = nil
			delete(c.slotOf, job.l)
		}
		if c != nil {
			c.mu.Unlock()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// mergeIntoHead copies L's blocks that the chain's index still shows from L
// into the head, in batches under the chain's lock so that concurrent writes
// win, then adds L's zero runs to the head's zero log.
func (p *Pool) mergeIntoHead(job *mergeJob, lf interface {
	ReadAt([]byte, int64) (int, error)
}, lAlloc, lZero []run) error {
	c := job.c
	c.mu.RLock()
	gen, closed := c.headGen, c.closed
	c.mu.RUnlock()
	if closed {
		return errAborted
	}
	valid := func() bool { return !c.closed && c.headGen == gen && c.meta.head() == job.u }
	buf := make([]byte, mergeBatch*BlockSize)
	for _, r := range lAlloc {
		for s := r.start; s < r.end(); s += mergeBatch {
			if p.stopping() {
				return errAborted
			}
			e := min(r.end(), s+mergeBatch)
			c.mu.Lock()
			if !valid() {
				c.mu.Unlock()
				return errAborted
			}
			from := c.slotOf[job.l]
			e = min(e, c.meta.Size/BlockSize)
			for b := s; b < e; {
				v, n := c.idx.run(b, e-b)
				if v == from {
					chunk := buf[:n*BlockSize]
					if _, err := lf.ReadAt(chunk, b*BlockSize); err != nil {
						c.mu.Unlock()
						return fmt.Errorf("chain: merge read: %w", err)
					}
					if _, err := c.headF.WriteAt(chunk, b*BlockSize); err != nil {
						c.mu.Unlock()
						return fmt.Errorf("chain: merge write: %w", err)
					}
					c.idx.set(b, n, c.headSlot)
				}
				b += n
			}
			c.mu.Unlock()
		}
	}
	c.mu.Lock()
	if !valid() {
		c.mu.Unlock()
		return errAborted
	}
	err := c.appendZero(lZero)
	if err == nil {
		err = fdatasync(c.headF)
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	users, ok := p.mergeableLocked(job)
	if !ok || len(users) != 1 || users[0].Name != c.name {
		return errAborted
	}
	c.mu.Lock()
	ok = valid()
	c.mu.Unlock()
	if !ok {
		return errAborted
	}
	return p.dropMergedLocked(job, users)
}

package e2e

// Fault tests that try to lose data of replicated volumes: a real
// three-node cluster (repl_harness_test.go), a writer of self-describing
// blocks over NBD, nodes killed with SIGKILL, a full disk, a restart of the
// whole cluster. Each ends with every write that had to survive read back
// through the volume's engine node and `strata volume check` finding the
// replicas on all three nodes identical.

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const replVolSize = 64 << 20

// replSetup makes a cluster and a volume with 3 replicas whose engine
// runs on r1 (created through r1), and a writer pointed at r1.
func replSetup(t *testing.T, vol string, size int64, prepare func(int, string)) (*replCluster, *replWriter) {
	t.Helper()
	c := newReplCluster(t, prepare)
	r1 := c.node("r1")
	r1.run("volume", "create", vol, "--size", fmt.Sprint(size), "--repl", "3")
	if v := c.inspect(vol); v.Node != "r1" || !v.allInSync() || len(v.Replicas) != 3 {
		t.Fatalf("new volume: %s", v)
	}
	w := newReplWriter(t, vol, size, 4, 16)
	w.setAddr(r1.nbd)
	return c, w
}

// TestReplReplicaKilled: SIGKILL of a replica's node (not the engine's)
// during writes. Writes go on, the volume degraded; the node restarts, is
// killed again while its replica catches up, restarts again, and its
// replica catches up while the writes continue.
func TestReplReplicaKilled(t *testing.T) {
	c, w := replSetup(t, "rk", replVolSize, nil)
	w.start()
	w.waitAcked(0, 4<<20, 30*time.Second, "writes before the kill")

	c.node("r3").kill9()
	at := w.ackedBytes.Load()
	c.waitVolume("rk", "degraded with r3 out", 30*time.Second, func(v replVolume) bool {
		return v.Degraded && v.mode("r3") == "out" && v.mode("r1") == "in-sync" && v.mode("r2") == "in-sync"
	})
	w.waitAcked(at, 4<<20, 30*time.Second, "writes with r3 dead")

	// r3 returns and dies again as soon as its catch-up starts (or, if
	// that was too quick to see, once it is back in sync).
	c.node("r3").start()
	deadline := time.Now().Add(60 * time.Second)
	for {
		v := c.inspect("rk")
		if m := v.mode("r3"); m != "out" {
			c.node("r3").kill9()
			t.Logf("r3 killed again, its replica %s: %s", m, v)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r3's replica does not start catching up: %s\n%s", v, c.logs())
		}
	}
	at = w.ackedBytes.Load()
	w.waitAcked(at, 4<<20, 30*time.Second, "writes with r3 dead again")
	// The engine writes no more to r3: its replica is out (a replica out
	// for 10 minutes is replaced; one that stays catching-up is not).
	waitNodeState(t, c.node("r1"), "r3", "offline", replTTL+20*time.Second)
	if v := c.inspect("rk"); v.mode("r3") != "out" {
		t.Errorf("r3 died while its replica was catching up and is offline, but its replica is not out, so it would never be replaced: %s", v)
	}

	c.node("r3").start()
	c.endWithoutErrors("rk", w, "after r3's return", "while a replica died")
}

// endWithoutErrors ends a test whose writes had to go on through the fault
// (what): vol gets all replicas in sync again (when) and more writes are
// acknowledged; then no write or connection may have failed, every
// acknowledged write must read back through r1, and check must find the
// replicas identical.
func (c *replCluster) endWithoutErrors(vol string, w *replWriter, when, what string) {
	t := c.t
	t.Helper()
	c.waitVolume(vol, "all in sync "+when, 60*time.Second, replVolume.allInSync)
	w.waitAcked(w.ackedBytes.Load(), 1<<20, 30*time.Second, "writes after the catch-up")
	w.halt()
	if n := w.errnos.Load() + w.dropped.Load(); n != 0 {
		t.Errorf("%d writes or flushes failed and %d connections were lost %s; first error: %s",
			w.errnos.Load(), w.dropped.Load(), what, w.firstErrnoMsg())
	}
	t.Logf("%d writes acknowledged (%d MiB); catch-ups of r3: %v bytes", w.acks.Load(), w.ackedBytes.Load()>>20, caughtUp(c.node("r1"), vol, "r3"))
	w.verify(c.node("r1").nbd, everyAcked)
	c.check(vol, w)
}

// TestReplEngineKilled: SIGKILL of the engine's node during writes, twice.
// Each time the volume is attached to another node through a third node's
// API, with every acknowledged write; the writer reconnects there; the
// dead node restarts and its replica catches up while writes go on. The
// second time, the engine moves back to the node that was caught up.
func TestReplEngineKilled(t *testing.T) {
	c, w := replSetup(t, "ek", replVolSize, nil)
	w.start()
	w.waitAcked(0, 4<<20, 30*time.Second, "writes before the kill")
	for round, f := range []struct{ dead, to, via string }{{"r1", "r2", "r3"}, {"r2", "r1", "r3"}} {
		before := c.inspect("ek")
		c.node(f.dead).kill9()
		acked := w.ackedBytes.Load()
		// Retried while the cluster is busy noticing the death (etcd
		// elects a new leader when the dead node led it).
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, errOut, err := c.node(f.via).try("volume", "attach", "ek", "--node", f.to)
			if err == nil {
				t.Logf("attach through %s: %s", f.via, out)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("volume attach ek --node %s through %s: %v\n%s\n%s", f.to, f.via, err, errOut, c.logs())
			}
			t.Logf("attach refused (retried): %s", errOut)
			time.Sleep(500 * time.Millisecond)
		}
		v := c.inspect("ek")
		if v.Node != f.to || v.epoch() <= before.epoch() || v.mode(f.dead) == "in-sync" {
			t.Fatalf("after the attach on %s: %s (epoch before %s)", f.to, v, before.Epoch)
		}
		w.setAddr(c.node(f.to).nbd)
		w.waitAcked(acked, 4<<20, 30*time.Second, "writes through "+f.to)

		seq := w.seq.Load()
		c.node(f.dead).start()
		c.waitVolume("ek", "all in sync after "+f.dead+"'s return", 60*time.Second, replVolume.allInSync)
		t.Logf("writes seq %d to %d were issued between %s's restart and its return to the in-sync set; catch-ups of %s: %v bytes",
			seq+1, w.seq.Load(), f.dead, f.dead, caughtUp(c.node(f.to), "ek", f.dead))
		w.waitAcked(w.ackedBytes.Load(), 1<<20, 30*time.Second, "writes after the catch-up")
		if round == 0 {
			// Not fatal: the next failover shows what a difference costs.
			if out, errOut, err := c.node(f.to).try("volume", "check", "ek", "--region", "64KiB"); err != nil {
				t.Errorf("after the first failover and %s's catch-up, volume check ek: %v\n%s%s", f.dead, err, out, errOut)
			}
		}
	}
	w.halt()
	if n := w.errnos.Load(); n != 0 {
		t.Errorf("%d writes or flushes answered with an error; first: %s", n, w.firstErrnoMsg())
	}
	t.Logf("%d writes acknowledged (%d MiB), %d connections lost to the kills", w.acks.Load(), w.ackedBytes.Load()>>20, w.dropped.Load())
	w.verify(c.node("r1").nbd, everyAcked)
	c.check("ek", w)
}

// TestReplReplicaDiskFull: r3's pool is on a 256 MiB filesystem, filled
// during writes. Writes go on with r3's replica out; once space is freed
// the replica catches up.
func TestReplReplicaDiskFull(t *testing.T) {
	needRoot(t)
	needTools(t, "mkfs.ext4", "mount", "umount", "truncate")
	var pool string
	c, w := replSetup(t, "df", replVolSize, func(i int, dir string) {
		if i == 2 {
			pool = filepath.Join(dir, "data", "pool")
			mountSmallFS(t, pool, 256<<20)
		}
	})
	w.start()
	w.waitAcked(0, 4<<20, 30*time.Second, "writes before the disk fills")

	filler := filepath.Join(pool, "filler")
	n := fillFS(t, filler)
	t.Logf("r3's pool filesystem filled with %d MiB", n>>20)
	at := w.ackedBytes.Load()
	// r3 stays online: the engine tries to catch its replica up again
	// and again, so it is out or catching-up.
	c.waitVolume("df", "degraded with r3 not in sync", 30*time.Second, func(v replVolume) bool {
		return v.Degraded && v.mode("r3") != "in-sync" && v.mode("r1") == "in-sync" && v.mode("r2") == "in-sync"
	})
	w.waitAcked(at, 4<<20, 30*time.Second, "writes with r3's disk full")

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	c.endWithoutErrors("df", w, "once r3 has space", "while a replica's disk was full")
}

// TestReplClusterRestart: the whole cluster is stopped with SIGTERM during
// writes and started again: every acknowledged write is there. Then it is
// killed with SIGKILL during writes and started again: every write
// acknowledged before a successful flush is there. Each time the replicas
// end up identical.
func TestReplClusterRestart(t *testing.T) {
	c, w := replSetup(t, "cr", replVolSize, nil)
	r1 := c.node("r1")
	w.start()
	w.waitAcked(0, 4<<20, 30*time.Second, "writes before the stop")
	c.stopAll()
	w.halt()
	c.startAll()
	c.waitVolume("cr", "all in sync after the restart", 60*time.Second, replVolume.allInSync)
	w.verify(r1.nbd, everyAcked)
	c.check("cr", w)

	// Writes go on after the restart; then SIGKILL of every node.
	w.start()
	w.waitAcked(w.ackedBytes.Load(), 4<<20, 30*time.Second, "writes after the restart")
	for _, n := range c.nodes {
		n.kill9()
	}
	w.halt()
	c.startAll()
	c.waitVolume("cr", "all in sync after the SIGKILLs", 60*time.Second, replVolume.allInSync)
	lost := w.verify(r1.nbd, flushedOnly)
	t.Logf("%d blocks lost an acknowledged write not yet flushed (allowed after SIGKILL of every node)", lost)
	c.check("cr", w)
	// Writes under way when the nodes stop may fail: not an error.
	t.Logf("%d writes acknowledged (%d MiB), %d answered with an error (first: %s), %d connections lost",
		w.acks.Load(), w.ackedBytes.Load()>>20, w.errnos.Load(), w.firstErrnoMsg(), w.dropped.Load())
}

// TestReplCatchUpCopiesOnlyWhatWasMissed: with 128 MiB written, a replica
// is out while 24 MiB more are written; when it returns, the catch-up
// copies at most 1.5 times what was written meanwhile, not the volume.
func TestReplCatchUpCopiesOnlyWhatWasMissed(t *testing.T) {
	const size = 256 << 20
	c, w := replSetup(t, "cu", size, nil)
	r1 := c.node("r1")
	w.fill(0, (128<<20)/replBlock)
	t.Logf("filled 128 MiB")
	w.maxBlocks = 64 // heavier writes: up to 256 KiB each

	c.node("r3").kill9()
	from := w.issuedBytes.Load()
	w.start()
	c.waitVolume("cu", "degraded with r3 out", 30*time.Second, func(v replVolume) bool { return v.mode("r3") == "out" })
	w.waitAcked(w.ackedBytes.Load(), 24<<20, 60*time.Second, "writes with r3 out")
	w.halt()
	written := w.issuedBytes.Load() - from

	c.node("r3").start()
	c.waitVolume("cu", "all in sync after r3's return", 60*time.Second, replVolume.allInSync)
	copies := caughtUp(r1, "cu", "r3")
	if len(copies) != 1 {
		t.Fatalf("r1's log reports %d catch-ups of r3 (%v), want 1:\n%s", len(copies), copies, r1.log())
	}
	copied := copies[0]
	t.Logf("written while r3 was out: %d bytes (%.1f MiB); copied to catch it up: %d bytes (%.1f MiB), ratio %.2f",
		written, float64(written)/(1<<20), copied, float64(copied)/(1<<20), float64(copied)/float64(written))
	if copied <= 0 || float64(copied) > 1.5*float64(written) {
		t.Errorf("catch-up copied %d bytes for %d written while the replica was out: want at most 1.5 times", copied, written)
	}
	if n := w.errnos.Load() + w.dropped.Load(); n != 0 {
		t.Errorf("%d writes or flushes failed and %d connections were lost; first error: %s", w.errnos.Load(), w.dropped.Load(), w.firstErrnoMsg())
	}
	w.verify(r1.nbd, everyAcked)
	c.check("cu", w)
}

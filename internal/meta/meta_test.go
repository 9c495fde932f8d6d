package meta

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

// freeURL returns an http URL on a loopback port free right now.
func freeURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}

func embeddedConfig(t *testing.T) Config {
	t.Helper()
	return Config{Dir: t.TempDir(), ClientURL: freeURL(t), PeerURL: freeURL(t), StartTimeout: 30 * time.Second}
}

func open(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func TestRecordsSurviveRestart(t *testing.T) {
	ctx := context.Background()
	cfg := embeddedConfig(t)
	s := open(t, cfg)

	id, err := s.ClusterID(ctx)
	if err != nil || len(id) != 32 {
		t.Fatalf("cluster id %q: %v", id, err)
	}
	created := time.Now().UTC().Truncate(time.Second)
	v, err := s.CreateVolume(ctx, Volume{Name: "a", Size: 4096, Node: "n1", Created: created, State: StateReady})
	if err != nil {
		t.Fatal(err)
	}
	if v.Rev == 0 {
		t.Fatal("no revision")
	}
	if _, err := s.CreateSnapshot(ctx, Snapshot{Volume: "a", Name: "s1", Size: 4096, Created: created, State: StateReady}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutNode(ctx, Node{Name: "n1", Addresses: map[string]string{"api": "127.0.0.1:7420"}, Heartbeat: created}); err != nil {
		t.Fatal(err)
	}
	hash := HashToken("secret")
	if _, err := s.CreateToken(ctx, hash, RoleAdmin); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open(t, cfg)
	defer s.Close()
	id2, err := s.ClusterID(ctx)
	if err != nil || id2 != id {
		t.Fatalf("cluster id after restart %q, want %q (%v)", id2, id, err)
	}
	got, err := s.GetVolume(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != 4096 || got.Node != "n1" || !got.Created.Equal(created) || got.State != StateReady {
		t.Fatalf("volume after restart: %+v", got)
	}
	snaps, err := s.ListSnapshots(ctx, "a")
	if err != nil || len(snaps) != 1 || snaps[0].Name != "s1" {
		t.Fatalf("snapshots after restart: %+v %v", snaps, err)
	}
	n, err := s.GetNode(ctx, "n1")
	if err != nil || n.Addresses["api"] != "127.0.0.1:7420" {
		t.Fatalf("node after restart: %+v %v", n, err)
	}
	toks, err := s.ListTokens(ctx)
	if err != nil || len(toks) != 1 || toks[0].Hash != hash || toks[0].Role != RoleAdmin {
		t.Fatalf("tokens after restart: %+v %v", toks, err)
	}
}

func TestCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	s := open(t, embeddedConfig(t))
	defer s.Close()

	v, err := s.CreateVolume(ctx, Volume{Name: "v", Size: 4096, State: StateCreating})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateVolume(ctx, Volume{Name: "v", Size: 8192}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second create: %v, want already exists", err)
	}
	stale := v
	v.State = StateReady
	v, err = s.UpdateVolume(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	stale.Size = 1 << 20
	if _, err := s.UpdateVolume(ctx, stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: %v, want conflict", err)
	}
	if err := s.DeleteVolume(ctx, stale); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale delete: %v, want conflict", err)
	}
	if _, err := s.CreateSnapshot(ctx, Snapshot{Volume: "v", Name: "s", State: StateReady}); err != nil {
		t.Fatal(err)
	}
	// A volume whose name extends v's must keep its snapshots.
	if _, err := s.CreateSnapshot(ctx, Snapshot{Volume: "v2", Name: "s", State: StateReady}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetVolume(ctx, "v"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	all, err := s.ListSnapshots(ctx, "")
	if err != nil || len(all) != 1 || all[0].Volume != "v2" {
		t.Fatalf("snapshots after delete of v: %+v %v", all, err)
	}
	sn := all[0]
	sn.State = StateDeleting
	if sn, err = s.UpdateSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSnapshot(ctx, sn); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSnapshot(ctx, "v2", "s"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("get snapshot after delete: %v", err)
	}
}

func TestClusterIDIsUniqueUnderRace(t *testing.T) {
	ctx := context.Background()
	s := open(t, embeddedConfig(t))
	defer s.Close()
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := s.ClusterID(ctx)
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("ids differ: %v", ids)
		}
	}
}

func TestExternalEndpoints(t *testing.T) {
	ctx := context.Background()
	cfg := embeddedConfig(t)
	s := open(t, cfg)
	defer s.Close()
	ext := open(t, Config{Endpoints: s.Endpoints()})
	defer ext.Close()
	if _, err := ext.CreateVolume(ctx, Volume{Name: "x", Size: 4096}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetVolume(ctx, "x"); err != nil {
		t.Fatalf("volume written through external client not seen: %v", err)
	}
}

func TestUnreachableEndpoints(t *testing.T) {
	_, err := Open(context.Background(), Config{Endpoints: []string{freeURL(t)}, StartTimeout: 2 * time.Second})
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("open of a dead endpoint: %v, want unavailable", err)
	}
}

func TestBadURL(t *testing.T) {
	_, err := Open(context.Background(), Config{Dir: t.TempDir(), ClientURL: "127.0.0.1:7421"})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("open with a bad url: %v, want invalid argument", err)
	}
}

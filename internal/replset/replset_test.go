package replset

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

func TestNew(t *testing.T) {
	s, err := New([]string{"n3", "n1"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := format(s); got != "epoch=0 engine=none want=2 n1:in-sync n3:in-sync" {
		t.Errorf("New = %s", got)
	}
	for _, nodes := range [][]string{nil, {"n1", "n2", "n3", "n4"}, {"n1", "n1"}, {""}} {
		if _, err := New(nodes, t0); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("New(%q) = %v, want invalid argument", nodes, err)
		}
	}
}

func TestAttachWithoutInSync(t *testing.T) {
	s := State{Epoch: 4, Want: 2, Dirty: true, Replicas: []Replica{
		{Node: "n1", Mode: Out, Since: t0},
		{Node: "n2", Mode: Out, Since: t0},
	}}
	_, acts, err := s.Attach("n1")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || acts != nil {
		t.Fatalf("Attach = %v, %v; want failed precondition", acts, err)
	}
	const want = "replset: cannot attach on n1: no replica is in-sync: failed precondition"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

func TestLastInSync(t *testing.T) {
	s, _ := New([]string{"n1", "n2"}, t0)
	s, _, _ = s.Attach("n1")
	s, _, err := s.ReplicaFailed("n2", t0)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = s.ReplicaFailed("n1", t0)
	if !errors.Is(err, ErrLastInSync) || !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("ReplicaFailed(last) = %v, want ErrLastInSync", err)
	}
	_, _, err = s.RemoveReplica("n1")
	if !errors.Is(err, ErrLastInSync) {
		t.Errorf("RemoveReplica(last) = %v, want ErrLastInSync", err)
	}
}

func TestValidate(t *testing.T) {
	good := func() State {
		return State{Epoch: 2, Want: 3, Replicas: []Replica{
			{Node: "n1", Mode: InSync},
			{Node: "n2", Mode: CatchingUp, Source: "n1"},
			{Node: "n3", Mode: Out},
		}, Retired: []string{"n4", "n5"}}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("Validate(good) = %v", err)
	}
	for name, spoil := range map[string]func(*State){
		"want 0":                  func(s *State) { s.Want = 0 },
		"want 4":                  func(s *State) { s.Want = 4 },
		"more replicas than want": func(s *State) { s.Want = 2 },
		"no replica":              func(s *State) { s.Replicas = nil },
		"unnamed replica":         func(s *State) { s.Replicas[0].Node = "" },
		"unsorted":                func(s *State) { s.Replicas[0], s.Replicas[2] = s.Replicas[2], s.Replicas[0] },
		"duplicate":               func(s *State) { s.Replicas[2].Node = "n2" },
		"unknown mode":            func(s *State) { s.Replicas[2].Mode = "lost" },
		"source on in-sync":       func(s *State) { s.Replicas[0].Source = "n3" },
		"source on out":           func(s *State) { s.Replicas[2].Source = "n1" },
		"no source":               func(s *State) { s.Replicas[1].Source = "" },
		"source not in-sync":      func(s *State) { s.Replicas[1].Source = "n3" },
		"retired in the set":      func(s *State) { s.Retired = []string{"n3"} },
		"retired unsorted":        func(s *State) { s.Retired = []string{"n5", "n4"} },
	} {
		s := good()
		spoil(&s)
		if err := s.Validate(); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: Validate = %v, want invalid argument", name, err)
		}
		// Every transition refuses a malformed state.
		if _, _, err := s.Attach("n9"); err == nil {
			t.Errorf("%s: Attach accepted a malformed state", name)
		}
	}
}

// TestJSON pins the field names of the record stored in etcd.
func TestJSON(t *testing.T) {
	s := State{Epoch: 7, Engine: "n1", Dirty: true, Want: 2, Replicas: []Replica{
		{Node: "n1", Mode: InSync, Since: t0},
		{Node: "n2", Mode: CatchingUp, Since: t0.Add(time.Second), Source: "n1"},
	}, Retired: []string{"n3"}}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"epoch":7,"engine":"n1","dirty":true,"want":2,"replicas":[` +
		`{"node":"n1","mode":"in-sync","since":"2025-01-01T00:00:00Z"},` +
		`{"node":"n2","mode":"catching-up","since":"2025-01-01T00:00:01Z","source":"n1"}],"retired":["n3"]}`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(Action{Kind: ActionPlace, Count: 1, Keep: []string{"n1"}, Avoid: []string{"n2"}})
	if string(b) != `{"kind":"place","count":1,"keep":["n1"],"avoid":["n2"]}` {
		t.Errorf("Action JSON %s", b)
	}
}

// TestRandomWalk drives replica sets with random events and checks every
// transition against the invariants (checkTransition): whatever the order
// of events, the in-sync set never empties, the epoch rises exactly when
// the in-sync set changes or the engine moves, and every state is valid.
func TestRandomWalk(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4", "n5"}
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		s, err := New(nodes[:1+rng.IntN(3)], t0)
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		for i := range 200 {
			now = now.Add(time.Duration(rng.IntN(120)) * time.Second)
			n := nodes[rng.IntN(len(nodes))]
			var name string
			var f func(State) (State, []Action, error)
			switch rng.IntN(11) {
			case 0:
				name, f = "attach", func(s State) (State, []Action, error) { return s.Attach(n) }
			case 1:
				name, f = "detach", func(s State) (State, []Action, error) { return s.Detach(n) }
			case 2:
				name, f = "crash", func(s State) (State, []Action, error) { return s.EngineCrashed(n) }
			case 3:
				name, f = "fail", func(s State) (State, []Action, error) { return s.ReplicaFailed(n, now) }
			case 4:
				name, f = "return", func(s State) (State, []Action, error) { return s.ReplicaReturned(n, now) }
			case 5:
				name, f = "caught-up", func(s State) (State, []Action, error) { return s.CaughtUp(n, now) }
			case 6:
				name, f = "tick", func(s State) (State, []Action, error) { return s.Tick(now, 5*time.Minute) }
			case 7:
				name, f = "add", func(s State) (State, []Action, error) { return s.AddReplica(n, now) }
			case 8:
				name, f = "remove", func(s State) (State, []Action, error) { return s.RemoveReplica(n) }
			case 9:
				w := 1 + rng.IntN(3)
				name, f = fmt.Sprint("set-replicas ", w), func(s State) (State, []Action, error) { return s.SetReplicas(w) }
			case 10:
				name, f = "deleted", func(s State) (State, []Action, error) { return s.ReplicaDeleted(n) }
			}
			where := fmt.Sprintf("seed %d step %d: %s %s on %s", seed, i, name, n, format(s))
			next, _, err := step(t, where, s, f)
			if err != nil && !strings.HasPrefix(err.Error(), "replset: ") {
				t.Fatalf("%s: %v", where, err)
			}
			s = next
			if t.Failed() {
				t.FailNow()
			}
		}
	}
}

func TestActionString(t *testing.T) {
	for _, tc := range []struct {
		a    Action
		want string
	}{
		{Action{Kind: ActionRebuild, Node: "n2", Source: "n1"}, "rebuild n2 from n1"},
		{Action{Kind: ActionPlace, Count: 2}, "place 2"},
		{Action{Kind: ActionPlace, Count: 1, Keep: []string{"n1", "n3"}, Avoid: []string{"n2"}}, "place 1 keep=n1,n3 avoid=n2"},
		{Action{Kind: ActionDeleteReplica, Node: "n2"}, "delete-replica n2"},
		{Action{Kind: ActionResyncDirty, Node: "n2", Source: "n2", Targets: []string{"n1", "n3"}}, "resync-dirty on n2 from n2 to n1,n3"},
	} {
		if got := tc.a.String(); got != tc.want {
			t.Errorf("String = %q, want %q", got, tc.want)
		}
	}
}

package replset

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt")

// t0 is the time scripts count from: at=10s is t0 plus ten seconds.
var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// TestScripts runs the scripts in testdata. A script is a sequence of
// blocks: one or more command lines, a line "----", and the expected output,
// up to a blank line or the end of the file. Lines starting with "#"
// before a block's commands are comments. The output is, for each command,
// its actions (one per line) or "error: ...", then the state after the
// last command on one line (see format). With -rewrite, the expected
// output is replaced by the actual one.
//
// Commands (times are durations after t0, "at=0s" when omitted):
//
//	init replicas=n1,n2,n3 [engine=n1] [at=T]    New, then Attach
//	attach N | detach N | crash N                Attach, Detach, EngineCrashed
//	fail N [at=T] | return N [at=T]              ReplicaFailed, ReplicaReturned
//	caught-up N [at=T] | add N [at=T]            CaughtUp, AddReplica
//	remove N | deleted N | set-replicas W        RemoveReplica, ReplicaDeleted, SetReplicas
//	tick at=T after=D                            Tick
//	json                                         print the state as JSON
//
// Besides comparing output, every transition is checked against the
// package's invariants (see checkTransition), whatever the script expects.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts in testdata: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runScript(t, file)
		})
	}
}

func runScript(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	var out strings.Builder
	var s State
	var cmds []string
	cmdLine := 0
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		out.WriteString(line + "\n")
		switch {
		case line == "----":
			if len(cmds) == 0 {
				t.Fatalf("%s:%d: ---- without commands", file, i+1)
			}
			var got []string
			for j, c := range cmds {
				var lines []string
				s, lines = runCommand(t, fmt.Sprintf("%s:%d", file, cmdLine+j+1), s, c)
				got = append(got, lines...)
			}
			got = append(got, format(s))
			var want []string
			for i+1 < len(lines) && lines[i+1] != "" {
				i++
				want = append(want, lines[i])
			}
			if !*rewrite && !slices.Equal(got, want) {
				t.Errorf("%s:%d: %s\n got:\n%s\nwant:\n%s", file, cmdLine+1, strings.Join(cmds, "; "),
					strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			out.WriteString(strings.Join(got, "\n") + "\n")
			cmds = nil
		case line == "" || (len(cmds) == 0 && strings.HasPrefix(line, "#")):
			if len(cmds) > 0 {
				t.Fatalf("%s:%d: commands without ----", file, i+1)
			}
		default:
			if len(cmds) == 0 {
				cmdLine = i
			}
			cmds = append(cmds, line)
		}
	}
	if len(cmds) > 0 {
		t.Fatalf("%s: commands without ---- at the end", file)
	}
	if *rewrite {
		if err := os.WriteFile(file, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// runCommand runs one command line on s and returns the next state and the
// command's output lines.
func runCommand(t *testing.T, where string, s State, line string) (State, []string) {
	t.Helper()
	fields := strings.Fields(line)
	name, args := fields[0], fields[1:]
	var pos []string
	kv := map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			kv[k] = v
		} else {
			pos = append(pos, a)
		}
	}
	dur := func(key string) time.Duration {
		v, ok := kv[key]
		if !ok {
			return 0
		}
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %s=%s: %v", where, key, v, err)
		}
		return d
	}
	at := t0.Add(dur("at"))
	arg := func() string {
		if len(pos) != 1 {
			t.Fatalf("%s: %s takes one argument", where, name)
		}
		return pos[0]
	}

	var (
		next State
		acts []Action
		err  error
	)
	switch name {
	case "init":
		next, err = New(strings.Split(kv["replicas"], ","), at)
		if err == nil && kv["engine"] != "" {
			next, acts, err = next.Attach(kv["engine"])
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		checkState(t, where, next)
		return next, actionLines(acts)
	case "json":
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		var back State
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, s) {
			t.Errorf("%s: JSON round trip: %v\n got %+v\nwant %+v", where, err, back, s)
		}
		return s, []string{string(b)}
	case "attach":
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.Attach(arg()) })
	case "detach":
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.Detach(arg()) })
	case "crash":
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.EngineCrashed(arg()) })
	case "fail":
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.ReplicaFailed(arg(), at) })
	case "return":
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.ReplicaReturned(arg(), at) })
	case "caught-up":
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.CaughtUp(arg(), at) })
	case "add":
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.AddReplica(arg(), at) })
	case "remove":
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.RemoveReplica(arg()) })
	case "deleted":
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.ReplicaDeleted(arg()) })
	case "set-replicas":
		want, perr := strconv.Atoi(arg())
		if perr != nil {
			t.Fatalf("%s: %v", where, perr)
		}
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.SetReplicas(want) })
	case "tick":
		next, acts, err = step(t, where, s, func(s State) (State, []Action, error) { return s.Tick(at, dur("after")) })
	default:
		t.Fatalf("%s: unknown command %q", where, name)
	}
	if err != nil {
		return next, []string{"error: " + err.Error()}
	}
	return next, actionLines(acts)
}

func actionLines(acts []Action) []string {
	var lines []string
	for _, a := range acts {
		lines = append(lines, a.String())
	}
	return lines
}

// step runs one transition and checks it.
func step(t *testing.T, where string, s State, f func(State) (State, []Action, error)) (State, []Action, error) {
	t.Helper()
	before := deepCopy(s)
	next, acts, err := f(s)
	if !reflect.DeepEqual(s, before) {
		t.Errorf("%s: the transition changed its receiver", where)
	}
	if err != nil {
		if !strings.HasPrefix(err.Error(), "replset: ") {
			t.Errorf("%s: error %q has no package prefix", where, err)
		}
		if !reflect.DeepEqual(next, s) || acts != nil {
			t.Errorf("%s: a refused transition returned a changed state or actions", where)
		}
		return next, acts, err
	}
	checkTransition(t, where, s, next, acts)
	return next, acts, nil
}

func deepCopy(s State) State {
	s.Replicas = slices.Clone(s.Replicas)
	s.Retired = slices.Clone(s.Retired)
	return s
}

// checkState checks what every reachable state satisfies.
func checkState(t *testing.T, where string, s State) {
	t.Helper()
	if err := s.Validate(); err != nil {
		t.Errorf("%s: %v", where, err)
	}
	if len(s.InSync()) == 0 {
		t.Errorf("%s: the in-sync set is empty", where)
	}
	if s.Engine != "" && !s.Dirty {
		t.Errorf("%s: an engine is attached but the state is not dirty", where)
	}
}

// checkTransition checks the rules every transition from old to s keeps:
// the epoch rises by one exactly when the in-sync set changes or the engine
// moves (invariants 2 and 3), and actions name nodes that make sense.
func checkTransition(t *testing.T, where string, old, s State, acts []Action) {
	t.Helper()
	checkState(t, where, s)
	changed := !slices.Equal(old.InSync(), s.InSync()) || (s.Engine != "" && s.Engine != old.Engine)
	switch {
	case changed && s.Epoch != old.Epoch+1:
		t.Errorf("%s: in-sync set %v -> %v, engine %q -> %q, but epoch %d -> %d", where,
			old.InSync(), s.InSync(), old.Engine, s.Engine, old.Epoch, s.Epoch)
	case !changed && s.Epoch != old.Epoch:
		t.Errorf("%s: epoch %d -> %d with no change of the in-sync set or engine", where, old.Epoch, s.Epoch)
	}
	for _, a := range acts {
		switch a.Kind {
		case ActionRebuild:
			if s.mode(a.Node) != CatchingUp || s.mode(a.Source) != InSync {
				t.Errorf("%s: %v: target not catching-up or source not in-sync", where, a)
			}
		case ActionResyncDirty:
			if s.Engine != a.Node || s.mode(a.Source) != InSync {
				t.Errorf("%s: %v: not on the engine or source not in-sync", where, a)
			}
		case ActionDeleteReplica:
			if s.Has(a.Node) || !slices.Contains(s.Retired, a.Node) {
				t.Errorf("%s: %v: node holds a replica or is not retired", where, a)
			}
		case ActionPlace:
			if a.Count != s.Want-len(s.Replicas) {
				t.Errorf("%s: %v: count is not the missing replicas", where, a)
			}
		default:
			t.Errorf("%s: unknown action %v", where, a)
		}
	}
}

// format writes s on one line: "epoch=2 engine=n1 dirty want=3 n1:in-sync
// n2:out@10s n3:catching-up@20s<-n1 degraded retired=n4". Times are after
// t0, left out when zero.
func format(s State) string {
	engine := s.Engine
	if engine == "" {
		engine = "none"
	}
	parts := []string{fmt.Sprintf("epoch=%d engine=%s", s.Epoch, engine)}
	if s.Dirty {
		parts = append(parts, "dirty")
	}
	parts = append(parts, fmt.Sprintf("want=%d", s.Want))
	for _, r := range s.Replicas {
		p := r.Node + ":" + string(r.Mode)
		if d := r.Since.Sub(t0); d != 0 {
			p += "@" + d.String()
		}
		if r.Source != "" {
			p += "<-" + r.Source
		}
		parts = append(parts, p)
	}
	if s.Degraded() {
		parts = append(parts, "degraded")
	}
	if len(s.Retired) > 0 {
		parts = append(parts, "retired="+strings.Join(s.Retired, ","))
	}
	return strings.Join(parts, " ")
}

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// iopsSample is one line of a fio IOPS log: the average IOPS of the second
// that ends at ms (since the job started).
type iopsSample struct {
	ms   int
	iops float64
}

// readIOPSLog reads a fio --write_iops_log file written with
// --log_avg_msec=1000.
func readIOPSLog(t *testing.T, path string) []iopsSample {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []iopsSample
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ",")
		if len(fields) < 3 {
			continue
		}
		ms, err1 := strconv.Atoi(strings.TrimSpace(fields[0]))
		v, err2 := strconv.ParseFloat(strings.TrimSpace(fields[1]), 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("fio log %s: bad line %q", path, sc.Text())
		}
		out = append(out, iopsSample{ms, v})
	}
	return out
}

// meanIOPS averages the samples of the seconds that end in (from, to].
func meanIOPS(samples []iopsSample, from, to time.Duration) (float64, int) {
	sum, n := 0.0, 0
	for _, s := range samples {
		at := time.Duration(s.ms) * time.Millisecond
		if at > from && at <= to {
			sum += s.iops
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / float64(n), n
}

// TestQoSLimitsThroughNBD runs fio's nbd engine (4 KiB random writes, queue
// depth 16) against a volume created with a 500 write IOPS limit, raises
// the limit to 1000 while fio runs, then removes it, and checks each phase
// from fio's own per-second IOPS log: within 5 % of the limit, and well
// above 1000 once unlimited. Reads are left unlimited ("off,500").
func TestQoSLimitsThroughNBD(t *testing.T) {
	needTools(t, "fio")
	n := newNode(t)
	n.run("volume", "create", "prod", "--size", "256MiB", "--max-iops", "off,500")
	if out := n.run("volume", "inspect", "prod"); !strings.Contains(out, "Max IOPS:       -,500\n") {
		t.Fatalf("inspect does not show the limit:\n%s", out)
	}

	dir := t.TempDir()
	const phase = 5 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fio := exec.CommandContext(ctx, "fio", "--name=qos", "--ioengine=nbd", "--uri="+n.uri("prod"),
		"--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=256m", "--norandommap", "--randrepeat=0",
		"--time_based", fmt.Sprintf("--runtime=%d", int(3*phase/time.Second)),
		"--write_iops_log="+filepath.Join(dir, "qos"), "--log_avg_msec=1000",
		"--output="+filepath.Join(dir, "fio.txt"))
	fio.Env = append(os.Environ(), "LC_ALL=C")
	start := time.Now()
	if err := fio.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(start.Add(phase)))
	n.run("volume", "update", "prod", "--max-iops", "off,1000")
	time.Sleep(time.Until(start.Add(2 * phase)))
	out := n.run("volume", "update", "prod", "--max-iops", "off")
	if !strings.Contains(out, "IOPS -,") {
		t.Errorf("update --max-iops off printed %q", out)
	}
	if err := fio.Wait(); err != nil {
		b, _ := os.ReadFile(filepath.Join(dir, "fio.txt"))
		t.Fatalf("fio: %v\n%s", err, b)
	}
	samples := readIOPSLog(t, filepath.Join(dir, "qos_iops.1.log"))
	t.Logf("fio per-second write IOPS: %v", samples)

	// Each phase is measured over its seconds 2 to 5: the first second
	// takes the bucket's burst, and fio starts a little after start.
	for _, p := range []struct {
		name  string
		from  time.Duration
		limit float64
	}{
		{"500 IOPS", 0, 500},
		{"1000 IOPS after an online update", phase, 1000},
	} {
		got, secs := meanIOPS(samples, p.from+time.Second+500*time.Millisecond, p.from+phase-500*time.Millisecond)
		t.Logf("%s: %.1f IOPS over %d s", p.name, got, secs)
		if secs < 3 || got < p.limit*0.95 || got > p.limit*1.05 {
			t.Errorf("%s: measured %.1f IOPS over %d s, want %.0f ± 5%%", p.name, got, secs, p.limit)
		}
	}
	free, secs := meanIOPS(samples, 2*phase+time.Second+500*time.Millisecond, 3*phase)
	t.Logf("no limit: %.0f IOPS over %d s", free, secs)
	if secs < 2 || free < 2000 {
		t.Errorf("without a limit: %.0f IOPS over %d s, want well above 1000", free, secs)
	}
}

// TestCloneDefaultLimitThroughCLI: a clone gets the cluster's default
// limit, an explicit one overrides it, and the limits survive a restart.
func TestCloneDefaultLimitThroughCLI(t *testing.T) {
	n := newNode(t)
	n.run("volume", "create", "prod", "--size", "64MiB")
	n.run("snapshot", "create", "prod", "--name", "s")
	if out := n.run("cluster", "set", "clone-default-max-iops", "500"); out != "clone-default-max-iops = 500\n" {
		t.Fatalf("cluster set printed %q", out)
	}
	n.run("cluster", "set", "clone-default-max-bandwidth", "200,100")
	if out := n.run("cluster", "get", "clone-default-max-bandwidth"); out != "200,100\n" {
		t.Fatalf("cluster get printed %q", out)
	}
	if errOut := n.fail("cluster", "set", "clone-default-max-iops", "--", "-1"); !strings.Contains(errOut, "negative") {
		t.Errorf("negative setting: %s", errOut)
	}
	if errOut := n.fail("cluster", "set", "max-iops", "1"); !strings.Contains(errOut, "unknown setting") {
		t.Errorf("unknown setting: %s", errOut)
	}
	n.run("volume", "clone", "prod@s", "dflt")
	n.run("volume", "clone", "prod@s", "own", "--max-iops", "2000,1000")
	n.run("volume", "create", "from", "--from", "prod@s", "--max-bandwidth", "off")
	if errOut := n.fail("volume", "update", "nope", "--max-iops", "5"); !strings.Contains(errOut, "not found") {
		t.Errorf("update of a missing volume: %s", errOut)
	}
	check := func() {
		t.Helper()
		for name, want := range map[string][2]string{
			"prod": {"-", "-"},
			"dflt": {"500", "200MiB/s,100MiB/s"},
			"own":  {"2000,1000", "200MiB/s,100MiB/s"},
			"from": {"500", "-"},
		} {
			out := n.run("volume", "inspect", name)
			if !strings.Contains(out, "Max IOPS:       "+want[0]+"\n") || !strings.Contains(out, "Max bandwidth:  "+want[1]+"\n") {
				t.Errorf("volume %s: want IOPS %s, bandwidth %s:\n%s", name, want[0], want[1], out)
			}
		}
	}
	check()
	n.stop()
	n.start()
	check()
}

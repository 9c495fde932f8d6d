package main

import (
	"strings"
	"testing"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client/clienttest"
)

func TestQoSCommands(t *testing.T) {
	isolate(t)
	srv := clienttest.New(t)

	must(t, srv, "volume", "create", "prod", "--size", "64MiB", "--max-iops", "1000,500", "--max-bandwidth", "100")
	r := srv.LastRequest("/CreateVolume").(*stratav1.CreateVolumeRequest)
	if q := r.Qos; q.GetMaxReadIops() != 1000 || q.GetMaxWriteIops() != 500 ||
		q.GetMaxReadBytesPerSecond() != 100<<20 || q.GetMaxWriteBytesPerSecond() != 100<<20 {
		t.Fatalf("CreateVolume limits %v", q)
	}
	// Without the flags, no limits are sent (clones then get the default).
	must(t, srv, "volume", "create", "plain", "--size", "1MiB")
	if r := srv.LastRequest("/CreateVolume").(*stratav1.CreateVolumeRequest); r.Qos != nil {
		t.Fatalf("create without limit flags sent %v", r.Qos)
	}
	inspect := must(t, srv, "volume", "inspect", "prod")
	for _, s := range []string{"Max IOPS:", "1000,500", "Max bandwidth:", "100MiB/s"} {
		if !strings.Contains(inspect, s) {
			t.Errorf("inspect does not show %q:\n%s", s, inspect)
		}
	}

	// update: only the flags given are sent; off removes.
	out := must(t, srv, "volume", "update", "prod", "--max-iops", "500,off")
	if out != "updated volume prod: IOPS 500,-, bandwidth 100MiB/s (read,write)\n" {
		t.Errorf("update printed %q", out)
	}
	u := srv.LastRequest("/UpdateVolume").(*stratav1.UpdateVolumeRequest)
	if u.Qos.MaxReadIops == nil || *u.Qos.MaxReadIops != 500 || *u.Qos.MaxWriteIops != 0 || u.Qos.MaxReadBytesPerSecond != nil {
		t.Errorf("UpdateVolume request %v", u)
	}
	must(t, srv, "volume", "update", "prod", "--max-bandwidth", "0")
	if u := srv.LastRequest("/UpdateVolume").(*stratav1.UpdateVolumeRequest); u.Qos.MaxReadIops != nil || u.Qos.GetMaxWriteBytesPerSecond() != 0 || u.Qos.MaxWriteBytesPerSecond == nil {
		t.Errorf("UpdateVolume request %v", u)
	}
	if _, err := on(t, srv, "volume", "update", "missing", "--max-iops", "5"); err == nil || err.Error() != `volume "missing" not found` {
		t.Errorf("update of a missing volume: %v", err)
	}

	// Cluster settings and the clone default.
	if out := must(t, srv, "cluster", "set", "clone-default-max-iops", "500"); out != "clone-default-max-iops = 500\n" {
		t.Errorf("cluster set printed %q", out)
	}
	if out := must(t, srv, "cluster", "get", "clone-default-max-iops"); out != "500\n" {
		t.Errorf("cluster get KEY printed %q", out)
	}
	all := must(t, srv, "cluster", "get")
	if !strings.HasPrefix(all, "KEY ") || !strings.Contains(all, "clone-default-max-bandwidth  off") {
		t.Errorf("cluster get:\n%s", all)
	}
	if _, err := on(t, srv, "cluster", "set", "nope", "1"); err == nil || !strings.Contains(err.Error(), "unknown setting") {
		t.Errorf("cluster set of an unknown key: %v", err)
	}
	must(t, srv, "snapshot", "create", "prod", "--name", "s")
	must(t, srv, "volume", "clone", "prod@s", "c1")
	must(t, srv, "volume", "clone", "prod@s", "c2", "--max-iops", "off")
	if r := srv.LastRequest("/CloneVolume").(*stratav1.CloneVolumeRequest); r.Qos.GetMaxWriteIops() != 0 || r.Qos.MaxWriteIops == nil {
		t.Errorf("clone --max-iops off sent %v", r.Qos)
	}
	list := must(t, srv, "volume", "list")
	for _, want := range []string{"c1 ", "c2 ", "plain "} {
		var row string
		for _, l := range strings.Split(list, "\n") {
			if strings.HasPrefix(l, want) {
				row = l
			}
		}
		f := strings.Fields(row)
		if len(f) != 12 {
			t.Fatalf("volume list row %q", row)
		}
		iops, bw := f[9], f[10]
		if want == "c1 " && (iops != "500" || bw != "-") || want != "c1 " && (iops != "-" || bw != "-") {
			t.Errorf("volume list row %q: IOPS %s, bandwidth %s", row, iops, bw)
		}
	}
}

// TestQoSFlagsRefused: bad limit values are refused before any call, with
// the flag named.
func TestQoSFlagsRefused(t *testing.T) {
	isolate(t)
	srv := clienttest.New(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"volume", "create", "a", "--size", "1G", "--max-iops", "-5"}, `--max-iops "-5": "-5" is negative`},
		{[]string{"volume", "create", "a", "--size", "1G", "--max-iops", "fast"}, `--max-iops "fast": "fast" is not a whole number`},
		{[]string{"volume", "create", "a", "--size", "1G", "--max-bandwidth", "1,2,3"}, `--max-bandwidth "1,2,3" has 3 values`},
		{[]string{"volume", "create", "a", "--size", "1G", "--max-bandwidth", "10MiB"}, `--max-bandwidth "10MiB"`},
		{[]string{"volume", "clone", "a@s", "b", "--max-iops", "1,"}, `--max-iops "1,": empty value`},
		{[]string{"volume", "update", "a", "--max-iops", ""}, `--max-iops "": empty value`},
		{[]string{"volume", "update", "a"}, "nothing to update"},
		{[]string{"volume", "update"}, "expects NAME"},
		{[]string{"volume", "update", "A", "--max-iops", "1"}, `volume name "A"`},
		{[]string{"cluster", "set", "clone-default-max-iops"}, "expects KEY VALUE"},
		{[]string{"cluster", "get", "a", "b"}, "expects at most KEY"},
		{[]string{"cluster", "get", "-o", "xml"}, "unknown output format"},
		{[]string{"cluster", "frob"}, "unknown command"},
	} {
		_, err := on(t, srv, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("strata %s: error %v, want it to mention %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
	if reqs := srv.Requests(); len(reqs) != 0 {
		t.Errorf("refused commands sent %d requests, first %s", len(reqs), reqs[0].Method)
	}
}

package mountinfo

import "testing"

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:           "/plain",
		`/a\040b`:          "/a b",
		`/tab\011x`:        "/tab\tx",
		`/back\134slash`:   `/back\slash`,
		`/nl\012`:          "/nl\n",
		`/bad\09x`:         `/bad\09x`,
		`/short\04`:        `/short\04`,
		`/end\`:            `/end\`,
		`/two\040\040same`: "/two  same",
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	const data = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
36 22 0:5 /loop3 /var/lib/kubelet/pods/x/volumeDevices/a\040b ro,nosuid master:2 - devtmpfs udev rw,size=10k
37 22 7:3 / /stage rw - xfs /dev/loop3 rw,nouuid
38 22 7:3 / /stage rw - xfs /dev/loop3 rw,nouuid
short line
40 22 7:4 / /broken rw no separator here at all
`
	ms := Parse(data)
	if len(ms) != 4 {
		t.Fatalf("Parse found %d mounts, want 4: %+v", len(ms), ms)
	}
	dev := ms[1]
	if dev.Dev != "0:5" || dev.Root != "/loop3" || dev.MountPoint != "/var/lib/kubelet/pods/x/volumeDevices/a b" ||
		dev.FSType != "devtmpfs" || dev.Source != "udev" || !dev.ReadOnly() {
		t.Errorf("bind mount of a device node: %+v", dev)
	}
	if ms[0].ReadOnly() || ms[0].Options != "rw,relatime" {
		t.Errorf("root: %+v", ms[0])
	}
	if m, ok := At(ms, "/stage"); !ok || m.Dev != "7:3" {
		t.Errorf("At(/stage) = %+v %v", m, ok)
	}
	if _, ok := At(ms, "/nowhere"); ok {
		t.Error("At found a mount at /nowhere")
	}
}

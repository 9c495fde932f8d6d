// Package vm runs the strata binary inside a QEMU virtual machine, for what
// the host's kernel cannot give the tests: the kernel's NBD client. The VM
// boots a Debian kernel (make test-deps installs linux-image-cloud-amd64 and
// qemu-system-x86) from an initramfs the test builds: busybox, the strata
// binary, the filesystem tools with their libraries, and the kernel's
// modules, loaded with insmod. Without KVM, QEMU emulates the CPU (TCG).
package vm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// vmScript is the VM's /init: it runs the scenario and prints one
// "RESULT: PASS" or "RESULT: FAIL why" line on the serial console.
const vmScript = `#!/bin/sh
export PATH=/bin:/usr/sbin:/usr/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs -o size=600m data /data
ifconfig lo 127.0.0.1 up

fail() {
	echo "RESULT: FAIL $*"
	echo "--- strata up log"; tail -n 30 /tmp/up.log
	echo "--- kernel log"; dmesg | tail -n 20
	poweroff -f
}
step() { echo "STEP $(cut -d' ' -f1 /proc/uptime) $*"; }
up() {
	strata up --data-dir /data/strata --attach nbd >>/tmp/up.log 2>&1 &
	UP=$!
	i=0
	until strata status >/dev/null 2>&1; do
		kill -0 $UP 2>/dev/null || fail "strata up exited"
		i=$((i+1)); [ $i -gt 600 ] && fail "strata up did not answer within 120s"
		usleep 200000
	done
}
# attached lists the backend identifiers of the attached nbd devices.
attached() { cat /sys/block/nbd*/backend 2>/dev/null; }
# detached waits for every nbd device to be disconnected.
detached() {
	i=0
	while [ -n "$(attached)" ]; do
		i=$((i+1)); [ $i -gt 50 ] && return 1
		usleep 100000
	done
}
# mounted prints the device mounted at $1.
mounted() { awk -v t="$1" '$2==t {print $1}' /proc/mounts; }

step modules
%s
step "nbddev tests"
/nbddev.test -test.count=1 -test.v >/tmp/nbddev.log 2>&1 || { cat /tmp/nbddev.log; fail "nbddev tests"; }
grep -c -- "--- PASS" /tmp/nbddev.log

step "strata up"
up
grep -q "attach=nbd" /tmp/up.log || fail "strata up does not attach with the kernel NBD client"

step "create and mount"
strata volume create v1 --size 64MiB || fail "volume create v1"
out=$(strata volume mount v1 /mnt/v1) || fail "volume mount v1: $out"
echo "$out"
case "$out" in *"on /dev/nbd"*) ;; *) fail "v1 is not mounted from /dev/nbd*: $out" ;; esac
case "$(mounted /mnt/v1)" in /dev/nbd*) ;; *) fail "/proc/mounts shows /mnt/v1 on $(mounted /mnt/v1)" ;; esac
echo "hello from the kernel nbd client" >/mnt/v1/file && sync || fail "write to /mnt/v1"
strata volume unmount /mnt/v1 || fail "volume unmount /mnt/v1"
detached || fail "a device is still attached after the unmount: $(attached)"

step "snapshot, clone, mount the clone"
strata snapshot create v1 --name s1 || fail "snapshot create"
strata volume clone v1@s1 c1 || fail "volume clone"
strata volume mount c1 /mnt/c1 || fail "volume mount c1"
grep -q "hello from the kernel nbd client" /mnt/c1/file || fail "the clone does not have the file"

step "resize mounted"
dev=$(mounted /mnt/c1)
strata volume resize c1 --size 128MiB || fail "volume resize c1"
sectors=$(cat /sys/block/${dev#/dev/}/size)
[ "$sectors" = 262144 ] || fail "$dev has $sectors sectors after the resize, want 262144"
kb=$(df -k /mnt/c1 | awk 'NR==2 {print $2}')
[ "$kb" -gt 100000 ] || fail "the filesystem at /mnt/c1 did not grow: $kb KiB"
echo "$dev: $sectors sectors, filesystem $kb KiB"

step "xfs"
strata volume create x1 --size 320MiB || fail "volume create x1"
out=$(strata volume mount x1 /mnt/x1 --fs xfs) || fail "volume mount x1: $out"
case "$out" in *"(xfs on /dev/nbd"*) ;; *) fail "x1 is not xfs on /dev/nbd*: $out" ;; esac
echo "xfs on nbd" >/mnt/x1/file && sync || fail "write to /mnt/x1"
strata volume resize x1 --size 400MiB || fail "volume resize x1"
kb=$(df -k /mnt/x1 | awk 'NR==2 {print $2}')
[ "$kb" -gt 340000 ] || fail "the xfs filesystem at /mnt/x1 did not grow: $kb KiB"
strata volume unmount /mnt/x1 || fail "volume unmount /mnt/x1"

step "kill -9 and restart"
echo "flushed before the crash" >/mnt/c1/crash && sync || fail "write to /mnt/c1"
kill -9 $UP
wait $UP
up
[ -z "$(mounted /mnt/c1)" ] || fail "the dead mount of c1 is still there after the restart"
detached || fail "a device of the dead process is still attached: $(attached)"
strata volume mount c1 /mnt/c1 || fail "mount c1 after the restart"
grep -q "flushed before the crash" /mnt/c1/crash || fail "a flushed file is lost"
strata volume unmount /mnt/c1 || fail "volume unmount /mnt/c1"

step "map raw"
strata volume create raw --size 16MiB || fail "volume create raw"
dev=$(strata volume map raw) || fail "volume map raw: $dev"
case "$dev" in /dev/nbd*) ;; *) fail "raw is mapped at $dev, not /dev/nbd*" ;; esac
strata volume inspect raw -o json | grep -q "\"$dev\"" || fail "volume inspect does not show $dev"
dd if=/bin/strata of=/tmp/pattern bs=1M count=8 2>/dev/null
dd if=/tmp/pattern of=$dev bs=1M conv=fsync 2>/dev/null || fail "write $dev"
dd if=$dev of=/tmp/back bs=1M count=8 2>/dev/null || fail "read $dev"
cmp /tmp/pattern /tmp/back || fail "$dev reads back other data"
strata volume unmap raw || fail "volume unmap raw"
detached || fail "a device is still attached after the unmap: $(attached)"
dev=$(strata volume map raw) || fail "map raw again: $dev"
dd if=$dev of=/tmp/back bs=1M count=8 2>/dev/null || fail "read $dev"
cmp /tmp/pattern /tmp/back || fail "the data written through the device is not in the volume"
strata volume unmap raw || fail "volume unmap raw"

step "stop"
kill -TERM $UP
wait $UP || fail "strata up exited with $? on SIGTERM"
echo "RESULT: PASS"
poweroff -f
`

// TestKernelNBD boots a VM with the kernel's NBD client and runs a node
// there with --attach nbd: mount, snapshot, clone, online resize, restart
// after kill -9, and raw block maps, all through /dev/nbdN.
func TestKernelNBD(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 is not installed (make test-deps installs qemu-system-x86)")
	}
	kver, err := kernelWithNBD()
	if err != nil {
		t.Skipf("%v (make test-deps installs linux-image-cloud-amd64)", err)
	}
	for _, tool := range []string{"busybox", "mke2fs", "e2fsck", "resize2fs", "blkid", "mkfs.xfs", "xfs_growfs", "ldd"} {
		if _, err := lookTool(tool); err != nil {
			t.Skipf("%s is not installed (make test-deps installs it)", tool)
		}
	}
	start := time.Now()
	dir := t.TempDir()

	strata := filepath.Join(dir, "strata")
	goBuild(t, "build", "-o", strata, "../../cmd/strata")
	nbddevTest := filepath.Join(dir, "nbddev.test")
	goBuild(t, "test", "-c", "-o", nbddevTest, "../../internal/nbddev")

	img := newInitramfs()
	for _, d := range []string{"/bin", "/usr/sbin", "/usr/bin", "/proc", "/sys", "/dev", "/tmp", "/data", "/mnt", "/root", "/modules", "/etc"} {
		img.dir(d)
	}
	img.hostFile(t, "/bin/busybox", mustTool(t, "busybox"), 0o755)
	applets, err := exec.Command("busybox", "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, a := range strings.Fields(string(applets)) {
		if a != "busybox" {
			img.symlink("/bin/"+a, "busybox")
		}
	}
	img.hostFile(t, "/bin/strata", strata, 0o755)
	img.hostFile(t, "/nbddev.test", nbddevTest, 0o755)
	for _, tool := range []string{"mke2fs", "e2fsck", "resize2fs", "blkid", "mkfs.xfs", "xfs_growfs"} {
		img.binary(t, "/usr/sbin/"+tool, mustTool(t, tool))
	}
	img.symlink("/usr/sbin/mkfs.ext4", "mke2fs")
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		img.hostFile(t, "/etc/mke2fs.conf", "/etc/mke2fs.conf", 0o644)
	}
	mods, err := moduleOrder(kver, "nbd", "xfs")
	if err != nil {
		t.Fatal(err)
	}
	var insmod strings.Builder
	for _, m := range mods {
		name := filepath.Base(m)
		img.hostFile(t, "/modules/"+name, filepath.Join("/lib/modules", kver, m), 0o644)
		fmt.Fprintf(&insmod, "insmod /modules/%s || fail \"insmod %s\"\n", name, name)
	}
	img.file("/init", []byte(fmt.Sprintf(vmScript, insmod.String())), 0o755)
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := os.WriteFile(initrd, img.bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	built := time.Since(start)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-kernel", "/boot/vmlinuz-"+kver, "-initrd", initrd,
		"-m", "1024", "-smp", "1", "-nographic", "-no-reboot", "-net", "none",
		"-append", "console=ttyS0 panic=-1 quiet")
	var console bytes.Buffer
	cmd.Stdout, cmd.Stderr = &console, &console
	bootStart := time.Now()
	runErr := cmd.Run()
	os.WriteFile(filepath.Join(dir, "console.log"), console.Bytes(), 0o644)

	result := ""
	sc := bufio.NewScanner(bytes.NewReader(console.Bytes()))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "STEP "); i >= 0 {
			t.Log(line[i:])
		}
		if i := strings.Index(line, "RESULT: "); i >= 0 {
			result = line[i+len("RESULT: "):]
		}
	}
	t.Logf("build %v, VM %v (kernel %s, TCG: no KVM)", built.Round(time.Second), time.Since(bootStart).Round(time.Second), kver)
	if result != "PASS" {
		t.Fatalf("VM result %q (qemu: %v); console:\n%s", result, runErr, tail(console.String(), 120))
	}
}

// kernelWithNBD returns the newest kernel version with both a
// /boot/vmlinuz and the nbd module.
func kernelWithNBD() (string, error) {
	mods, _ := filepath.Glob("/lib/modules/*/kernel/drivers/block/nbd.ko")
	var vers []string
	for _, m := range mods {
		v := strings.Split(strings.TrimPrefix(m, "/lib/modules/"), "/")[0]
		if _, err := os.Stat("/boot/vmlinuz-" + v); err == nil {
			vers = append(vers, v)
		}
	}
	if len(vers) == 0 {
		return "", fmt.Errorf("no kernel in /boot has an uncompressed nbd module in /lib/modules")
	}
	sort.Strings(vers)
	return vers[len(vers)-1], nil
}

// moduleOrder returns the paths (relative to /lib/modules/VER) of the named
// modules and of the modules they need, each after what it needs, from
// modules.dep.
func moduleOrder(kver string, names ...string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join("/lib/modules", kver, "modules.dep"))
	if err != nil {
		return nil, err
	}
	deps := map[string][]string{}
	byName := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
		byName[strings.TrimSuffix(filepath.Base(mod), ".ko")] = mod
	}
	var out []string
	seen := map[string]bool{}
	var visit func(string) error
	visit = func(mod string) error {
		if seen[mod] {
			return nil
		}
		seen[mod] = true
		if !strings.HasSuffix(mod, ".ko") {
			return fmt.Errorf("module %s is compressed; the VM test loads uncompressed modules", mod)
		}
		// modules.dep lists every dependency, the direct ones first.
		for i := len(deps[mod]) - 1; i >= 0; i-- {
			if err := visit(deps[mod][i]); err != nil {
				return err
			}
		}
		out = append(out, mod)
		return nil
	}
	for _, n := range names {
		mod, ok := byName[n]
		if !ok {
			continue // built into the kernel
		}
		if err := visit(mod); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func goBuild(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// lookTool finds a program in PATH or the sbin directories.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func mustTool(t *testing.T, name string) string {
	t.Helper()
	p, err := lookTool(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// initramfs builds a cpio archive in the "newc" format the kernel unpacks.
type initramfs struct {
	buf  bytes.Buffer
	ino  int
	dirs map[string]bool
}

func newInitramfs() *initramfs { return &initramfs{dirs: map[string]bool{"/": true}} }

func (r *initramfs) entry(name string, mode uint32, data []byte) {
	r.ino++
	name = strings.TrimPrefix(name, "/")
	fmt.Fprintf(&r.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		r.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	r.buf.WriteString(name)
	r.buf.WriteByte(0)
	r.pad()
	r.buf.Write(data)
	r.pad()
}

func (r *initramfs) pad() {
	for r.buf.Len()%4 != 0 {
		r.buf.WriteByte(0)
	}
}

// dir adds directory d and its parents.
func (r *initramfs) dir(d string) {
	if r.dirs[d] {
		return
	}
	r.dir(filepath.Dir(d))
	r.dirs[d] = true
	r.entry(d, 0o040755, nil)
}

func (r *initramfs) file(name string, data []byte, perm uint32) {
	r.dir(filepath.Dir(name))
	r.entry(name, 0o100000|perm, data)
}

func (r *initramfs) symlink(name, target string) {
	r.dir(filepath.Dir(name))
	r.entry(name, 0o120777, []byte(target))
}

func (r *initramfs) hostFile(t *testing.T, name, src string, perm uint32) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	r.file(name, b, perm)
}

var lddPath = regexp.MustCompile(`(/\S+) \(0x`)

// binary adds a dynamically linked program and the libraries ldd names,
// at their host paths.
func (r *initramfs) binary(t *testing.T, name, src string) {
	t.Helper()
	r.hostFile(t, name, src, 0o755)
	out, err := exec.Command("ldd", src).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", src, err)
	}
	for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
		lib := m[1]
		if r.dirs[lib] {
			continue
		}
		r.dirs[lib] = true // added once
		r.hostFile(t, lib, lib, 0o755)
	}
}

// bytes returns the archive with its trailer.
func (r *initramfs) bytes() []byte {
	r.entry("TRAILER!!!", 0, nil)
	return r.buf.Bytes()
}

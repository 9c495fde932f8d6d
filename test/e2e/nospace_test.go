package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestFullPool puts the pool on a small filesystem, fills it through NBD,
// and checks: writes fail with ENOSPC, the node keeps running, every
// acknowledged write reads back, and freeing space lets writes continue.
func TestFullPool(t *testing.T) {
	needRoot(t)
	needTools(t, "qemu-io", "mkfs.ext4")
	dir := t.TempDir()
	img := filepath.Join(dir, "pool.img")
	poolDir := filepath.Join(dir, "data", "pool")
	if err := os.MkdirAll(poolDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tool(t, "truncate", "-s", "96M", img)
	tool(t, "mkfs.ext4", "-q", "-F", img)
	tool(t, "mount", "-o", "loop", img, poolDir)
	t.Cleanup(func() { exec.Command("umount", "-l", poolDir).Run() })

	n := newNodeAt(t, dir, filepath.Join(dir, "data"))
	n.run("volume", "create", "keep", "--size", "64MiB")
	n.run("volume", "create", "spare", "--size", "64MiB")
	n.run("volume", "create", "fill", "--size", "256MiB")
	qemuIO(t, n.uri("keep"), "write -P 0x44 0 16M", "flush")
	qemuIO(t, n.uri("spare"), "write -P 0x55 0 40M", "flush")

	// Write 1 MiB chunks until the pool is full; remember what was acknowledged.
	var cmds []string
	for i := 0; i < 200; i++ {
		cmds = append(cmds, fmt.Sprintf("write -P %d %dM 1M", 1+i%200, i))
	}
	cmds = append(cmds, "flush")
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, _ := exec.Command("qemu-io", append(args, n.uri("fill"))...).CombinedOutput()
	if !strings.Contains(string(out), "No space left on device") {
		t.Fatalf("filling a 96 MiB pool with 200 MiB did not report ENOSPC:\n%s", lastLines(string(out), 20))
	}
	acked := ackedOffsets(string(out))
	if len(acked) == 0 {
		t.Fatalf("no write was acknowledged before ENOSPC:\n%s", lastLines(string(out), 20))
	}

	// The node still answers, and acknowledged data is intact.
	n.run("status")
	qemuIO(t, n.uri("keep"), "read -P 0x44 0 16M")
	for _, off := range acked {
		qemuIO(t, n.uri("fill"), fmt.Sprintf("read -P %d %dM 1M", 1+off%200, off))
	}

	// Freeing space lets writes continue.
	n.run("volume", "delete", "spare")
	qemuIO(t, n.uri("fill"), "write -P 0x66 200M 8M", "flush", "read -P 0x66 200M 8M")
	qemuIO(t, n.uri("keep"), "read -P 0x44 0 16M")
}

var wroteRE = regexp.MustCompile(`wrote 1048576/1048576 bytes at offset (\d+)`)

// ackedOffsets returns the MiB offsets qemu-io reported as written.
func ackedOffsets(out string) []int {
	var offs []int
	for _, m := range wroteRE.FindAllStringSubmatch(out, -1) {
		b, _ := strconv.Atoi(m[1])
		offs = append(offs, b>>20)
	}
	return offs
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

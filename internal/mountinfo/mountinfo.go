// Package mountinfo reads the kernel's table of mounts
// (/proc/self/mountinfo).
package mountinfo

import (
	"os"
	"strconv"
	"strings"
)

// Unescape decodes the octal escapes mountinfo uses in paths (\040 for a
// space, \011 for a tab, \012 for a newline, \134 for a backslash).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Mount is one line of mountinfo.
type Mount struct {
	// Dev is the device of the filesystem, "major:minor".
	Dev string
	// Root is the directory of the filesystem mounted here: "/" for a
	// whole filesystem, a path inside it for a bind mount of a part (a bind
	// mount of the device node /dev/loop3 shows "/loop3").
	Root       string
	MountPoint string
	// Options are the per-mount options, e.g. "rw,nosuid,relatime".
	Options string
	FSType  string
	Source  string
}

// ReadOnly reports whether the mount is read-only.
func (m Mount) ReadOnly() bool {
	for _, o := range strings.Split(m.Options, ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}

// Read returns the mounts of this process's mount namespace, in the order
// the kernel lists them (a mount listed later is on top of an earlier one
// at the same place).
func Read() ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return Parse(string(b)), nil
}

// Parse reads the text of a mountinfo file; malformed lines are skipped.
func Parse(data string) []Mount {
	var out []Mount
	for _, line := range strings.Split(data, "\n") {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) {
			continue
		}
		out = append(out, Mount{
			Dev:        f[2],
			Root:       Unescape(f[3]),
			MountPoint: Unescape(f[4]),
			Options:    f[5],
			FSType:     f[sep+1],
			Source:     Unescape(f[sep+2]),
		})
	}
	return out
}

// At returns the mount on top at dir, if any.
func At(ms []Mount, dir string) (Mount, bool) {
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].MountPoint == dir {
			return ms[i], true
		}
	}
	return Mount{}, false
}

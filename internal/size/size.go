// Package size parses and formats byte sizes the way users write them:
// 512MiB, 10GiB, 1T, 4096.
package size

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/strata-storage/strata/internal/errdefs"
)

var units = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"pib", 1 << 50},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000}, {"tb", 1000 * 1000 * 1000 * 1000},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}, {"p", 1 << 50},
	{"b", 1},
}

// Parse reads a size: a whole or decimal number with an optional unit.
// KiB/MiB/GiB/TiB and the bare K/M/G/T are powers of 1024; KB/MB/GB/TB are
// powers of 1000; no unit means bytes. Case is ignored. The result must be
// positive and fit in an int64.
func Parse(s string) (int64, error) {
	in := strings.ToLower(strings.TrimSpace(s))
	if in == "" {
		return 0, fmt.Errorf("size is empty: %w", errdefs.ErrInvalidArgument)
	}
	mult := int64(1)
	num := in
	for _, u := range units {
		if strings.HasSuffix(in, u.suffix) {
			mult, num = u.mult, strings.TrimSpace(strings.TrimSuffix(in, u.suffix))
			break
		}
	}
	if num == "" {
		return 0, fmt.Errorf("size %q has no number: %w", s, errdefs.ErrInvalidArgument)
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n <= 0 {
			return 0, fmt.Errorf("size %q must be positive: %w", s, errdefs.ErrInvalidArgument)
		}
		if n > math.MaxInt64/mult {
			return 0, fmt.Errorf("size %q is too large: %w", s, errdefs.ErrInvalidArgument)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("size %q is not a number with an optional unit (e.g. 512MiB, 10GiB, 1T, 4096): %w", s, errdefs.ErrInvalidArgument)
	}
	v := f * float64(mult)
	if v < 1 {
		return 0, fmt.Errorf("size %q must be positive: %w", s, errdefs.ErrInvalidArgument)
	}
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large: %w", s, errdefs.ErrInvalidArgument)
	}
	return int64(v), nil
}

// Format writes n bytes in the largest binary unit that keeps it readable:
// 10GiB, 1.5GiB, 4096B.
func Format(n int64) string {
	abs := n
	if abs < 0 {
		abs = -abs
	}
	for _, u := range []struct {
		name string
		v    int64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if abs >= u.v {
			if n%u.v == 0 {
				return fmt.Sprintf("%d%s", n/u.v, u.name)
			}
			return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", float64(n)/float64(u.v)), "0"), ".") + u.name
		}
	}
	return fmt.Sprintf("%dB", n)
}

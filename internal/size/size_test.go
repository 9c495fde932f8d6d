package size

import (
	"errors"
	"testing"

	"github.com/strata-storage/strata/internal/errdefs"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"4096", 4096}, {"512MiB", 512 << 20}, {"10GiB", 10 << 30}, {"1T", 1 << 40},
		{"1t", 1 << 40}, {"2G", 2 << 30}, {"1.5GiB", 3 << 29}, {"1GB", 1e9}, {" 64 MiB ", 64 << 20},
		{"100b", 100},
	} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "0", "-1", "GiB", "ten", "1XB", "1e400", "9999999999PiB", "NaN", "0.1b"} {
		if _, err := Parse(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Parse(%q) error = %v; want invalid argument", bad, err)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{4096: "4KiB", 10 << 30: "10GiB", 3 << 29: "1.5GiB", 100: "100B", 1 << 40: "1TiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q; want %q", n, got, want)
		}
	}
}

package qos

import (
	"errors"
	"strings"
	"testing"

	"github.com/strata-storage/strata/internal/errdefs"
)

func TestParsePair(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Pair
		text string
	}{
		{"1000", Pair{1000, 1000}, "1000"},
		{"1000,500", Pair{1000, 500}, "1000,500"},
		{"off", Pair{0, 0}, "off"},
		{"OFF", Pair{0, 0}, "off"},
		{"0", Pair{0, 0}, "off"},
		{"500,off", Pair{500, 0}, "500,off"},
		{"off,500", Pair{0, 500}, "off,500"},
		{" 10 , 20 ", Pair{10, 20}, "10,20"},
		{"7,7", Pair{7, 7}, "7"},
		{"1000000000", Pair{MaxValue, MaxValue}, "1000000000"},
	} {
		got, err := ParsePair(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParsePair(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		if got.String() != tc.text {
			t.Errorf("%q reads back as %q, want %q", tc.in, got.String(), tc.text)
		}
		if again, err := ParsePair(got.String()); err != nil || again != got {
			t.Errorf("ParsePair(%q) after String = %v, %v", got.String(), again, err)
		}
	}
	for in, msg := range map[string]string{
		"":           "empty value",
		"-5":         "negative",
		"5,-1":       "negative",
		"abc":        "not a whole number",
		"1.5":        "not a whole number",
		"1k":         "not a whole number",
		"1,2,3":      "3 values",
		"1000,":      "empty value",
		",":          "empty value",
		"1000000001": "larger than the maximum",
	} {
		_, err := ParsePair(in)
		if err == nil || !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParsePair(%q) = %v, want an invalid argument saying %q", in, err, msg)
		}
	}
}

func TestLimitsPairs(t *testing.T) {
	var l Limits
	l.SetIOPS(Pair{1000, 500})
	l.SetBandwidthMiB(Pair{0, 100})
	want := Limits{ReadIOPS: 1000, WriteIOPS: 500, WriteBytesPerSec: 100 << 20}
	if l != want {
		t.Fatalf("limits %+v, want %+v", l, want)
	}
	if l.IOPS().String() != "1000,500" || l.BandwidthMiB().String() != "off,100" {
		t.Fatalf("pairs %v %v", l.IOPS(), l.BandwidthMiB())
	}
	// Below 1 MiB/s rounds up rather than reading as off.
	if got := (Limits{ReadBytesPerSec: 1000}).BandwidthMiB(); got.Read != 1 {
		t.Fatalf("1000 B/s shows as %d MiB/s", got.Read)
	}
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Limits{{ReadIOPS: -1}, {WriteBytesPerSec: -1}, {WriteIOPS: MaxValue + 1}} {
		if err := bad.Validate(); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Validate(%+v) = %v", bad, err)
		}
	}
}

// Package qos holds a volume's I/O limits and the text form users write
// them in ("1000", "1000,500", "off", "500,off"). The engine enforces the
// limits (internal/engine), etcd records them (internal/meta), the API and
// the CLI read and show them.
package qos

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/strata-storage/strata/internal/errdefs"
)

// Limits caps a volume's I/O; a zero field is no limit.
//
// Accounting, as the engine applies it:
//   - a read or write counts against bandwidth by its length, and against
//     IOPS as one operation per started MiB (OpUnit): requests up to 1 MiB
//     are one operation, a 4 MiB request is four, so that large requests do
//     not multiply an IOPS limit into unlimited bandwidth;
//   - trim and write-zeroes count as one write operation each, whatever
//     their length, and not against bandwidth: they move no data (mkfs
//     discards a whole device in a few requests);
//   - flush is not limited: it moves no data and only orders earlier writes.
type Limits struct {
	ReadIOPS  int64 `json:"readIops,omitempty"`
	WriteIOPS int64 `json:"writeIops,omitempty"`
	// Bandwidth in bytes per second.
	ReadBytesPerSec  int64 `json:"readBytesPerSec,omitempty"`
	WriteBytesPerSec int64 `json:"writeBytesPerSec,omitempty"`
}

// OpUnit is the request size that counts as one operation against an IOPS
// limit: a request counts as ceil(length/OpUnit) operations, at least one.
const OpUnit = 1 << 20

// MiB is the unit of bandwidth in the text form of limits.
const MiB = 1 << 20

// MaxValue is the largest limit accepted: IOPS, or MiB/s in the text form.
const MaxValue = 1_000_000_000

// IsZero says whether no limit is set.
func (l Limits) IsZero() bool { return l == Limits{} }

// Validate refuses negative limits and limits above MaxValue (IOPS) or
// MaxValue MiB/s (bandwidth).
func (l Limits) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
		max  int64
	}{
		{"read IOPS", l.ReadIOPS, MaxValue},
		{"write IOPS", l.WriteIOPS, MaxValue},
		{"read bandwidth", l.ReadBytesPerSec, MaxValue * MiB},
		{"write bandwidth", l.WriteBytesPerSec, MaxValue * MiB},
	} {
		if f.v < 0 {
			return fmt.Errorf("%s limit %d is negative (0 removes the limit): %w", f.name, f.v, errdefs.ErrInvalidArgument)
		}
		if f.v > f.max {
			return fmt.Errorf("%s limit %d is larger than the maximum %d: %w", f.name, f.v, f.max, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// Pair is a read and a write value, as users write them: "R,W", or one
// value for both. 0 means no limit.
type Pair struct {
	Read, Write int64
}

// ParsePair reads "1000" (both), "1000,500" (read, write), "off" or "0" (no
// limit), "500,off". Values are whole numbers from 0 to MaxValue; "off"
// and "0" are the same. Anything else (a negative or non-numeric value, an
// empty part, three parts) is errdefs.ErrInvalidArgument.
func ParsePair(s string) (Pair, error) {
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return Pair{}, fmt.Errorf("%q has %d values; give one (both directions) or two (READ,WRITE): %w", s, len(parts), errdefs.ErrInvalidArgument)
	}
	var vals [2]int64
	for i, p := range parts {
		v, err := parseValue(strings.TrimSpace(p))
		if err != nil {
			return Pair{}, fmt.Errorf("%q: %w", s, err)
		}
		vals[i] = v
	}
	if len(parts) == 1 {
		vals[1] = vals[0]
	}
	return Pair{Read: vals[0], Write: vals[1]}, nil
}

func parseValue(p string) (int64, error) {
	if p == "" {
		return 0, fmt.Errorf("empty value; use a number or off (READ,WRITE or one value for both): %w", errdefs.ErrInvalidArgument)
	}
	if strings.EqualFold(p, "off") {
		return 0, nil
	}
	v, err := strconv.ParseInt(p, 10, 64)
	if err != nil {
		if strings.HasPrefix(p, "-") {
			return 0, fmt.Errorf("%q is negative; use a whole number from 0 to %d, or off: %w", p, int64(MaxValue), errdefs.ErrInvalidArgument)
		}
		return 0, fmt.Errorf("%q is not a whole number or off: %w", p, errdefs.ErrInvalidArgument)
	}
	if v < 0 {
		return 0, fmt.Errorf("%q is negative; use a whole number from 0 to %d, or off: %w", p, int64(MaxValue), errdefs.ErrInvalidArgument)
	}
	if v > MaxValue {
		return 0, fmt.Errorf("%q is larger than the maximum %d: %w", p, int64(MaxValue), errdefs.ErrInvalidArgument)
	}
	return v, nil
}

// String is the canonical text of the pair: "off", "1000" when both are
// the same, "1000,500" or "500,off" otherwise. ParsePair reads it back.
func (p Pair) String() string {
	if p.Read == p.Write {
		return valueText(p.Read)
	}
	return valueText(p.Read) + "," + valueText(p.Write)
}

func valueText(v int64) string {
	if v == 0 {
		return "off"
	}
	return strconv.FormatInt(v, 10)
}

// IOPS returns the IOPS limits as a pair.
func (l Limits) IOPS() Pair { return Pair{l.ReadIOPS, l.WriteIOPS} }

// BandwidthMiB returns the bandwidth limits in MiB/s, rounded up so that a
// limit below 1 MiB/s does not read as "off".
func (l Limits) BandwidthMiB() Pair {
	return Pair{ceilDiv(l.ReadBytesPerSec, MiB), ceilDiv(l.WriteBytesPerSec, MiB)}
}

// SetIOPS sets the IOPS limits from p.
func (l *Limits) SetIOPS(p Pair) { l.ReadIOPS, l.WriteIOPS = p.Read, p.Write }

// SetBandwidthMiB sets the bandwidth limits from p, in MiB/s.
func (l *Limits) SetBandwidthMiB(p Pair) {
	l.ReadBytesPerSec, l.WriteBytesPerSec = p.Read*MiB, p.Write*MiB
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// Ops is the number of operations a read or write of n bytes counts as
// against an IOPS limit: one per started OpUnit, at least one.
func Ops(n int) int64 {
	if n <= OpUnit {
		return 1
	}
	return ceilDiv(int64(n), OpUnit)
}

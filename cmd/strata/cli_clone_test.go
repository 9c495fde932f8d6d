package main

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "none": 0, "90m": 5400, "8h": 28800, "1h30m": 5400, "3d": 3 * 86400, "0.5d": 43200} {
		if got, err := parseDuration("--ttl", in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"5q", "-1h", "500ms", "d", "-2d"} {
		if _, err := parseDuration("--ttl", in); err == nil {
			t.Errorf("parseDuration(%q) succeeded", in)
		}
	}
}

func TestLeft(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{-time.Second, "expired"}, {20 * time.Second, "<1m"}, {5 * time.Minute, "5m"}, {8 * time.Hour, "8h00m"}, {(7*60 + 59) * time.Minute, "7h59m"}, {73 * time.Hour, "3d1h"}} {
		if got := left(timestamppb.New(now.Add(tc.d)), true, now); got != tc.want {
			t.Errorf("left(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
	if got := left((*timestamppb.Timestamp)(nil), false, now); got != "-" {
		t.Errorf("left(unset) = %q", got)
	}
}

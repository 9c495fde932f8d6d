package client

import "testing"

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:7420":         "127.0.0.1:7420",
		" 127.0.0.1:7420 ":       "127.0.0.1:7420",
		"http://10.0.0.1:9000/":  "10.0.0.1:9000",
		"HTTPS://host:1":         "host:1",
		"grpc://host:2":          "host:2",
		"localhost":              "localhost:7420",
		"[::1]":                  "[::1]:7420",
		"[::1]:8000":             "[::1]:8000",
		"passthrough:///a.b:123": "a.b:123",
		"":                       "",
	} {
		if got := normalizeAddr(in); got != want {
			t.Errorf("normalizeAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

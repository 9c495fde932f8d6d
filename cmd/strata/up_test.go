package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
	"github.com/strata-storage/strata/client"
)

func upFreeURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}

// upOutput is an io.Writer safe to read while runUp writes to it.
type upOutput struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *upOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *upOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runUpUntilConfig starts runUp and waits for it to write the client config.
func runUpUntilConfig(t *testing.T, o upOptions) (client.Config, *upOutput, func() error) {
	t.Helper()
	os.Remove(o.configPath)
	ctx, cancel := context.WithCancel(context.Background())
	out := &upOutput{}
	done := make(chan error, 1)
	go func() { done <- runUp(ctx, o, out) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		cfg, err := client.LoadConfig(o.configPath)
		if err == nil {
			return cfg, out, func() error { cancel(); return <-done }
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("strata up ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no client config after 60s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestUpWritesConfigAndRestarts(t *testing.T) {
	dir := t.TempDir()
	o := upOptions{
		dataDir:       filepath.Join(dir, "data"),
		apiAddr:       "127.0.0.1:0",
		nbdAddr:       "127.0.0.1:0",
		etcdClientURL: upFreeURL(t),
		etcdPeerURL:   upFreeURL(t),
		nodeName:      "n1",
		configPath:    filepath.Join(dir, "cfg", "config.yaml"),
		logLevel:      "error",
	}
	cfg, out, stop := runUpUntilConfig(t, o)
	for _, p := range []string{o.configPath, filepath.Join(o.dataDir, "admin.token")} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v, want mode 0600", p, fi.Mode(), err)
		}
	}
	tok, _ := os.ReadFile(filepath.Join(o.dataDir, "admin.token"))
	if strings.TrimSpace(string(tok)) != cfg.Token || len(cfg.Token) != 64 {
		t.Fatalf("config token %q, admin.token %q", cfg.Token, tok)
	}
	ctx := context.Background()
	c, err := client.Dial(ctx, cfg.API, cfg.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Volumes.CreateVolume(ctx, &stratav1.CreateVolumeRequest{Name: "demo", SizeBytes: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !strings.Contains(out.String(), "strata volume create demo") {
		t.Fatalf("next steps not printed:\n%s", out)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	// A second start keeps the token and the volume.
	cfg2, _, stop := runUpUntilConfig(t, o)
	defer stop()
	if cfg2.Token != cfg.Token {
		t.Fatal("the admin token changed across restarts")
	}
	c, err = client.Dial(ctx, cfg2.API, cfg2.Token)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Volumes.GetVolume(ctx, &stratav1.GetVolumeRequest{Name: "demo"}); err != nil {
		t.Fatalf("volume after restart: %v", err)
	}
}

func TestUpPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	err = runUp(context.Background(), upOptions{
		dataDir:    filepath.Join(dir, "data"),
		apiAddr:    ln.Addr().String(),
		nbdAddr:    "127.0.0.1:0",
		nodeName:   "n1",
		configPath: filepath.Join(dir, "config.yaml"),
		logLevel:   "error",
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--api-addr") {
		t.Fatalf("up on a busy port: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "config.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("config written by a failed start: %v", err)
	}
}

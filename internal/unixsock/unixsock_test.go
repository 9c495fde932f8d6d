package unixsock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenReplacesOnlyStaleSockets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "s.sock")
	ln, err := Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", st.Mode(), err)
	}
	if _, err := Listen(path, 0o600); !errors.Is(err, ErrServed) || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("listen on a live socket: %v", err)
	}
	// A socket nobody serves any more (its server died without removing it).
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket file is gone already: %v", err)
	}
	ln, err = Listen(path, 0o600)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	ln.Close()
}

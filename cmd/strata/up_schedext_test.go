package main

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// A busy extender port fails strata up with the flag to change, after
// stopping the node it had started.
func TestUpSchedulerExtenderPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	err = runUp(context.Background(), upOptions{
		dataDir:               filepath.Join(dir, "data"),
		apiAddr:               "127.0.0.1:0",
		nbdAddr:               "127.0.0.1:0",
		etcdClientURL:         upFreeURL(t),
		etcdPeerURL:           upFreeURL(t),
		nodeName:              "n1",
		configPath:            filepath.Join(dir, "config.yaml"),
		logLevel:              "error",
		schedulerExtenderAddr: ln.Addr().String(),
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--scheduler-extender-addr") {
		t.Fatalf("up on a busy extender port: %v", err)
	}
}

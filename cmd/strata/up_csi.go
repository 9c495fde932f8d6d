package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/csi"
)

// serveCSI serves the CSI driver on the unix socket of endpoint through the
// node's API. done receives Serve's result if it stops by itself; stop ends
// it (and must then not be preceded by a read of done that is not given
// back).
func serveCSI(ctx context.Context, endpoint, nodeName string, n *node, log *slog.Logger) (done chan error, stop func(), err error) {
	if _, err := csi.ParseEndpoint(endpoint); err != nil {
		return nil, nil, fmt.Errorf("--csi-endpoint: %w", err)
	}
	c, err := client.Dial(ctx, n.apiAddr, n.token)
	if err != nil {
		return nil, nil, fmt.Errorf("csi driver: %w", err)
	}
	d, err := csi.New(csi.Backend{Volumes: c.Volumes, Snapshots: c.Snapshots, Cluster: c.Cluster},
		csi.Options{NodeName: nodeName, Version: version, Logger: log})
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done = make(chan error, 1)
	go func() { done <- d.Serve(cctx, endpoint) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			log.Warn("csi driver", "err", err)
		}
		c.Close()
	}
	return done, stop, nil
}

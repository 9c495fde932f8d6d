package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/strata-storage/strata/client"
	"github.com/strata-storage/strata/internal/schedext"
)

// serveSchedulerExtender serves the Kubernetes scheduler extender on addr
// through the node's API. done receives Serve's result if it stops by
// itself; stop ends it (and must then not be preceded by a read of done
// that is not given back).
func serveSchedulerExtender(ctx context.Context, addr string, n *node, log *slog.Logger) (done chan error, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("scheduler extender: %w (choose another port with --scheduler-extender-addr)", err)
	}
	c, err := client.Dial(ctx, n.apiAddr, n.token)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("scheduler extender: %w", err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done = make(chan error, 1)
	go func() {
		done <- schedext.Serve(sctx, ln, schedext.Backend{Volumes: c.Volumes, Cluster: c.Cluster}, schedext.Options{Logger: log})
	}()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			log.Warn("scheduler extender", "err", err)
		}
		c.Close()
	}
	return done, stop, nil
}

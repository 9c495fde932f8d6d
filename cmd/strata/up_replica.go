package main

import (
	"context"
	"errors"
	"time"

	"github.com/strata-storage/strata/internal/replica"
)

// replicaService is the replica server of a node: the data protocol
// through which other nodes' engines read and write this node's replicas.
type replicaService struct {
	stop context.CancelFunc
	done chan error
}

// serveReplicas starts serving the node's pool on its replica listener.
func (n *node) serveReplicas(ctx context.Context) {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.replicaSrv = replicaService{stop: cancel, done: make(chan error, 1)}
	srv := replica.NewServer(n.agent.Pool(), n.agent.Epochs(), n.log)
	ln := n.replicaLn
	go func() { n.replicaSrv.done <- srv.Serve(rctx, ln) }()
}

// stopReplicas stops the replica server (its connections end: the engines
// of other nodes see this node's replicas go) or, when it never started,
// closes its listener.
func (n *node) stopReplicas() error {
	if n.replicaSrv.stop == nil {
		if n.replicaLn != nil {
			n.replicaLn.Close()
		}
		return nil
	}
	n.replicaSrv.stop()
	select {
	case err := <-n.replicaSrv.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("replica server: connections did not end within 30s")
	}
}

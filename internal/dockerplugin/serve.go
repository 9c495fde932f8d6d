package dockerplugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/strata-storage/strata/internal/unixsock"
)

// DefaultSocket is where dockerd looks for the strata driver.
const DefaultSocket = "/run/docker/plugins/strata.sock"

// Serve serves the plugin on the unix socket socketPath until ctx is done,
// then removes the socket. Docker names the driver after the socket's base
// name: /run/docker/plugins/strata.sock is the driver "strata". A stale socket
// left by a crash is replaced; one that another process still serves is not.
func Serve(ctx context.Context, socketPath string, api Backend, opts Options) error {
	p, err := New(api, opts)
	if err != nil {
		return err
	}
	ln, err := Listen(socketPath)
	if err != nil {
		return err
	}
	defer os.Remove(socketPath)
	return p.Run(ctx, ln)
}

// Listen listens on the unix socket path, replacing a stale socket. Only
// root (dockerd) may drive the plugin: it mounts filesystems.
func Listen(path string) (net.Listener, error) {
	ln, err := unixsock.Listen(path, 0o600)
	if err != nil {
		if errors.Is(err, unixsock.ErrServed) {
			err = fmt.Errorf("%w (is another strata node running on this machine?)", err)
		}
		return nil, fmt.Errorf("docker plugin socket: %w", err)
	}
	return ln, nil
}

// Run serves the protocol on ln and runs the reconcile loop until ctx is
// done; it closes ln and returns once every goroutine it started has exited.
func (p *Plugin) Run(ctx context.Context, ln net.Listener) error {
	if p.hostMounts {
		err := shareMountRoot(p.opts.MountRoot)
		if err == nil {
			err = p.setupKeepers()
		}
		if err != nil {
			// Volumes still work; running containers lose theirs when
			// the node restarts (docs/docker.md).
			p.log.Warn("mount root is not shared: running containers will lose their volumes when the node restarts", "err", err)
		} else {
			p.keepers.Store(true)
		}
	}
	srv := &http.Server{
		Handler:           p.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		p.reconcileLoop(ctx)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	p.log.Info("docker volume plugin serving", "socket", ln.Addr().String(), "mount_root", p.opts.MountRoot)

	var err error
	select {
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err = srv.Shutdown(shut)
		cancel()
		if err != nil {
			srv.Close()
		}
		<-serveErr
		err = nil
	case err = <-serveErr:
	}
	<-loopDone
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// reconcileLoop runs Reconcile at start and every ReconcileInterval.
func (p *Plugin) reconcileLoop(ctx context.Context) {
	if p.opts.ReconcileInterval < 0 {
		return
	}
	t := time.NewTicker(p.opts.ReconcileInterval)
	defer t.Stop()
	for {
		if err := p.Reconcile(ctx); err != nil && ctx.Err() == nil {
			p.log.Debug("reconcile", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

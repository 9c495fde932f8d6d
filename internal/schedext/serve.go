package schedext

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Serve serves the extender's Handler on ln until ctx is done; it closes ln
// and returns once the server has stopped (nil after ctx is done).
func Serve(ctx context.Context, ln net.Listener, api Backend, opts Options) error {
	e, err := New(api, opts)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           e.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	e.log.Info("scheduler extender serving", "addr", ln.Addr().String())
	select {
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shut); err != nil {
			srv.Close()
		}
		<-serveErr
		return nil
	case err := <-serveErr:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		return err
	}
}

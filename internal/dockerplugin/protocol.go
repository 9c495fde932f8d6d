package dockerplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/strata-storage/strata/internal/errdefs"
)

// contentType is the media type of Docker's plugin protocol, version 1.2.
const contentType = "application/vnd.docker.plugins.v1.2+json"

// callTimeout bounds one call. Docker waits on Mount without a deadline of its
// own; a first mount makes a filesystem, which takes seconds, not minutes.
const callTimeout = 2 * time.Minute

type nameRequest struct {
	Name string `json:"Name"`
}

type createRequest struct {
	Name string            `json:"Name"`
	Opts map[string]string `json:"Opts"`
}

type mountRequest struct {
	Name string `json:"Name"`
	ID   string `json:"ID"`
}

type errResponse struct {
	Err string `json:"Err"`
}

type mountResponse struct {
	Mountpoint string `json:"Mountpoint"`
	Err        string `json:"Err"`
}

type getResponse struct {
	Volume *VolumeInfo `json:"Volume,omitempty"`
	Err    string      `json:"Err"`
}

type listResponse struct {
	Volumes []*VolumeInfo `json:"Volumes"`
	Err     string        `json:"Err"`
}

type capabilitiesResponse struct {
	Capabilities struct {
		Scope string `json:"Scope"`
	} `json:"Capabilities"`
}

// Handler returns the HTTP handler of Docker's volume plugin protocol.
// Errors are answered with status 500 and {"Err": message}: dockerd shows the
// message to the user ("VolumeDriver.Create: unknown option ...").
func (p *Plugin) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string][]string{"Implements": {"VolumeDriver"}})
	})
	mux.HandleFunc("POST /VolumeDriver.Capabilities", func(w http.ResponseWriter, r *http.Request) {
		var c capabilitiesResponse
		c.Capabilities.Scope = "global"
		reply(w, http.StatusOK, c)
	})
	mux.HandleFunc("POST /VolumeDriver.Create", p.call(func(ctx context.Context, body []byte) (any, error) {
		var req createRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return errResponse{}, p.Create(ctx, req.Name, req.Opts)
	}))
	mux.HandleFunc("POST /VolumeDriver.Remove", p.call(func(ctx context.Context, body []byte) (any, error) {
		var req nameRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return errResponse{}, p.Remove(ctx, req.Name)
	}))
	mux.HandleFunc("POST /VolumeDriver.Mount", p.call(func(ctx context.Context, body []byte) (any, error) {
		var req mountRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		mp, err := p.Mount(ctx, req.Name, req.ID)
		return mountResponse{Mountpoint: mp}, err
	}))
	mux.HandleFunc("POST /VolumeDriver.Unmount", p.call(func(ctx context.Context, body []byte) (any, error) {
		var req mountRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		return errResponse{}, p.Unmount(ctx, req.Name, req.ID)
	}))
	mux.HandleFunc("POST /VolumeDriver.Path", p.call(func(ctx context.Context, body []byte) (any, error) {
		var req nameRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		mp, err := p.Path(ctx, req.Name)
		return mountResponse{Mountpoint: mp}, err
	}))
	mux.HandleFunc("POST /VolumeDriver.Get", p.call(func(ctx context.Context, body []byte) (any, error) {
		var req nameRequest
		if err := decode(body, &req); err != nil {
			return nil, err
		}
		v, err := p.Get(ctx, req.Name)
		return getResponse{Volume: v}, err
	}))
	mux.HandleFunc("POST /VolumeDriver.List", p.call(func(ctx context.Context, body []byte) (any, error) {
		vols, err := p.List(ctx)
		return listResponse{Volumes: vols}, err
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, errResponse{Err: fmt.Sprintf("strata volume plugin: no method %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

// call runs one protocol method with a deadline and logs its failures.
func (p *Plugin) call(fn func(ctx context.Context, body []byte) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), callTimeout)
		defer cancel()
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			reply(w, http.StatusBadRequest, errResponse{Err: "read request: " + err.Error()})
			return
		}
		resp, err := fn(ctx, body)
		if err != nil {
			method := strings.TrimPrefix(r.URL.Path, "/")
			p.log.Warn("docker call failed", "method", method, "request", string(body), "err", err)
			reply(w, http.StatusInternalServerError, errResponse{Err: userMessage(err)})
			return
		}
		reply(w, http.StatusOK, resp)
	}
}

// userMessage is the error as the docker CLI shows it: the sentinel suffix
// (": invalid argument") says nothing to a docker user and is dropped.
func userMessage(err error) string {
	msg := err.Error()
	for _, kind := range []error{errdefs.ErrInvalidArgument, errdefs.ErrNotFound, errdefs.ErrAlreadyExists, errdefs.ErrFailedPrecondition} {
		suffix := ": " + kind.Error()
		if errors.Is(err, kind) && strings.HasSuffix(msg, suffix) && len(msg) > len(suffix) {
			return strings.TrimSuffix(msg, suffix)
		}
	}
	return msg
}

func decode(body []byte, v any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("strata volume plugin: bad request: %w", err)
	}
	return nil
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(code)
	// A write error means docker hung up; there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

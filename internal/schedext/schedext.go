// Package schedext is a Kubernetes scheduler extender served by the node
// daemon (strata up --scheduler-extender-addr): a thin adapter over the
// Strata API that makes kube-scheduler place pods near their volumes.
//
// kube-scheduler POSTs extenderv1.ExtenderArgs (the pod, and the candidate
// nodes as names when the extender is nodeCacheCapable, else as Node
// objects) to /filter and /prioritize. The extender finds the pod's Strata
// volumes without the Kubernetes API: the CSI driver labels every volume it
// provisions with its claim's name and namespace (LabelClaimName,
// LabelClaimNamespace), and a pod names its claims. Claims without a Strata
// volume (another driver's, or not provisioned yet under
// WaitForFirstConsumer) constrain nothing, and a pod without Strata volumes
// passes through unchanged, without a call to the API.
//
// filter drops the nodes a pod with Strata volumes cannot run on (Cluster.Fit)
// and prioritize scores the others by where the volumes' replicas are
// (Cluster.Score). Nodes are matched to Strata nodes by name, and their
// failure domains are Strata's node labels "zone" and "rack". Each request
// reads the cluster's state afresh (ListVolumes, GetStatus): nothing is
// cached, so a node that goes offline is seen at the next pod.
package schedext

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
)

// VolumeAPI is the part of Strata's volume service the extender uses;
// stratav1.VolumeServiceClient (client.Client.Volumes) implements it.
type VolumeAPI interface {
	ListVolumes(ctx context.Context, in *stratav1.ListVolumesRequest, opts ...grpc.CallOption) (*stratav1.ListVolumesResponse, error)
}

// ClusterAPI is the part of Strata's cluster service the extender uses;
// stratav1.ClusterServiceClient (client.Client.Cluster) implements it.
type ClusterAPI interface {
	GetStatus(ctx context.Context, in *stratav1.GetStatusRequest, opts ...grpc.CallOption) (*stratav1.Status, error)
}

// Backend is the Strata API the extender adapts. With a *client.Client c:
// Backend{Volumes: c.Volumes, Cluster: c.Cluster}.
type Backend struct {
	Volumes VolumeAPI
	Cluster ClusterAPI
}

// Options tune the extender.
type Options struct {
	// Timeout bounds the API calls made for one request; DefaultTimeout
	// when 0. kube-scheduler's own httpTimeout should be longer.
	Timeout time.Duration
	// Logger receives the extender's log; slog.Default() when nil.
	Logger *slog.Logger
}

// DefaultTimeout is the default of Options.Timeout.
const DefaultTimeout = 10 * time.Second

// maxBody bounds a request: ExtenderArgs carries whole Node objects when
// the extender is not nodeCacheCapable, a few KiB each.
const maxBody = 64 << 20

// Extender answers kube-scheduler's filter and prioritize calls. It is safe
// for concurrent use.
type Extender struct {
	api     Backend
	timeout time.Duration
	log     *slog.Logger
}

// New returns an extender over api.
func New(api Backend, opts Options) (*Extender, error) {
	if api.Volumes == nil || api.Cluster == nil {
		return nil, errors.New("schedext: the volume and cluster APIs are required")
	}
	e := &Extender{api: api, timeout: opts.Timeout, log: opts.Logger}
	if e.timeout == 0 {
		e.timeout = DefaultTimeout
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	return e, nil
}

// Filter keeps the nodes of args that the pod can run on and lists the
// others, with the reason, in FailedAndUnresolvableNodes: no reason the
// extender gives can be resolved by preempting pods, and nodes listed there
// are left out of preemption. Candidates come back in the form they came
// in: NodeNames, Nodes, or both. A malformed request or an API failure is
// reported in Error, which fails the pod's scheduling attempt (unless the
// extender is configured ignorable).
func (e *Extender) Filter(ctx context.Context, args *extenderv1.ExtenderArgs) *extenderv1.ExtenderFilterResult {
	res := &extenderv1.ExtenderFilterResult{}
	if err := checkArgs(args); err != nil {
		res.Error = err.Error()
		return res
	}
	cluster, vols, err := e.podState(ctx, args.Pod)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	failed := extenderv1.FailedNodesMap{}
	fits := func(name string) bool {
		if len(vols) == 0 {
			return true
		}
		if reason := cluster.Fit(name, vols); reason != "" {
			failed[name] = reason
			return false
		}
		return true
	}
	if args.NodeNames != nil {
		names := []string{}
		for _, n := range *args.NodeNames {
			if fits(n) {
				names = append(names, n)
			}
		}
		res.NodeNames = &names
	}
	if args.Nodes != nil {
		list := &corev1.NodeList{Items: []corev1.Node{}}
		for _, n := range args.Nodes.Items {
			if fits(n.Name) {
				list.Items = append(list.Items, n)
			}
		}
		res.Nodes = list
	}
	if len(failed) > 0 {
		res.FailedAndUnresolvableNodes = failed
		e.log.Debug("scheduler extender: nodes filtered out", "pod", podKey(args.Pod), "failed", failed)
	}
	return res
}

// Prioritize scores every candidate node of args (see Cluster.Score); every
// node scores 0 for a pod without placed Strata volumes.
func (e *Extender) Prioritize(ctx context.Context, args *extenderv1.ExtenderArgs) (extenderv1.HostPriorityList, error) {
	if err := checkArgs(args); err != nil {
		return nil, err
	}
	cluster, vols, err := e.podState(ctx, args.Pod)
	if err != nil {
		return nil, err
	}
	var names []string
	if args.NodeNames != nil {
		names = *args.NodeNames
	} else if args.Nodes != nil {
		for _, n := range args.Nodes.Items {
			names = append(names, n.Name)
		}
	}
	out := make(extenderv1.HostPriorityList, 0, len(names))
	for _, n := range names {
		score := extenderv1.MinExtenderPriority
		if len(vols) > 0 {
			score = cluster.Score(n, vols)
		}
		out = append(out, extenderv1.HostPriority{Host: n, Score: score})
	}
	if len(vols) > 0 {
		e.log.Debug("scheduler extender: scores", "pod", podKey(args.Pod), "scores", out)
	}
	return out, nil
}

// errBadArgs marks a request that can never succeed.
var errBadArgs = errors.New("bad ExtenderArgs")

func checkArgs(args *extenderv1.ExtenderArgs) error {
	if args.Pod == nil {
		return fmt.Errorf("%w: no Pod", errBadArgs)
	}
	if args.Pod.Name == "" {
		return fmt.Errorf("%w: the Pod has no metadata.name", errBadArgs)
	}
	return nil
}

// podState returns the pod's Strata volumes and the cluster's state; no
// volumes, and no API call, when the pod uses no Strata volume.
func (e *Extender) podState(ctx context.Context, pod *corev1.Pod) (Cluster, []Volume, error) {
	claims := Claims(pod)
	if len(claims) == 0 {
		return nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	list, err := e.api.Volumes.ListVolumes(ctx, &stratav1.ListVolumesRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("strata: list volumes: %w", err)
	}
	vols := podVolumes(namespace(pod), claims, list.Volumes)
	if len(vols) == 0 {
		return nil, nil, nil
	}
	st, err := e.api.Cluster.GetStatus(ctx, &stratav1.GetStatusRequest{})
	if err != nil {
		return nil, nil, fmt.Errorf("strata: cluster status: %w", err)
	}
	return newCluster(st, list.Volumes), vols, nil
}

// namespace is the pod's namespace; "default" when the request leaves it
// out, as the API server does.
func namespace(pod *corev1.Pod) string {
	if pod.Namespace == "" {
		return "default"
	}
	return pod.Namespace
}

func podKey(pod *corev1.Pod) string { return namespace(pod) + "/" + pod.Name }

// Handler serves POST /filter (ExtenderArgs in, ExtenderFilterResult out),
// POST /prioritize (ExtenderArgs in, HostPriorityList out) and GET /healthz
// (200 when the Strata API answers). A body that is not ExtenderArgs JSON is
// answered 400 with the reason.
func (e *Extender) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /filter", func(w http.ResponseWriter, r *http.Request) {
		args, ok := readArgs(w, r)
		if !ok {
			return
		}
		writeJSON(w, e.Filter(r.Context(), args))
	})
	mux.HandleFunc("POST /prioritize", func(w http.ResponseWriter, r *http.Request) {
		args, ok := readArgs(w, r)
		if !ok {
			return
		}
		list, err := e.Prioritize(r.Context(), args)
		switch {
		case errors.Is(err, errBadArgs):
			http.Error(w, err.Error(), http.StatusBadRequest)
		case err != nil:
			// kube-scheduler ignores a failed prioritize: the other
			// scores decide.
			e.log.Warn("scheduler extender: prioritize", "pod", podKey(args.Pod), "err", err)
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		default:
			writeJSON(w, list)
		}
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), e.timeout)
		defer cancel()
		if _, err := e.api.Cluster.GetStatus(ctx, &stratav1.GetStatusRequest{}); err != nil {
			http.Error(w, "strata: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	return mux
}

// readArgs decodes the request's ExtenderArgs, or answers the error.
func readArgs(w http.ResponseWriter, r *http.Request) (*extenderv1.ExtenderArgs, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		http.Error(w, fmt.Sprintf("request body is larger than %d bytes", maxBody), http.StatusRequestEntityTooLarge)
		return nil, false
	case err != nil:
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return nil, false
	case len(body) == 0:
		http.Error(w, "empty request body: want ExtenderArgs JSON", http.StatusBadRequest)
		return nil, false
	}
	var args extenderv1.ExtenderArgs
	if err := json.Unmarshal(body, &args); err != nil {
		http.Error(w, "request body is not ExtenderArgs JSON: "+err.Error(), http.StatusBadRequest)
		return nil, false
	}
	return &args, true
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

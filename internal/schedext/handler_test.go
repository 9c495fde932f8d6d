package schedext

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	stratav1 "github.com/strata-storage/strata/api/strata/v1"
)

// fakeAPI answers with fixed volumes and status, or fails, and counts calls.
type fakeAPI struct {
	vols  []*stratav1.Volume
	st    *stratav1.Status
	err   error
	calls atomic.Int32
}

func (f *fakeAPI) ListVolumes(context.Context, *stratav1.ListVolumesRequest, ...grpc.CallOption) (*stratav1.ListVolumesResponse, error) {
	f.calls.Add(1)
	return &stratav1.ListVolumesResponse{Volumes: f.vols}, f.err
}

func (f *fakeAPI) GetStatus(context.Context, *stratav1.GetStatusRequest, ...grpc.CallOption) (*stratav1.Status, error) {
	f.calls.Add(1)
	return f.st, f.err
}

func newTestServer(t *testing.T, api *fakeAPI) *httptest.Server {
	t.Helper()
	e, err := New(Backend{Volumes: api, Cluster: api}, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const podWithClaim = `{"Pod":{"metadata":{"name":"db-0","namespace":"shop"},"spec":{"volumes":[
	{"name":"data","persistentVolumeClaim":{"claimName":"data-db-0"}}]}},"NodeNames":["n1","n2"]}`

// A pod without claims passes through without a call to the API, in the
// form its nodes came in.
func TestHandlerPodWithoutClaims(t *testing.T) {
	api := &fakeAPI{err: errors.New("must not be called")}
	srv := newTestServer(t, api)
	body := `{"Pod":{"metadata":{"name":"web","namespace":"shop"},"spec":{"volumes":[{"name":"tmp","emptyDir":{}}]}},
		"Nodes":{"items":[{"metadata":{"name":"n1","labels":{"a":"b"}}},{"metadata":{"name":"n2"}}]}}`
	code, out := post(t, srv.URL+"/filter", body)
	var res extenderv1.ExtenderFilterResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != http.StatusOK {
		t.Fatalf("filter: %d %s (%v)", code, out, err)
	}
	if res.Error != "" || res.NodeNames != nil || res.Nodes == nil || len(res.Nodes.Items) != 2 ||
		res.Nodes.Items[0].Labels["a"] != "b" || len(res.FailedAndUnresolvableNodes)+len(res.FailedNodes) != 0 {
		t.Errorf("filter result: %s", out)
	}
	code, out = post(t, srv.URL+"/prioritize", body)
	if code != http.StatusOK || out != `[{"Host":"n1","Score":0},{"Host":"n2","Score":0}]` {
		t.Errorf("prioritize: %d %s", code, out)
	}
	if n := api.calls.Load(); n != 0 {
		t.Errorf("%d API calls for a pod without claims", n)
	}
}

// When the API fails, filter says so in Error (the pod's scheduling attempt
// fails) and prioritize answers 503 (kube-scheduler ignores its scores).
func TestHandlerAPIDown(t *testing.T) {
	srv := newTestServer(t, &fakeAPI{err: errors.New("connection refused")})
	code, out := post(t, srv.URL+"/filter", podWithClaim)
	var res extenderv1.ExtenderFilterResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != http.StatusOK {
		t.Fatalf("filter: %d %s (%v)", code, out, err)
	}
	if res.Error != "strata: list volumes: connection refused" || res.NodeNames != nil {
		t.Errorf("filter result: %s", out)
	}
	if code, out := post(t, srv.URL+"/prioritize", podWithClaim); code != http.StatusServiceUnavailable || !strings.Contains(out, "connection refused") {
		t.Errorf("prioritize: %d %s", code, out)
	}
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}

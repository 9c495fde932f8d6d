package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/strata-storage/strata/internal/meta"
)

// The pods below are ExtenderArgs as kube-scheduler sends them: the Pod as
// the API server has it, and the candidate nodes as NodeNames
// (nodeCacheCapable: true) or as Node objects.

// db-0 of a StatefulSet uses two Strata claims, a ConfigMap, and a claim of
// another driver.
const filterDB0 = `{
  "Pod": {
    "metadata": {
      "name": "db-0", "generateName": "db-", "namespace": "shop",
      "uid": "7c1f9a52-2f0e-4b5e-9d0c-3f1b2a4c5d6e", "resourceVersion": "48213",
      "creationTimestamp": "2026-03-02T10:15:04Z",
      "labels": {"app": "db", "apps.kubernetes.io/pod-index": "0", "statefulset.kubernetes.io/pod-name": "db-0"},
      "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
        "uid": "0b8e3c71-9a44-4d2e-8f16-5e7d9c2a1b30", "controller": true, "blockOwnerDeletion": true}]
    },
    "spec": {
      "volumes": [
        {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}},
        {"name": "logs", "persistentVolumeClaim": {"claimName": "logs-db-0"}},
        {"name": "backup", "persistentVolumeClaim": {"claimName": "nfs-backup", "readOnly": true}},
        {"name": "config", "configMap": {"name": "db-config", "defaultMode": 420}},
        {"name": "kube-api-access-x7k2p", "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}], "defaultMode": 420}}
      ],
      "containers": [{
        "name": "postgres", "image": "postgres:17",
        "ports": [{"name": "pg", "containerPort": 5432, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
        "volumeMounts": [
          {"name": "data", "mountPath": "/var/lib/postgresql/data"},
          {"name": "logs", "mountPath": "/var/log/postgresql"},
          {"name": "config", "mountPath": "/etc/postgresql"}
        ],
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"
      }],
      "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
      "serviceAccountName": "default", "serviceAccount": "default", "hostname": "db-0", "subdomain": "db",
      "securityContext": {}, "schedulerName": "default-scheduler",
      "tolerations": [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
      ],
      "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
    },
    "status": {"phase": "Pending", "qosClass": "Burstable"}
  },
  "Nodes": null,
  "NodeNames": ["k8s-a1", "k8s-a2", "k8s-a3", "k8s-b1", "k8s-b2", "k8s-c1", "k8s-gpu"]
}`

// cache-7f9c4-x2lq of a Deployment uses a generic ephemeral volume, whose
// claim Kubernetes names POD-VOLUME; the nodes come as Node objects.
const filterCache = `{
  "Pod": {
    "metadata": {
      "name": "cache-7f9c4-x2lq", "generateName": "cache-7f9c4-", "namespace": "shop",
      "uid": "5d2a8e11-7b3c-4f0a-a6e9-1c4d8b2f7e90", "labels": {"app": "cache", "pod-template-hash": "7f9c4"},
      "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "cache-7f9c4",
        "uid": "9e4b1d27-3c58-4a6f-b0d2-7f8e1a3c5b64", "controller": true, "blockOwnerDeletion": true}]
    },
    "spec": {
      "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {
        "metadata": {"labels": {"type": "scratch"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "strata-repl1",
          "resources": {"requests": {"storage": "1Gi"}}}}}}],
      "containers": [{"name": "redis", "image": "redis:8", "volumeMounts": [{"name": "scratch", "mountPath": "/data"}]}],
      "schedulerName": "default-scheduler"
    },
    "status": {"phase": "Pending"}
  },
  "Nodes": {"metadata": {}, "items": [
    {"metadata": {"name": "k8s-a1", "labels": {"kubernetes.io/hostname": "k8s-a1", "topology.kubernetes.io/zone": "a"}},
     "status": {"capacity": {"cpu": "8", "memory": "32Gi"}, "allocatable": {"cpu": "7800m", "memory": "31Gi"},
       "conditions": [{"type": "Ready", "status": "True"}]}},
    {"metadata": {"name": "k8s-b1", "labels": {"kubernetes.io/hostname": "k8s-b1", "topology.kubernetes.io/zone": "b"}},
     "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
    {"metadata": {"name": "k8s-gpu", "labels": {"kubernetes.io/hostname": "k8s-gpu"}}}
  ]},
  "NodeNames": null
}`

// web uses no claim.
const filterWeb = `{
  "Pod": {"metadata": {"name": "web-5d8f7-abcde", "namespace": "shop"},
    "spec": {"volumes": [{"name": "tmp", "emptyDir": {}}], "containers": [{"name": "nginx", "image": "nginx"}]},
    "status": {"phase": "Pending"}},
  "NodeNames": ["k8s-a1", "k8s-c1", "k8s-gpu"]
}`

// db-0 of another namespace uses a claim of the same name, which is not a
// Strata volume's.
const filterOtherNamespace = `{
  "Pod": {"metadata": {"name": "db-0", "namespace": "staging"},
    "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}],
      "containers": [{"name": "postgres", "image": "postgres:17"}]}},
  "NodeNames": ["k8s-a1", "k8s-c1", "k8s-gpu"]
}`

// TestSchedulerExtender runs `strata up --scheduler-extender-addr` as node
// k8s-a1 (zone a, rack r1), makes a cluster around it in its etcd (nodes in
// other racks and zones, one offline, one with a nearly full pool; volumes
// of claims on several of them, one degraded) and checks what filter and
// prioritize answer to kube-scheduler's requests.
func TestSchedulerExtender(t *testing.T) {
	dir := t.TempDir()
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	if fs.Bavail < fs.Blocks/5 {
		t.Skipf("%s is over 80%% full: this node's storage would count as degraded", dir)
	}
	ext := freePort(t)
	n := newNodeAt(t, dir, filepath.Join(dir, "data"),
		"--node-name", "k8s-a1", "--labels", "zone=a,rack=r1", "--scheduler-extender-addr", ext)
	base := "http://" + ext

	// data-db-0 on this node, made through the API as the CSI driver does.
	n.run("volume", "create", "pvc-3a1e", "--size", "64MiB",
		"--label", "csi.storage.k8s.io/pvc/name=data-db-0", "--label", "csi.storage.k8s.io/pvc/namespace=shop")

	ctx := context.Background()
	store, err := meta.Open(ctx, meta.Config{Endpoints: []string{"http://" + n.etcdC}})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	claim := func(name string) map[string]string {
		return map[string]string{"csi.storage.k8s.io/pvc/name": name, "csi.storage.k8s.io/pvc/namespace": "shop"}
	}
	for _, v := range []meta.Volume{
		{Name: "pvc-77b0", Node: "k8s-b1", Labels: claim("logs-db-0"), State: meta.StateReady},
		{Name: "pvc-c4c4", Node: "k8s-c1", Labels: claim("cache-7f9c4-x2lq-scratch"), State: meta.StateReady},
		{Name: "pvc-0bad", Node: "k8s-b1", Labels: claim("queue-0"), State: "degraded"},
	} {
		v.Size, v.Created = 1<<30, time.Now().UTC()
		if _, err := store.CreateVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	// Node records as the other nodes' heartbeats write them; written last
	// so that the online ones are within three heartbeats.
	now := time.Now().UTC()
	for _, nd := range []meta.Node{
		{Name: "k8s-a2", Labels: map[string]string{"zone": "a", "rack": "r1"}, Heartbeat: now},
		{Name: "k8s-a3", Labels: map[string]string{"zone": "a", "rack": "r2"}, Heartbeat: now},
		{Name: "k8s-b1", Labels: map[string]string{"zone": "b", "rack": "r1"}, Heartbeat: now},
		{Name: "k8s-b2", Labels: map[string]string{"zone": "b", "rack": "r2"}, Heartbeat: now,
			PoolCapacity: 100 << 30, PoolAvailable: 5 << 30},
		{Name: "k8s-c1", Labels: map[string]string{"zone": "c"}, Heartbeat: now.Add(-time.Hour)},
	} {
		nd.Addresses = map[string]string{"api": "127.0.0.1:1"}
		if _, err := store.PutNode(ctx, nd); err != nil {
			t.Fatal(err)
		}
		// Online nodes keep a presence lease; k8s-c1 has none.
		if time.Since(nd.Heartbeat) < time.Minute {
			p, err := store.KeepPresence(ctx, nd.Name, time.Minute, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
		}
	}
	waitExtender(t, base)

	t.Run("filter NodeNames", func(t *testing.T) {
		var res extenderv1.ExtenderFilterResult
		postJSON(t, base+"/filter", filterDB0, http.StatusOK, &res)
		wantNames(t, res.NodeNames, "k8s-a1", "k8s-a2", "k8s-a3", "k8s-b1", "k8s-b2")
		wantFailed(t, res, map[string]string{"k8s-c1": "Strata node offline", "k8s-gpu": "no Strata node"})
	})
	t.Run("prioritize NodeNames", func(t *testing.T) {
		// data-db-0 on k8s-a1 (a/r1), logs-db-0 on k8s-b1 (b/r1); k8s-b1
		// holds a degraded volume, k8s-b2's pool is 95% used.
		wantScores(t, base, filterDB0, map[string]int64{
			"k8s-a1":  6, // (10 + 1) / 2
			"k8s-a2":  4, // (6 + 1) / 2
			"k8s-a3":  2, // (3 + 1) / 2
			"k8s-b1":  3, // (1 + 10) / 2, halved
			"k8s-b2":  1, // (1 + 3) / 2, halved
			"k8s-c1":  0, // offline
			"k8s-gpu": 0, // not a Strata node
		})
	})
	t.Run("filter Nodes, volume unreachable", func(t *testing.T) {
		var res extenderv1.ExtenderFilterResult
		postJSON(t, base+"/filter", filterCache, http.StatusOK, &res)
		if res.NodeNames != nil || res.Nodes == nil || len(res.Nodes.Items) != 0 {
			t.Errorf("filter passed nodes: %+v %+v", res.NodeNames, res.Nodes)
		}
		unserved := "Strata volume pvc-c4c4 (claim shop/cache-7f9c4-x2lq-scratch) cannot be served: node k8s-c1, which holds its only replica, is offline"
		wantFailed(t, res, map[string]string{"k8s-a1": unserved, "k8s-b1": unserved, "k8s-gpu": "no Strata node"})
		wantScores(t, base, filterCache, map[string]int64{"k8s-a1": 0, "k8s-b1": 0, "k8s-gpu": 0})
	})
	t.Run("pods without Strata volumes pass", func(t *testing.T) {
		for _, args := range []string{filterWeb, filterOtherNamespace} {
			var res extenderv1.ExtenderFilterResult
			postJSON(t, base+"/filter", args, http.StatusOK, &res)
			wantNames(t, res.NodeNames, "k8s-a1", "k8s-c1", "k8s-gpu")
			wantFailed(t, res, nil)
			wantScores(t, base, args, map[string]int64{"k8s-a1": 0, "k8s-c1": 0, "k8s-gpu": 0})
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		for _, tc := range []struct {
			path, body string
			code       int
			want       string
		}{
			{"/filter", `{"Pod": {"metadata": {"name": "db-0"`, http.StatusBadRequest, "request body is not ExtenderArgs JSON: unexpected end of JSON input"},
			{"/filter", `["k8s-a1"]`, http.StatusBadRequest, "request body is not ExtenderArgs JSON: json: cannot unmarshal array"},
			{"/filter", ``, http.StatusBadRequest, "empty request body: want ExtenderArgs JSON"},
			{"/prioritize", `{"Pod": {"spec": {"volumes": "data"}}}`, http.StatusBadRequest, "request body is not ExtenderArgs JSON"},
			{"/prioritize", `{"NodeNames": ["k8s-a1"]}`, http.StatusBadRequest, "bad ExtenderArgs: no Pod"},
			{"/prioritize", `{"Pod": {}, "NodeNames": ["k8s-a1"]}`, http.StatusBadRequest, "bad ExtenderArgs: the Pod has no metadata.name"},
		} {
			got := postJSON(t, base+tc.path, tc.body, tc.code, nil)
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("POST %s %q: %q, want %q", tc.path, tc.body, got, tc.want)
			}
		}
		// filter answers an unusable request in Error, as kube-scheduler expects.
		for body, want := range map[string]string{
			`{"Pod": null, "NodeNames": ["k8s-a1"]}`: "bad ExtenderArgs: no Pod",
			`{"Pod": {}, "NodeNames": ["k8s-a1"]}`:   "bad ExtenderArgs: the Pod has no metadata.name",
		} {
			var res extenderv1.ExtenderFilterResult
			postJSON(t, base+"/filter", body, http.StatusOK, &res)
			if res.Error != want || res.NodeNames != nil {
				t.Errorf("filter %s: %+v, want Error %q", body, res, want)
			}
		}
		resp, err := http.Get(base + "/filter")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /filter: %d", resp.StatusCode)
		}
	})
}

// waitExtender waits until the extender answers /healthz.
func waitExtender(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("scheduler extender at %s: no healthy answer within 30s (%v)", base, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// postJSON posts body, checks the status code, decodes a JSON answer into
// out when out is not nil, and returns the answer.
func postJSON(t *testing.T, url, body string, code int, out any) string {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != code {
		t.Fatalf("POST %s: %d %s, want %d", url, resp.StatusCode, b, code)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("POST %s: %s: %v", url, b, err)
		}
	}
	return string(b)
}

func wantNames(t *testing.T, got *[]string, want ...string) {
	t.Helper()
	if got == nil || strings.Join(*got, ",") != strings.Join(want, ",") {
		t.Errorf("NodeNames = %v, want %v", got, want)
	}
}

func wantFailed(t *testing.T, res extenderv1.ExtenderFilterResult, want map[string]string) {
	t.Helper()
	if res.Error != "" {
		t.Errorf("Error = %q", res.Error)
	}
	if len(res.FailedNodes) != 0 {
		t.Errorf("FailedNodes = %v, want them all unresolvable", res.FailedNodes)
	}
	if len(res.FailedAndUnresolvableNodes) != len(want) {
		t.Errorf("FailedAndUnresolvableNodes = %v, want %v", res.FailedAndUnresolvableNodes, want)
	}
	for node, reason := range want {
		if got := res.FailedAndUnresolvableNodes[node]; got != reason {
			t.Errorf("FailedAndUnresolvableNodes[%s] = %q, want %q", node, got, reason)
		}
	}
}

func wantScores(t *testing.T, base, args string, want map[string]int64) {
	t.Helper()
	var got extenderv1.HostPriorityList
	postJSON(t, base+"/prioritize", args, http.StatusOK, &got)
	if len(got) != len(want) {
		t.Errorf("prioritize = %+v, want %v", got, want)
	}
	for _, hp := range got {
		if s, ok := want[hp.Host]; !ok || s != hp.Score {
			t.Errorf("score of %s = %d, want %d (all: %+v)", hp.Host, hp.Score, s, got)
		}
	}
}

// Package kubernetes_test checks what deploy/kubernetes ships: the Helm chart,
// the manifests rendered from it (strata.yaml) and the examples of
// docs/kubernetes.md.
//
// Every object is decoded strictly into the Kubernetes API types (an unknown
// or duplicated field is an error, as with kubectl apply --validate=strict),
// then checked for what the API server does not check and a working
// installation needs: pinned images, one driver name, ServiceAccounts with
// the permissions their sidecars use, one CSI socket for kubelet, the node
// daemon and every sidecar.
//
// The tests that run helm skip when it is missing; make test installs it.
// make deploy-manifests rewrites strata.yaml (go test -run
// TestRenderedManifests -update).
package kubernetes_test

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite strata.yaml from the chart (make deploy-manifests)")

const (
	chartDir      = "chart/strata"
	manifestsFile = "strata.yaml"
	examplesDir   = "examples"
	driverName    = "strata.csi.io"
	// kubeVersion is the cluster version helm template assumes: the chart's
	// minimum. A helm built with go install knows no default of its own
	// that the chart accepts.
	kubeVersion = "1.34.0"
)

// manifestsHeader starts strata.yaml; the rest is helm's output.
const manifestsHeader = `# Strata on Kubernetes: deploy/kubernetes/chart/strata rendered with its
# default values, release "strata", namespace strata-system. Do not edit: change
# the chart, then run make deploy-manifests (make test fails while they differ).
#
#   kubectl create namespace strata-system
#   kubectl apply -f deploy/kubernetes/strata.yaml
#
# docs/kubernetes.md explains the objects and how to use them.
`

// release is one helm template of the chart.
type release struct {
	name, namespace string
	values          string // a values file's content; empty: the chart's defaults
}

var defaultRelease = release{name: "strata", namespace: "strata-system"}

// The StorageClass parameters the driver understands (docs/kubernetes.md).
// The external-provisioner's own csi.storage.k8s.io/ keys are allowed too.
var driverParameters = []string{"repl", "fs", "zones", "max_iops", "max_bandwidth"}

// TestRenderedManifests checks that strata.yaml is the chart rendered with its
// default values; with -update it writes it.
func TestRenderedManifests(t *testing.T) {
	got := append([]byte(manifestsHeader), render(t, defaultRelease)...)
	if *update {
		if err := os.WriteFile(manifestsFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(manifestsFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the chart rendered with its default values: run make deploy-manifests\n%s",
			manifestsFile, firstDifference(want, got))
	}
}

// TestCommittedManifests checks strata.yaml, without helm.
func TestCommittedManifests(t *testing.T) {
	data, err := os.ReadFile(manifestsFile)
	if err != nil {
		t.Fatal(err)
	}
	b := decodeBundle(t, manifestsFile, data)
	b.check(t, defaultRelease.namespace)
	b.checkDefaults(t)
}

// TestChartValues renders the chart with every option changed, under
// another release name and namespace, and checks the result.
func TestChartValues(t *testing.T) {
	r := release{name: "prod", namespace: "storage", values: `
image:
  repository: registry.example.com/strata
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
imagePullSecrets:
  - name: regcred
kubeletDir: /var/lib/k0s/kubelet
node:
  dataDir: /srv/strata
  etcdEndpoints: [http://10.0.0.1:2379, http://10.0.0.2:2379]
  labels: {zone: a, rack: r1}
  extraArgs: [--debug-addr=127.0.0.1:7429]
  nodeSelector: {strata.io/storage: "true"}
  tolerations: []
  resources:
    limits: {memory: 4Gi}
controller:
  replicas: 2
  nodeSelector: {strata.io/storage: "true"}
  tolerations:
    - {key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}
sidecars:
  timeout: 30s
  logLevel: 5
schedulerExtender:
  enabled: false
snapshots:
  enabled: false
storageClasses:
  - name: fast
    default: true
    parameters: {repl: 1, fs: xfs, max_iops: "5000,2000"}
    volumeBindingMode: WaitForFirstConsumer
`}
	b := decodeBundle(t, "helm template "+r.name, render(t, r))
	b.check(t, r.namespace)

	node := named(t, b.daemonSets, "prod-strata-node")
	strata := container(t, &node.Spec.Template.Spec, "strata")
	for _, want := range []string{
		"--data-dir=/srv/strata",
		"--etcd-endpoints=http://10.0.0.1:2379,http://10.0.0.2:2379",
		"--labels=rack=r1,zone=a",
		"--debug-addr=127.0.0.1:7429",
	} {
		if !slices.Contains(strata.Args, want) {
			t.Errorf("strata up args %q: want %s", strata.Args, want)
		}
	}
	if _, ok := flagValue(strata.Args, "--scheduler-extender-addr"); ok || len(b.services) > 0 {
		t.Error("schedulerExtender.enabled=false: the extender is still served")
	}
	if want := "registry.example.com/strata@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"; strata.Image != want {
		t.Errorf("image %s, want %s", strata.Image, want)
	}
	ctrl := named(t, b.deployments, "prod-strata-controller")
	if hasContainer(&ctrl.Spec.Template.Spec, "csi-snapshotter") || hasContainer(&node.Spec.Template.Spec, "csi-snapshotter") ||
		len(b.snapshotClasses) > 0 {
		t.Error("snapshots.enabled=false: the snapshotter or the VolumeSnapshotClass is still there")
	}
	for _, c := range []*corev1.Container{
		container(t, &node.Spec.Template.Spec, "csi-provisioner"), container(t, &ctrl.Spec.Template.Spec, "csi-attacher"),
		container(t, &ctrl.Spec.Template.Spec, "csi-resizer"),
	} {
		if !slices.Contains(c.Args, "--timeout=30s") || !slices.Contains(c.Args, "--v=5") {
			t.Errorf("%s args %q: want sidecars.timeout and sidecars.logLevel", c.Name, c.Args)
		}
	}
	if *ctrl.Spec.Replicas != 2 {
		t.Errorf("controller replicas %d, want 2", *ctrl.Spec.Replicas)
	}
	sc := b.storageClasses["fast"]
	if sc == nil || sc.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" ||
		sc.Parameters["repl"] != "1" || sc.Parameters["max_iops"] != "5000,2000" {
		t.Errorf("StorageClass fast: %+v", sc)
	}
}

// TestChartNodeGroups renders one node DaemonSet per zone
// (node.groups), each with its own Strata labels.
func TestChartNodeGroups(t *testing.T) {
	r := release{name: "strata", namespace: "strata-system", values: `
node:
  labels: {rack: r1}
  nodeSelector: {strata.io/storage: "true"}
  groups:
    nodeLabel: topology.kubernetes.io/zone
    values:
      eu-west-1a: {zone: a}
      eu-west-1b: {zone: b, rack: r2}
`}
	b := decodeBundle(t, "helm template "+r.name, render(t, r))
	b.check(t, r.namespace)
	if len(b.daemonSets) != 2 {
		t.Fatalf("%d DaemonSets, want one per zone", len(b.daemonSets))
	}
	for name, want := range map[string]struct {
		labels   string
		selector map[string]string
	}{
		"strata-node-eu-west-1a": {"--labels=rack=r1,zone=a", map[string]string{"strata.io/storage": "true", "topology.kubernetes.io/zone": "eu-west-1a"}},
		"strata-node-eu-west-1b": {"--labels=rack=r2,zone=b", map[string]string{"strata.io/storage": "true", "topology.kubernetes.io/zone": "eu-west-1b"}},
	} {
		ds := named(t, b.daemonSets, name)
		if args := container(t, &ds.Spec.Template.Spec, "strata").Args; !slices.Contains(args, want.labels) {
			t.Errorf("DaemonSet %s: strata up args %q: want %s", name, args, want.labels)
		}
		if got := ds.Spec.Template.Spec.NodeSelector; !maps.Equal(got, want.selector) {
			t.Errorf("DaemonSet %s: nodeSelector %v, want %v", name, got, want.selector)
		}
	}
}

// TestChartCentralSnapshots renders snapshots.distributed=false: one
// snapshotter, in the controller Deployment.
func TestChartCentralSnapshots(t *testing.T) {
	r := release{name: "strata", namespace: "strata-system", values: "snapshots: {distributed: false}\n"}
	b := decodeBundle(t, "helm template "+r.name, render(t, r))
	b.check(t, r.namespace)
	if !hasContainer(&b.deployments[0].Spec.Template.Spec, "csi-snapshotter") {
		t.Error("snapshots.distributed=false: no csi-snapshotter in the controller Deployment")
	}
}

// TestChartRefuses checks that the chart refuses values it cannot honour,
// with a message that names them.
func TestChartRefuses(t *testing.T) {
	for values, want := range map[string]string{
		"storageClasses: [{name: now, volumeBindingMode: Immediate}]\n": "volumeBindingMode Immediate",
		"node: {groups: {nodeLabel: topology.kubernetes.io/zone}}\n":    "node.groups.values is empty",
	} {
		_, err := renderErr(t, release{name: "strata", namespace: "strata-system", values: values})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("values %q: error %v, want one with %q", values, err, want)
		}
	}
}

// render runs helm template on the chart.
func render(t *testing.T, r release) []byte {
	t.Helper()
	out, err := renderErr(t, r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// renderErr runs helm template on the chart; the error has helm's message.
func renderErr(t *testing.T, r release) ([]byte, error) {
	t.Helper()
	helm := helmBinary(t)
	dir := t.TempDir()
	args := []string{"template", r.name, chartDir, "--namespace", r.namespace, "--kube-version", kubeVersion}
	if r.values != "" {
		f := filepath.Join(dir, "values.yaml")
		if err := os.WriteFile(f, []byte(r.values), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--values", f)
	}
	cmd := exec.Command(helm, args...)
	// Nothing from the user's helm configuration, repositories or plugins.
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(dir, "config"),
		"HELM_CACHE_HOME="+filepath.Join(dir, "cache"),
		"HELM_DATA_HOME="+filepath.Join(dir, "data"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// helmBinary finds helm where make test-deps installs it ($GOPATH/bin), else
// on PATH, else skips the test.
func helmBinary(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gopath := filepath.SplitList(strings.TrimSpace(string(out)))
		if len(gopath) > 0 {
			p := filepath.Join(gopath[0], "bin", "helm")
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if *update {
		t.Fatal("helm is not installed: make deploy-manifests installs it")
	}
	t.Skip("helm is not installed: make test-deps installs it (go install helm.sh/helm/v3/cmd/helm)")
	return ""
}

// firstDifference shows the first line where two files differ.
func firstDifference(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  committed: %q\n  rendered:  %q", i+1, wl, gl)
		}
	}
	return ""
}

var (
	scheme  = runtime.NewScheme()
	decoder runtime.Decoder
)

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme, storagev1.AddToScheme, snapshotv1.AddToScheme,
	} {
		utilruntime.Must(add(scheme))
	}
	// Strict: unknown and duplicated fields are errors.
	decoder = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// bundle is a set of decoded objects, by type.
type bundle struct {
	serviceAccounts     []*corev1.ServiceAccount
	services            []*corev1.Service
	daemonSets          []*appsv1.DaemonSet
	deployments         []*appsv1.Deployment
	clusterRoles        map[string]*rbacv1.ClusterRole
	roles               map[string]*rbacv1.Role // by namespace/name
	clusterRoleBindings []*rbacv1.ClusterRoleBinding
	roleBindings        []*rbacv1.RoleBinding
	csiDrivers          []*storagev1.CSIDriver
	storageClasses      map[string]*storagev1.StorageClass
	snapshotClasses     map[string]*snapshotv1.VolumeSnapshotClass
	// The examples' kinds.
	pvcs      []*corev1.PersistentVolumeClaim
	pods      []*corev1.Pod
	snapshots []*snapshotv1.VolumeSnapshot
	kubevirt  []map[string]any

	objects []metav1.Object // all of them but kubevirt, for the checks of names
	kinds   []string        // kinds of objects, in order
}

func decodeBundle(t *testing.T, source string, data []byte) *bundle {
	t.Helper()
	b := &bundle{}
	b.decode(t, source, data)
	if len(b.kubevirt) > 0 {
		t.Errorf("%s: KubeVirt objects belong in the examples only", source)
	}
	return b
}

// decode adds every document of a multi-document YAML file.
func (b *bundle) decode(t *testing.T, source string, data []byte) {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", source, i, err)
		}
		if j, err := yaml.YAMLToJSON(doc); err != nil {
			t.Errorf("%s: document %d: %v", source, i, err)
			continue
		} else if string(j) == "null" {
			continue // only comments
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err == nil && slices.Contains(kubevirtKinds, tm.GroupVersionKind()) {
			var u map[string]any
			if err := yaml.UnmarshalStrict(doc, &u); err != nil {
				t.Errorf("%s: document %d: %v", source, i, err)
			}
			b.kubevirt = append(b.kubevirt, u)
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Errorf("%s: document %d (%s %s): %v", source, i, tm.APIVersion, tm.Kind, err)
			continue
		}
		if err := b.add(obj); err != nil {
			t.Errorf("%s: document %d: %v", source, i, err)
		}
	}
}

func (b *bundle) add(obj runtime.Object) error {
	if b.clusterRoles == nil {
		b.clusterRoles = map[string]*rbacv1.ClusterRole{}
		b.roles = map[string]*rbacv1.Role{}
		b.storageClasses = map[string]*storagev1.StorageClass{}
		b.snapshotClasses = map[string]*snapshotv1.VolumeSnapshotClass{}
	}
	switch o := obj.(type) {
	case *corev1.ServiceAccount:
		b.serviceAccounts = append(b.serviceAccounts, o)
	case *corev1.Service:
		b.services = append(b.services, o)
	case *appsv1.DaemonSet:
		b.daemonSets = append(b.daemonSets, o)
	case *appsv1.Deployment:
		b.deployments = append(b.deployments, o)
	case *rbacv1.ClusterRole:
		b.clusterRoles[o.Name] = o
	case *rbacv1.Role:
		b.roles[o.Namespace+"/"+o.Name] = o
	case *rbacv1.ClusterRoleBinding:
		b.clusterRoleBindings = append(b.clusterRoleBindings, o)
	case *rbacv1.RoleBinding:
		b.roleBindings = append(b.roleBindings, o)
	case *storagev1.CSIDriver:
		b.csiDrivers = append(b.csiDrivers, o)
	case *storagev1.StorageClass:
		b.storageClasses[o.Name] = o
	case *snapshotv1.VolumeSnapshotClass:
		b.snapshotClasses[o.Name] = o
	case *corev1.PersistentVolumeClaim:
		b.pvcs = append(b.pvcs, o)
	case *corev1.Pod:
		b.pods = append(b.pods, o)
	case *snapshotv1.VolumeSnapshot:
		b.snapshots = append(b.snapshots, o)
	default:
		return fmt.Errorf("no check knows %T: add it to the bundle", obj)
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return fmt.Errorf("%T has no metadata", obj)
	}
	b.objects = append(b.objects, m)
	b.kinds = append(b.kinds, obj.GetObjectKind().GroupVersionKind().Kind)
	return nil
}

package kubernetes_test

// The checks of an installation: what the API server does not check and a
// working installation needs.

import (
	"fmt"
	"net"
	"path"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
)

// namespaced reports whether objects of a kind of the chart live in a namespace.
func namespaced(kind string) bool {
	switch kind {
	case "ClusterRole", "ClusterRoleBinding", "CSIDriver", "StorageClass", "VolumeSnapshotClass":
		return false
	}
	return true
}

// check runs the checks of an installation in namespace ns.
func (b *bundle) check(t *testing.T, ns string) {
	t.Helper()
	b.checkNames(t, ns)
	b.checkDriver(t)
	pods := b.podTemplates()
	for _, p := range pods {
		checkPodSpec(t, p.owner, p.spec)
		if s := p.selector; s == nil || !selects(t, s, p.labels) {
			t.Errorf("%s: its selector does not select its pods", p.owner)
		}
		// Workloads whose selectors overlap fight over their pods.
		for _, q := range pods {
			if q.owner != p.owner && p.selector != nil && selects(t, p.selector, q.labels) {
				t.Errorf("%s: its selector selects the pods of %s too", p.owner, q.owner)
			}
		}
	}
	b.checkServiceAccounts(t)
	b.checkPermissions(t)
	b.checkSocket(t)
	b.checkNode(t)
	b.checkController(t)
	b.checkSnapshotter(t)
	b.checkServices(t)
}

// checkDefaults checks what the default values promise: the classes of
// docs/kubernetes.md.
func (b *bundle) checkDefaults(t *testing.T) {
	t.Helper()
	for name, repl := range map[string]string{"strata-repl1": "1", "strata-repl3": "3"} {
		sc := b.storageClasses[name]
		if sc == nil {
			t.Errorf("StorageClass %s is missing", name)
			continue
		}
		if sc.Parameters["repl"] != repl || sc.Parameters["fs"] != "ext4" ||
			sc.AllowVolumeExpansion == nil || !*sc.AllowVolumeExpansion ||
			sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
			t.Errorf("StorageClass %s: parameters %v, expansion %v, binding %v", name,
				sc.Parameters, sc.AllowVolumeExpansion, sc.VolumeBindingMode)
		}
	}
	if len(b.snapshotClasses) != 1 {
		t.Errorf("%d VolumeSnapshotClasses, want 1", len(b.snapshotClasses))
	}
	if len(b.daemonSets) != 1 || b.daemonSets[0].Name != "strata-node" {
		t.Errorf("%d DaemonSets, want strata-node alone", len(b.daemonSets))
	}
	// Distributed snapshotting: every node snapshots its own volumes.
	for _, ds := range b.daemonSets {
		if !hasContainer(&ds.Spec.Template.Spec, "csi-snapshotter") {
			t.Errorf("DaemonSet %s: no csi-snapshotter", ds.Name)
		}
	}
	if len(b.services) != 1 {
		t.Errorf("%d Services, want the scheduler extender's", len(b.services))
	}
}

// checkNames checks names, namespaces and labels as the API server would.
func (b *bundle) checkNames(t *testing.T, ns string) {
	t.Helper()
	seen := map[string]bool{}
	for i, o := range b.objects {
		kind := b.kinds[i]
		id := kind + " " + o.GetName()
		for _, msg := range validation.IsDNS1123Subdomain(o.GetName()) {
			t.Errorf("%s: name: %s", id, msg)
		}
		if want := map[bool]string{true: ns, false: ""}[namespaced(kind)]; o.GetNamespace() != want {
			t.Errorf("%s: namespace %q, want %q", id, o.GetNamespace(), want)
		}
		key := kind + "/" + o.GetNamespace() + "/" + o.GetName()
		if seen[key] {
			t.Errorf("%s: twice", id)
		}
		seen[key] = true
		checkLabels(t, id, o.GetLabels())
	}
}

func checkLabels(t *testing.T, id string, l map[string]string) {
	t.Helper()
	for k, v := range l {
		for _, msg := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
			t.Errorf("%s: label %s=%s: %s", id, k, v, msg)
		}
	}
}

// checkDriver checks that every object naming the driver names the same one.
func (b *bundle) checkDriver(t *testing.T) {
	t.Helper()
	if len(b.csiDrivers) != 1 {
		t.Fatalf("%d CSIDriver objects, want 1", len(b.csiDrivers))
	}
	d := b.csiDrivers[0]
	if d.Name != driverName {
		t.Errorf("CSIDriver %s, want %s", d.Name, driverName)
	}
	s := d.Spec
	if s.AttachRequired == nil || !*s.AttachRequired || s.PodInfoOnMount == nil || !*s.PodInfoOnMount ||
		!slices.Equal(s.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}) ||
		s.FSGroupPolicy == nil || *s.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		t.Errorf("CSIDriver %s: want attachRequired, podInfoOnMount, volumeLifecycleModes [Persistent], fsGroupPolicy File", d.Name)
	}
	if len(b.storageClasses) == 0 {
		t.Error("no StorageClass")
	}
	for _, sc := range b.storageClasses {
		checkStorageClass(t, sc)
	}
	for _, c := range b.snapshotClasses {
		if c.Driver != driverName {
			t.Errorf("VolumeSnapshotClass %s: driver %s, want %s", c.Name, c.Driver, driverName)
		}
	}
}

func checkStorageClass(t *testing.T, sc *storagev1.StorageClass) {
	t.Helper()
	if sc.Provisioner != driverName {
		t.Errorf("StorageClass %s: provisioner %s, want %s", sc.Name, sc.Provisioner, driverName)
	}
	// Each node's provisioner makes the volumes of the pods scheduled to
	// it, and takes no claim of an Immediate class
	// (--node-deployment-immediate-binding=false).
	if sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
		t.Errorf("StorageClass %s: volumeBindingMode %v, want WaitForFirstConsumer", sc.Name, ptr.Deref(sc.VolumeBindingMode, ""))
	}
	for k := range sc.Parameters {
		if !slices.Contains(driverParameters, k) && !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			t.Errorf("StorageClass %s: parameter %s: the driver knows %v", sc.Name, k, driverParameters)
		}
	}
}

// podTemplate is the pod template of a workload.
type podTemplate struct {
	owner     string
	namespace string
	spec      *corev1.PodSpec
	labels    map[string]string
	selector  *metav1.LabelSelector
}

func (b *bundle) podTemplates() []podTemplate {
	var ps []podTemplate
	for _, d := range b.daemonSets {
		ps = append(ps, podTemplate{"DaemonSet " + d.Name, d.Namespace, &d.Spec.Template.Spec, d.Spec.Template.Labels, d.Spec.Selector})
	}
	for _, d := range b.deployments {
		ps = append(ps, podTemplate{"Deployment " + d.Name, d.Namespace, &d.Spec.Template.Spec, d.Spec.Template.Labels, d.Spec.Selector})
	}
	return ps
}

func selects(t *testing.T, s *metav1.LabelSelector, l map[string]string) bool {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Errorf("selector %v: %v", s, err)
		return false
	}
	return !sel.Empty() && sel.Matches(labels.Set(l))
}

// checkPodSpec checks a pod as the API server would where strict decoding
// does not, and that every image is pinned.
func checkPodSpec(t *testing.T, owner string, spec *corev1.PodSpec) {
	t.Helper()
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			t.Errorf("%s: volume %s: %s", owner, v.Name, msg)
		}
		volumes[v.Name] = true
	}
	ports := map[int32]string{}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		id := owner + " container " + c.Name
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			t.Errorf("%s: %s", id, msg)
		}
		if err := pinned(c.Image); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		privileged := c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("%s: mounts volume %s, which the pod does not have", id, m.Name)
			}
			if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional && !privileged {
				t.Errorf("%s: Bidirectional mount propagation needs a privileged container", id)
			}
		}
		for _, d := range c.VolumeDevices {
			if !volumes[d.Name] {
				t.Errorf("%s: device of volume %s, which the pod does not have", id, d.Name)
			}
		}
		named := map[string]bool{}
		for _, p := range c.Ports {
			for _, msg := range validation.IsValidPortName(p.Name) {
				t.Errorf("%s: port %s: %s", id, p.Name, msg)
			}
			if other, ok := ports[p.ContainerPort]; ok {
				t.Errorf("%s: port %d is %s's too", id, p.ContainerPort, other)
			}
			ports[p.ContainerPort] = c.Name
			named[p.Name] = true
		}
		// A probe's named port is looked up in its own container.
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if p != nil && p.HTTPGet != nil && p.HTTPGet.Port.StrVal != "" && !named[p.HTTPGet.Port.StrVal] {
				t.Errorf("%s: probe port %s is not a port of this container", id, p.HTTPGet.Port.StrVal)
			}
		}
	}
}

// pinned reports an image that is not pinned to a version or a digest.
func pinned(image string) error {
	if name, digest, ok := strings.Cut(image, "@"); ok {
		hex, ok := strings.CutPrefix(digest, "sha256:")
		if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" || name == "" {
			return fmt.Errorf("image %s: malformed digest", image)
		}
		return nil
	}
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return fmt.Errorf("image %s has no tag", image)
	}
	if tag := image[i+1:]; tag == "" || tag == "latest" {
		return fmt.Errorf("image %s is not pinned", image)
	}
	return nil
}

// checkServiceAccounts checks that every ServiceAccount a pod runs as exists
// and is bound to roles that exist when the pod calls the API, that the
// containers that call it get a token and the others none, and that bindings
// bind what exists.
func (b *bundle) checkServiceAccounts(t *testing.T) {
	t.Helper()
	accounts := map[string]*corev1.ServiceAccount{}
	for _, sa := range b.serviceAccounts {
		accounts[sa.Namespace+"/"+sa.Name] = sa
	}
	bound := map[string]bool{}
	checkBinding := func(id string, subjects []rbacv1.Subject, ref rbacv1.RoleRef, ns string) {
		for _, s := range subjects {
			if s.Kind != rbacv1.ServiceAccountKind || accounts[s.Namespace+"/"+s.Name] == nil {
				t.Errorf("%s: subject %s %s/%s does not exist", id, s.Kind, s.Namespace, s.Name)
			}
			bound[s.Namespace+"/"+s.Name] = true
		}
		exists := ref.Kind == "ClusterRole" && b.clusterRoles[ref.Name] != nil ||
			ref.Kind == "Role" && ns != "" && b.roles[ns+"/"+ref.Name] != nil
		if !exists || ref.APIGroup != rbacv1.GroupName {
			t.Errorf("%s: role %s %s does not exist", id, ref.Kind, ref.Name)
		}
	}
	for _, rb := range b.clusterRoleBindings {
		checkBinding("ClusterRoleBinding "+rb.Name, rb.Subjects, rb.RoleRef, "")
	}
	for _, rb := range b.roleBindings {
		checkBinding("RoleBinding "+rb.Name, rb.Subjects, rb.RoleRef, rb.Namespace)
	}
	for _, p := range b.podTemplates() {
		sa := p.namespace + "/" + p.spec.ServiceAccountName
		account := accounts[sa]
		if p.spec.ServiceAccountName == "" || account == nil {
			t.Errorf("%s: ServiceAccount %q does not exist", p.owner, p.spec.ServiceAccountName)
			continue
		}
		usesAPI := false
		for i := range p.spec.Containers {
			c := &p.spec.Containers[i]
			id := p.owner + " container " + c.Name
			calls := len(needsOf(c)) > 0
			usesAPI = usesAPI || calls
			switch token := hasToken(t, id, p.spec, account, c); {
			case calls && !token:
				t.Errorf("%s: calls the API, and gets no token", id)
			case !calls && token:
				// Least privilege: a container in a privileged pod on the
				// host's network keeps no credentials it does not use.
				t.Errorf("%s: makes no call to the API, yet gets a token", id)
			}
		}
		switch {
		case usesAPI && !bound[sa]:
			t.Errorf("%s: ServiceAccount %s has no role", p.owner, sa)
		case !usesAPI && bound[sa]:
			t.Errorf("%s: no container calls the API, yet ServiceAccount %s has roles", p.owner, sa)
		}
	}
}

// tokenDir is where client-go's in-cluster configuration reads the
// ServiceAccount token, the cluster's CA and the namespace.
const tokenDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// hasToken says whether a container gets a ServiceAccount token: the one the
// pod automounts (in every container), or a projected volume mounted at
// tokenDir, which must then hold what the automounted one holds.
func hasToken(t *testing.T, id string, spec *corev1.PodSpec, sa *corev1.ServiceAccount, c *corev1.Container) bool {
	t.Helper()
	automount := spec.AutomountServiceAccountToken
	if automount == nil {
		automount = sa.AutomountServiceAccountToken
	}
	if automount == nil || *automount {
		return true
	}
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) != tokenDir {
			continue
		}
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 || spec.Volumes[i].Projected == nil {
			t.Errorf("%s: %s is not a projected volume", id, tokenDir)
			return false
		}
		files := map[string]bool{}
		for _, src := range spec.Volumes[i].Projected.Sources {
			switch {
			case src.ServiceAccountToken != nil:
				files[src.ServiceAccountToken.Path] = src.ServiceAccountToken.Audience == ""
			case src.ConfigMap != nil && src.ConfigMap.Name == "kube-root-ca.crt":
				for _, it := range src.ConfigMap.Items {
					files[it.Path] = it.Key == "ca.crt"
				}
			case src.DownwardAPI != nil:
				for _, it := range src.DownwardAPI.Items {
					files[it.Path] = it.FieldRef != nil && it.FieldRef.FieldPath == "metadata.namespace"
				}
			}
		}
		for _, f := range []string{"token", "ca.crt", "namespace"} {
			if !files[f] {
				t.Errorf("%s: the volume at %s has no %s for client-go (API server token, kube-root-ca.crt's ca.crt, the pod's namespace)", id, tokenDir, f)
			}
		}
		if !m.ReadOnly {
			t.Errorf("%s: the token is mounted read-write", id)
		}
		return files["token"]
	}
	return false
}

// access is one request a container makes of the Kubernetes API.
type access struct {
	verb, group, resource string
	namespaced            bool // in the pod's namespace
}

// needs are the requests each container makes, from the upstream sidecars'
// documented RBAC rules and from what the node daemon reads; needsOf adds
// leader election's.
var needs = map[string][]access{
	"csi-provisioner": {
		{"create", "", "persistentvolumes", false}, {"delete", "", "persistentvolumes", false},
		{"update", "", "persistentvolumeclaims", false}, {"watch", "storage.k8s.io", "storageclasses", false},
		{"create", "", "events", false}, {"watch", "storage.k8s.io", "csinodes", false},
		{"watch", "", "nodes", false}, {"watch", "storage.k8s.io", "volumeattachments", false},
		{"get", "snapshot.storage.k8s.io", "volumesnapshotcontents", false},
		{"update", "snapshot.storage.k8s.io", "volumesnapshots", false},
	},
	"csi-attacher": {
		{"patch", "", "persistentvolumes", false}, {"patch", "storage.k8s.io", "volumeattachments", false},
		{"patch", "storage.k8s.io", "volumeattachments/status", false}, {"watch", "storage.k8s.io", "csinodes", false},
	},
	"csi-snapshotter": {
		{"watch", "snapshot.storage.k8s.io", "volumesnapshotclasses", false},
		{"update", "snapshot.storage.k8s.io", "volumesnapshotcontents", false},
		{"patch", "snapshot.storage.k8s.io", "volumesnapshotcontents/status", false},
		{"create", "", "events", false},
	},
	"csi-resizer": {
		{"patch", "", "persistentvolumes", false}, {"watch", "", "persistentvolumeclaims", false},
		{"patch", "", "persistentvolumeclaims/status", false}, {"watch", "", "pods", false},
		{"watch", "storage.k8s.io", "volumeattributesclasses", false}, {"create", "", "events", false},
	},
	// The node daemon finds a pod's claims in its volumes' labels, and the
	// node's topology in its own labels.
	"strata":                nil,
	"node-driver-registrar": nil,
	"liveness-probe":        nil,
}

// needsOf returns the requests a container makes: needs, and the lease
// updates of leader election when it elects a leader.
func needsOf(c *corev1.Container) []access {
	n := needs[c.Name]
	if slices.Contains(c.Args, "--leader-election") {
		n = append(slices.Clone(n), access{"update", "coordination.k8s.io", "leases", true})
	}
	return n
}

// checkPermissions checks that every container may make its requests.
func (b *bundle) checkPermissions(t *testing.T) {
	t.Helper()
	for _, p := range b.podTemplates() {
		for _, c := range p.spec.Containers {
			if _, ok := needs[c.Name]; !ok {
				t.Errorf("%s: container %s: no test knows what it needs of the API", p.owner, c.Name)
			}
			for _, a := range needsOf(&c) {
				ns := ""
				if a.namespaced {
					ns = p.namespace
				}
				if !b.can(p.namespace, p.spec.ServiceAccountName, a, ns) {
					t.Errorf("%s: container %s may not %s %s.%s (ServiceAccount %s)",
						p.owner, c.Name, a.verb, a.resource, a.group, p.spec.ServiceAccountName)
				}
			}
		}
	}
}

// can evaluates RBAC: may ServiceAccount saNS/sa make request a in namespace
// ns ("" for cluster-wide)?
func (b *bundle) can(saNS, sa string, a access, ns string) bool {
	subject := func(ss []rbacv1.Subject) bool {
		return slices.ContainsFunc(ss, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Namespace == saNS && s.Name == sa
		})
	}
	for _, rb := range b.clusterRoleBindings {
		if cr := b.clusterRoles[rb.RoleRef.Name]; subject(rb.Subjects) && cr != nil && allows(cr.Rules, a) {
			return true
		}
	}
	if ns == "" {
		return false
	}
	for _, rb := range b.roleBindings {
		if rb.Namespace != ns || !subject(rb.Subjects) {
			continue
		}
		var rules []rbacv1.PolicyRule
		switch rb.RoleRef.Kind {
		case "Role":
			if r := b.roles[ns+"/"+rb.RoleRef.Name]; r != nil {
				rules = r.Rules
			}
		case "ClusterRole":
			if r := b.clusterRoles[rb.RoleRef.Name]; r != nil {
				rules = r.Rules
			}
		}
		if allows(rules, a) {
			return true
		}
	}
	return false
}

func allows(rules []rbacv1.PolicyRule, a access) bool {
	match := func(list []string, s string) bool {
		return slices.Contains(list, s) || slices.Contains(list, "*")
	}
	for _, r := range rules {
		if match(r.Verbs, a.verb) && match(r.APIGroups, a.group) && match(r.Resources, a.resource) && len(r.ResourceNames) == 0 {
			return true
		}
	}
	return false
}

// checkSocket checks that kubelet, the node daemon and every sidecar use one
// CSI socket: the paths in their arguments, through their volume mounts, are
// one file on the host, the one the registrar gives kubelet.
func (b *bundle) checkSocket(t *testing.T) {
	t.Helper()
	sockets := map[string][]string{} // host path: containers
	var registration []string
	for _, p := range b.podTemplates() {
		for i := range p.spec.Containers {
			c := &p.spec.Containers[i]
			id := p.owner + " container " + c.Name
			addr, ok := flagValue(c.Args, "--csi-address")
			if e, isDriver := flagValue(c.Args, "--csi-endpoint"); isDriver {
				if addr, ok = strings.CutPrefix(e, "unix://"); !ok {
					t.Errorf("%s: --csi-endpoint %s is not unix://PATH", id, e)
				}
			}
			if !ok {
				t.Errorf("%s: no CSI socket in its arguments", id)
				continue
			}
			host, ok := hostPathOf(p.spec, c, addr)
			if !ok {
				t.Errorf("%s: socket %s is not on a hostPath volume", id, addr)
				continue
			}
			sockets[host] = append(sockets[host], id)
			if r, ok := flagValue(c.Args, "--kubelet-registration-path"); ok {
				registration = append(registration, r)
			}
		}
	}
	if len(sockets) != 1 {
		t.Errorf("the containers use %d CSI sockets, want one: %v", len(sockets), sockets)
	}
	for host := range sockets {
		// One registrar per node DaemonSet, each on its own nodes.
		if len(registration) != len(b.daemonSets) || slices.ContainsFunc(registration, func(r string) bool { return r != host }) {
			t.Errorf("node-driver-registrars give kubelet %v, the socket is %s", registration, host)
		}
		if dir := path.Base(path.Dir(host)); dir != driverName {
			t.Errorf("socket %s: kubelet's convention is KUBELET_DIR/plugins/%s/", host, driverName)
		}
	}
}

// hostPathOf says where a path in a container is on the host, if it is on a
// hostPath volume.
func hostPathOf(spec *corev1.PodSpec, c *corev1.Container, p string) (string, bool) {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if (p == m.MountPath || strings.HasPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")) &&
			(best == nil || len(m.MountPath) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	if best == nil {
		return "", false
	}
	for _, v := range spec.Volumes {
		if v.Name == best.Name && v.HostPath != nil {
			return path.Join(v.HostPath.Path, strings.TrimPrefix(p, best.MountPath)), true
		}
	}
	return "", false
}

// flagValue returns the value of --name=value or --name value.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// checkNode checks the node DaemonSets: strata up with its flags, the host
// paths it needs, the sidecars kubelet needs, the provisioner of the node's
// volumes; and that no two of them run on one node.
func (b *bundle) checkNode(t *testing.T) {
	t.Helper()
	if len(b.daemonSets) == 0 {
		t.Fatal("no DaemonSet: the node daemon is missing")
	}
	for i, ds := range b.daemonSets {
		b.checkNodeDaemonSet(t, &ds.Spec.Template.Spec, "DaemonSet "+ds.Name)
		// Two node daemons on one node would share its data directory and
		// ports: the DaemonSets' node selectors must exclude each other.
		for _, other := range b.daemonSets[:i] {
			if !disjoint(ds.Spec.Template.Spec.NodeSelector, other.Spec.Template.Spec.NodeSelector) {
				t.Errorf("DaemonSets %s and %s may run on the same nodes: nodeSelectors %v and %v", other.Name, ds.Name,
					other.Spec.Template.Spec.NodeSelector, ds.Spec.Template.Spec.NodeSelector)
			}
		}
	}
}

// disjoint says whether no node matches both node selectors: they require
// different values of one label.
func disjoint(a, b map[string]string) bool {
	for k, v := range a {
		if w, ok := b[k]; ok && w != v {
			return true
		}
	}
	return false
}

func (b *bundle) checkNodeDaemonSet(t *testing.T, spec *corev1.PodSpec, owner string) {
	t.Helper()
	c := container(t, spec, "strata")
	id := owner + " container strata"
	if len(c.Args) == 0 || c.Args[0] != "up" {
		t.Errorf("%s: args %q, want strata up", id, c.Args)
	}
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Errorf("%s: not privileged", id)
	}
	if v, _ := flagValue(c.Args, "--node-name"); v != "$(NODE_NAME)" {
		t.Errorf("%s: --node-name %q, want $(NODE_NAME)", id, v)
	}
	checkNodeName(t, id, c)
	dataDir, ok := flagValue(c.Args, "--data-dir")
	if host, onHost := hostPathOf(spec, c, dataDir); !ok || !onHost || host != dataDir {
		t.Errorf("%s: --data-dir %q is not the same directory on the host (%q)", id, dataDir, host)
	}
	kubeletDir := ""
	for _, m := range c.VolumeMounts {
		if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
			kubeletDir = m.MountPath
		}
	}
	if host, ok := hostPathOf(spec, c, kubeletDir); kubeletDir == "" || !ok || host != kubeletDir || !strings.HasSuffix(kubeletDir, "kubelet") {
		t.Errorf("%s: the kubelet directory is not mounted at its own path with Bidirectional propagation", id)
	}
	for _, dir := range []string{"/dev", "/sys"} {
		if host, ok := hostPathOf(spec, c, dir); !ok || host != dir {
			t.Errorf("%s: the host's %s is not mounted", id, dir)
		}
	}
	if !spec.HostNetwork {
		t.Errorf("%s: not on the host network", owner)
	}
	for _, name := range []string{"node-driver-registrar", "liveness-probe"} {
		container(t, spec, name)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil {
		t.Errorf("%s: no liveness probe", id)
	}
	// Distributed provisioning: a volume is made on the node whose daemon
	// answers CreateVolume, so each node's provisioner makes the volumes of
	// the pods scheduled to it.
	p := container(t, spec, "csi-provisioner")
	checkNodeLocal(t, owner, p)
	for _, arg := range []string{"--node-deployment-immediate-binding=false", "--strict-topology", "--extra-create-metadata"} {
		if !slices.Contains(p.Args, arg) {
			t.Errorf("%s container csi-provisioner: no %s", owner, arg)
		}
	}
}

// checkNodeName checks that NODE_NAME is the name of the pod's node.
func checkNodeName(t *testing.T, id string, c *corev1.Container) {
	t.Helper()
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Errorf("%s: NODE_NAME does not come from spec.nodeName", id)
	}
}

// checkNodeLocal checks a sidecar that acts on the volumes of its own node:
// --node-deployment, its node's name, and no leader election (every node's
// works).
func checkNodeLocal(t *testing.T, owner string, c *corev1.Container) {
	t.Helper()
	id := owner + " container " + c.Name
	if !slices.Contains(c.Args, "--node-deployment") {
		t.Errorf("%s: no --node-deployment", id)
	}
	if slices.Contains(c.Args, "--leader-election") {
		t.Errorf("%s: --leader-election with --node-deployment: one node's sidecar would work for every node", id)
	}
	checkNodeName(t, id, c)
}

// checkController checks the controller Deployment: the attacher and the
// resizer with leader election, next to a node daemon; not the provisioner,
// which must run on every node.
func (b *bundle) checkController(t *testing.T) {
	t.Helper()
	if len(b.deployments) != 1 {
		t.Fatalf("%d Deployments, want the controller's", len(b.deployments))
	}
	d := b.deployments[0]
	spec := &d.Spec.Template.Spec
	for _, name := range []string{"csi-attacher", "csi-resizer", "liveness-probe"} {
		c := container(t, spec, name)
		if strings.HasPrefix(name, "csi-") && !slices.Contains(c.Args, "--leader-election") {
			t.Errorf("Deployment %s container %s: no --leader-election", d.Name, name)
		}
	}
	if hasContainer(spec, "csi-provisioner") {
		t.Errorf("Deployment %s: csi-provisioner would make every volume on the node it runs on", d.Name)
	}
	// The sidecars reach the daemon's socket on their own node only.
	a := spec.Affinity
	for _, ds := range b.daemonSets {
		node := ds.Spec.Template.Labels
		if a == nil || a.PodAffinity == nil || !slices.ContainsFunc(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution,
			func(term corev1.PodAffinityTerm) bool {
				return term.TopologyKey == corev1.LabelHostname && term.LabelSelector != nil && selects(t, term.LabelSelector, node)
			}) {
			t.Errorf("Deployment %s: no required pod affinity to the node daemon (DaemonSet %s) on the same host", d.Name, ds.Name)
		}
	}
}

// checkSnapshotter checks that csi-snapshotter runs when there is a
// VolumeSnapshotClass, in one place: in every node DaemonSet, node-local, or
// in the controller Deployment, with leader election.
func (b *bundle) checkSnapshotter(t *testing.T) {
	t.Helper()
	var nodes int
	for _, ds := range b.daemonSets {
		spec := &ds.Spec.Template.Spec
		if hasContainer(spec, "csi-snapshotter") {
			nodes++
			checkNodeLocal(t, "DaemonSet "+ds.Name, container(t, spec, "csi-snapshotter"))
		}
	}
	central := 0
	for _, d := range b.deployments {
		spec := &d.Spec.Template.Spec
		if hasContainer(spec, "csi-snapshotter") {
			central++
			c := container(t, spec, "csi-snapshotter")
			if !slices.Contains(c.Args, "--leader-election") || slices.Contains(c.Args, "--node-deployment") {
				t.Errorf("Deployment %s container csi-snapshotter: want --leader-election, not --node-deployment", d.Name)
			}
		}
	}
	switch want := len(b.snapshotClasses) > 0; {
	case !want && nodes+central > 0:
		t.Error("no VolumeSnapshotClass, yet a csi-snapshotter runs")
	case want && !(nodes == len(b.daemonSets) && central == 0 || nodes == 0 && central == 1):
		t.Errorf("csi-snapshotter in %d of %d node DaemonSets and %d Deployments: want it in every node DaemonSet or in the controller", nodes, len(b.daemonSets), central)
	}
	for _, ds := range b.daemonSets {
		for _, c := range ds.Spec.Template.Spec.Containers {
			if c.Name == "csi-snapshotter" && !slices.Contains(c.Args, "--extra-create-metadata") {
				t.Errorf("DaemonSet %s container csi-snapshotter: no --extra-create-metadata", ds.Name)
			}
		}
	}
}

// checkServices checks that the scheduler extender's Service reaches the
// port strata up serves it on.
func (b *bundle) checkServices(t *testing.T) {
	t.Helper()
	ds := b.daemonSets[0]
	c := container(t, &ds.Spec.Template.Spec, "strata")
	addr, served := flagValue(c.Args, "--scheduler-extender-addr")
	for _, other := range b.daemonSets[1:] {
		if a, _ := flagValue(container(t, &other.Spec.Template.Spec, "strata").Args, "--scheduler-extender-addr"); a != addr {
			t.Errorf("DaemonSets %s and %s: --scheduler-extender-addr %q and %q", ds.Name, other.Name, addr, a)
		}
	}
	if len(b.services) > 1 || len(b.services) == 1 != served {
		t.Errorf("%d Services, --scheduler-extender-addr %q: want a Service exactly when the extender is served", len(b.services), addr)
	}
	for _, svc := range b.services {
		for _, ds := range b.daemonSets {
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
				t.Errorf("Service %s does not select the node daemon of DaemonSet %s", svc.Name, ds.Name)
			}
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Errorf("--scheduler-extender-addr %q: %v", addr, err)
		}
		for _, sp := range svc.Spec.Ports {
			target := sp.TargetPort.String()
			if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool {
				return (p.Name == target || fmt.Sprint(p.ContainerPort) == target) && fmt.Sprint(p.ContainerPort) == port
			}) {
				t.Errorf("Service %s port %s: target %s is not strata's port %s", svc.Name, sp.Name, target, port)
			}
		}
	}
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

func hasContainer(spec *corev1.PodSpec, name string) bool {
	return slices.ContainsFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == name })
}

// named returns the object of that name.
func named[T metav1.Object](t *testing.T, objs []T, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.GetName() == name {
			return o
		}
	}
	var none T
	t.Fatalf("no %T named %s", none, name)
	return none
}

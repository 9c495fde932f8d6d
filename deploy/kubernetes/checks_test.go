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
	for _, p := range b.podTemplates() {
		checkPodSpec(t, p.owner, p.spec)
		if s := p.selector; s == nil || !selects(t, s, p.labels) {
			t.Errorf("%s: its selector does not select its pods", p.owner)
		}
	}
	b.checkServiceAccounts(t)
	b.checkPermissions(t)
	b.checkSocket(t)
	b.checkNode(t)
	b.checkController(t)
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
// and is bound to roles that exist when the pod calls the API, that pods that
// do not call it get no token, and that bindings bind what exists.
func (b *bundle) checkServiceAccounts(t *testing.T) {
	t.Helper()
	accounts := map[string]bool{}
	for _, sa := range b.serviceAccounts {
		accounts[sa.Namespace+"/"+sa.Name] = true
	}
	bound := map[string]bool{}
	checkBinding := func(id string, subjects []rbacv1.Subject, ref rbacv1.RoleRef, ns string) {
		for _, s := range subjects {
			if s.Kind != rbacv1.ServiceAccountKind || !accounts[s.Namespace+"/"+s.Name] {
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
		usesAPI := slices.ContainsFunc(p.spec.Containers, func(c corev1.Container) bool { return len(needs[c.Name]) > 0 })
		token := p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken
		switch {
		case p.spec.ServiceAccountName == "" || !accounts[sa]:
			t.Errorf("%s: ServiceAccount %q does not exist", p.owner, p.spec.ServiceAccountName)
		case usesAPI && !token:
			t.Errorf("%s: its containers call the API, and it gets no token", p.owner)
		case usesAPI && !bound[sa]:
			t.Errorf("%s: ServiceAccount %s has no role", p.owner, sa)
		case !usesAPI && (token || bound[sa]):
			// Least privilege: a privileged pod on the host's network
			// keeps no credentials it does not use.
			t.Errorf("%s: no container calls the API, yet it gets a token (or its ServiceAccount roles)", p.owner)
		}
	}
}

// access is one request a container makes of the Kubernetes API.
type access struct {
	verb, group, resource string
	namespaced            bool // in the pod's namespace
}

// needs are the requests each container makes, from the upstream sidecars'
// documented RBAC rules and from what the node daemon reads.
var needs = map[string][]access{
	"csi-provisioner": {
		{"create", "", "persistentvolumes", false}, {"delete", "", "persistentvolumes", false},
		{"update", "", "persistentvolumeclaims", false}, {"watch", "storage.k8s.io", "storageclasses", false},
		{"create", "", "events", false}, {"watch", "storage.k8s.io", "csinodes", false},
		{"watch", "", "nodes", false}, {"watch", "storage.k8s.io", "volumeattachments", false},
		{"get", "snapshot.storage.k8s.io", "volumesnapshotcontents", false},
		{"update", "snapshot.storage.k8s.io", "volumesnapshots", false},
		{"update", "coordination.k8s.io", "leases", true},
	},
	"csi-attacher": {
		{"patch", "", "persistentvolumes", false}, {"patch", "storage.k8s.io", "volumeattachments", false},
		{"patch", "storage.k8s.io", "volumeattachments/status", false}, {"watch", "storage.k8s.io", "csinodes", false},
		{"update", "coordination.k8s.io", "leases", true},
	},
	"csi-snapshotter": {
		{"watch", "snapshot.storage.k8s.io", "volumesnapshotclasses", false},
		{"update", "snapshot.storage.k8s.io", "volumesnapshotcontents", false},
		{"patch", "snapshot.storage.k8s.io", "volumesnapshotcontents/status", false},
		{"create", "", "events", false}, {"update", "coordination.k8s.io", "leases", true},
	},
	"csi-resizer": {
		{"patch", "", "persistentvolumes", false}, {"watch", "", "persistentvolumeclaims", false},
		{"patch", "", "persistentvolumeclaims/status", false}, {"watch", "", "pods", false},
		{"watch", "storage.k8s.io", "volumeattributesclasses", false}, {"create", "", "events", false},
		{"update", "coordination.k8s.io", "leases", true},
	},
	// The node daemon finds a pod's claims in its volumes' labels, and the
	// node's topology in its own labels.
	"strata":                nil,
	"node-driver-registrar": nil,
	"liveness-probe":        nil,
}

// checkPermissions checks that every container may make its requests.
func (b *bundle) checkPermissions(t *testing.T) {
	t.Helper()
	for _, p := range b.podTemplates() {
		for _, c := range p.spec.Containers {
			want, ok := needs[c.Name]
			if !ok {
				t.Errorf("%s: container %s: no test knows what it needs of the API", p.owner, c.Name)
			}
			for _, a := range want {
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
		if len(registration) != 1 || registration[0] != host {
			t.Errorf("node-driver-registrar gives kubelet %v, the socket is %s", registration, host)
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

// checkNode checks the node DaemonSet: strata up with its flags, the host
// paths it needs, the sidecars kubelet needs.
func (b *bundle) checkNode(t *testing.T) {
	t.Helper()
	if len(b.daemonSets) != 1 {
		t.Fatalf("%d DaemonSets, want the node's", len(b.daemonSets))
	}
	ds := b.daemonSets[0]
	spec := &ds.Spec.Template.Spec
	c := container(t, spec, "strata")
	id := "DaemonSet " + ds.Name + " container strata"
	if len(c.Args) == 0 || c.Args[0] != "up" {
		t.Errorf("%s: args %q, want strata up", id, c.Args)
	}
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Errorf("%s: not privileged", id)
	}
	if v, _ := flagValue(c.Args, "--node-name"); v != "$(NODE_NAME)" {
		t.Errorf("%s: --node-name %q, want $(NODE_NAME)", id, v)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Errorf("%s: NODE_NAME does not come from spec.nodeName", id)
	}
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
		t.Errorf("DaemonSet %s: not on the host network", ds.Name)
	}
	for _, name := range []string{"node-driver-registrar", "liveness-probe"} {
		container(t, spec, name)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil {
		t.Errorf("%s: no liveness probe", id)
	}
}

// checkController checks the controller Deployment: the upstream sidecars
// with the flags the driver relies on, next to a node daemon.
func (b *bundle) checkController(t *testing.T) {
	t.Helper()
	if len(b.deployments) != 1 {
		t.Fatalf("%d Deployments, want the controller's", len(b.deployments))
	}
	d := b.deployments[0]
	spec := &d.Spec.Template.Spec
	want := []string{"csi-provisioner", "csi-attacher", "csi-resizer", "liveness-probe"}
	if len(b.snapshotClasses) > 0 {
		want = append(want, "csi-snapshotter")
	}
	for _, name := range want {
		c := container(t, spec, name)
		if strings.HasPrefix(name, "csi-") && !slices.Contains(c.Args, "--leader-election") {
			t.Errorf("Deployment %s container %s: no --leader-election", d.Name, name)
		}
	}
	p := container(t, spec, "csi-provisioner")
	for _, arg := range []string{"--extra-create-metadata", "--feature-gates=Topology=true"} {
		if !slices.Contains(p.Args, arg) {
			t.Errorf("Deployment %s csi-provisioner: no %s", d.Name, arg)
		}
	}
	// The sidecars reach the daemon's socket on their own node only.
	node := b.daemonSets[0].Spec.Template.Labels
	a := spec.Affinity
	if a == nil || a.PodAffinity == nil || !slices.ContainsFunc(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution,
		func(term corev1.PodAffinityTerm) bool {
			return term.TopologyKey == corev1.LabelHostname && term.LabelSelector != nil && selects(t, term.LabelSelector, node)
		}) {
		t.Errorf("Deployment %s: no required pod affinity to the node daemon on the same host", d.Name)
	}
}

// checkServices checks that the scheduler extender's Service reaches the
// port strata up serves it on.
func (b *bundle) checkServices(t *testing.T) {
	t.Helper()
	ds := b.daemonSets[0]
	c := container(t, &ds.Spec.Template.Spec, "strata")
	addr, served := flagValue(c.Args, "--scheduler-extender-addr")
	if len(b.services) > 1 || len(b.services) == 1 != served {
		t.Errorf("%d Services, --scheduler-extender-addr %q: want a Service exactly when the extender is served", len(b.services), addr)
	}
	for _, svc := range b.services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
			t.Errorf("Service %s does not select the node daemon", svc.Name)
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

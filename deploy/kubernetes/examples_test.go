package kubernetes_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// TestExamples checks the examples of docs/kubernetes.md against each other
// and against the classes strata.yaml installs.
func TestExamples(t *testing.T) {
	data, err := os.ReadFile(manifestsFile)
	if err != nil {
		t.Fatal(err)
	}
	installed := decodeBundle(t, manifestsFile, data)

	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples in %s: %v", examplesDir, err)
	}
	ex := &bundle{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ex.decode(t, f, data)
	}

	for _, sc := range ex.storageClasses {
		checkStorageClass(t, sc)
	}
	pvcs := map[string]*corev1.PersistentVolumeClaim{}
	for _, pvc := range ex.pvcs {
		pvcs[pvc.Name] = pvc
	}
	snapshots := map[string]*snapshotv1.VolumeSnapshot{}
	for _, s := range ex.snapshots {
		snapshots[s.Name] = s
		if c := s.Spec.VolumeSnapshotClassName; c != nil && installed.snapshotClasses[*c] == nil {
			t.Errorf("VolumeSnapshot %s: class %s is not installed", s.Name, *c)
		}
		src := s.Spec.Source.PersistentVolumeClaimName
		if src == nil || pvcs[*src] == nil {
			t.Errorf("VolumeSnapshot %s: its PVC is not among the examples", s.Name)
		}
	}
	for _, pvc := range ex.pvcs {
		checkClaimSpec(t, "PersistentVolumeClaim "+pvc.Name, &pvc.Spec, installed)
		if ds := pvc.Spec.DataSource; ds != nil {
			srcSize, ok := sourceSize(ds, pvcs, snapshots)
			if !ok {
				t.Errorf("PersistentVolumeClaim %s: data source %s %s is not among the examples", pvc.Name, ds.Kind, ds.Name)
			} else if size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; size.Cmp(srcSize) < 0 {
				t.Errorf("PersistentVolumeClaim %s: %s is smaller than its source (%s)", pvc.Name, size.String(), srcSize.String())
			}
		}
	}
	for _, pod := range ex.pods {
		checkPodSpec(t, "Pod "+pod.Name, &pod.Spec)
		for _, v := range pod.Spec.Volumes {
			if v.PersistentVolumeClaim == nil {
				continue
			}
			pvc := pvcs[v.PersistentVolumeClaim.ClaimName]
			if pvc == nil {
				t.Errorf("Pod %s: claim %s is not among the examples", pod.Name, v.PersistentVolumeClaim.ClaimName)
				continue
			}
			block := pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock
			mounted, device := volumeUse(&pod.Spec, v.Name)
			if block && (!device || mounted) || !block && (device || !mounted) {
				t.Errorf("Pod %s: volume %s of claim %s (block %v) is mounted %v, a device %v",
					pod.Name, v.Name, pvc.Name, block, mounted, device)
			}
		}
	}
	ex.checkKubeVirt(t, installed)
	if len(ex.pvcs) == 0 || len(ex.pods) == 0 || len(ex.snapshots) == 0 || len(ex.kubevirt) == 0 {
		t.Errorf("examples: %d PVCs, %d pods, %d snapshots, %d KubeVirt objects; docs/kubernetes.md shows each",
			len(ex.pvcs), len(ex.pods), len(ex.snapshots), len(ex.kubevirt))
	}
}

// TestDocsShowExamples checks that docs/kubernetes.md shows each example as
// it is in examples/ (less its opening comment).
func TestDocsShowExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		body := string(data)
		for strings.HasPrefix(body, "#") {
			_, body, _ = strings.Cut(body, "\n")
		}
		if !strings.Contains(string(doc), "```yaml\n"+body+"```\n") {
			t.Errorf("docs/kubernetes.md does not show %s as it is", f)
		}
		if !strings.Contains(string(doc), "deploy/kubernetes/"+f) {
			t.Errorf("docs/kubernetes.md does not name %s", f)
		}
	}
}

// kubevirtKinds are the examples' kinds whose Go types are not available
// here; checkKubeVirt checks what the examples use of them.
var kubevirtKinds = []schema.GroupVersionKind{
	{Group: "kubevirt.io", Version: "v1", Kind: "VirtualMachine"},
	{Group: "cdi.kubevirt.io", Version: "v1beta1", Kind: "DataVolume"},
}

// checkClaimSpec checks a claim of the examples: a class that is installed,
// an access mode a volume attached to one node serves, a size.
func checkClaimSpec(t *testing.T, id string, s *corev1.PersistentVolumeClaimSpec, installed *bundle) {
	t.Helper()
	if class := ptr.Deref(s.StorageClassName, ""); installed.storageClasses[class] == nil {
		t.Errorf("%s: storageClassName %q is not a class strata.yaml installs", id, class)
	}
	for _, m := range s.AccessModes {
		if m != corev1.ReadWriteOnce && m != corev1.ReadWriteOncePod {
			t.Errorf("%s: access mode %s: a Strata volume is attached to one node", id, m)
		}
	}
	if size, ok := s.Resources.Requests[corev1.ResourceStorage]; !ok || size.Sign() <= 0 {
		t.Errorf("%s: no storage request", id)
	}
}

// sourceSize is the size of a claim's data source among the examples.
func sourceSize(ds *corev1.TypedLocalObjectReference, pvcs map[string]*corev1.PersistentVolumeClaim,
	snapshots map[string]*snapshotv1.VolumeSnapshot) (q resource.Quantity, ok bool) {
	switch {
	case ds.Kind == "PersistentVolumeClaim" && (ds.APIGroup == nil || *ds.APIGroup == ""):
		if src := pvcs[ds.Name]; src != nil {
			return src.Spec.Resources.Requests[corev1.ResourceStorage], true
		}
	case ds.Kind == "VolumeSnapshot" && ds.APIGroup != nil && *ds.APIGroup == snapshotv1.GroupName:
		if s := snapshots[ds.Name]; s != nil && s.Spec.Source.PersistentVolumeClaimName != nil {
			if src := pvcs[*s.Spec.Source.PersistentVolumeClaimName]; src != nil {
				return src.Spec.Resources.Requests[corev1.ResourceStorage], true
			}
		}
	}
	return q, false
}

// volumeUse says whether a pod's containers mount a volume, or use it as a device.
func volumeUse(spec *corev1.PodSpec, name string) (mounted, device bool) {
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		mounted = mounted || slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == name })
		device = device || slices.ContainsFunc(c.VolumeDevices, func(d corev1.VolumeDevice) bool { return d.Name == name })
	}
	return mounted, device
}

// checkKubeVirt checks the KubeVirt examples: a DataVolume's storage is a
// claim spec (decoded strictly), a raw block volume of an installed class,
// and the VirtualMachine's disks are DataVolumes of the examples.
func (b *bundle) checkKubeVirt(t *testing.T, installed *bundle) {
	t.Helper()
	dataVolumes := map[string]bool{}
	var vms []map[string]any
	for _, u := range b.kubevirt {
		name, _ := get(u, "metadata", "name").(string)
		switch u["kind"] {
		case "DataVolume":
			dataVolumes[name] = true
			storage, err := yaml.Marshal(get(u, "spec", "storage"))
			var s corev1.PersistentVolumeClaimSpec
			if err == nil {
				err = yaml.UnmarshalStrict(storage, &s)
			}
			if err != nil {
				t.Errorf("DataVolume %s: spec.storage: %v", name, err)
				continue
			}
			checkClaimSpec(t, "DataVolume "+name, &s, installed)
			if s.VolumeMode == nil || *s.VolumeMode != corev1.PersistentVolumeBlock {
				t.Errorf("DataVolume %s: a VM disk is a raw block volume (volumeMode: Block)", name)
			}
		case "VirtualMachine":
			vms = append(vms, u)
		}
	}
	for _, vm := range vms {
		name, _ := get(vm, "metadata", "name").(string)
		volumes, _ := get(vm, "spec", "template", "spec", "volumes").([]any)
		disks, _ := get(vm, "spec", "template", "spec", "domain", "devices", "disks").([]any)
		var diskNames []string
		for _, d := range disks {
			n, _ := get(d, "name").(string)
			diskNames = append(diskNames, n)
		}
		n := 0
		for _, v := range volumes {
			vname, _ := get(v, "name").(string)
			if dv, ok := get(v, "dataVolume", "name").(string); ok {
				n++
				if !dataVolumes[dv] {
					t.Errorf("VirtualMachine %s: DataVolume %s is not among the examples", name, dv)
				}
			}
			if !slices.Contains(diskNames, vname) {
				t.Errorf("VirtualMachine %s: volume %s is no disk (disks %v)", name, vname, diskNames)
			}
		}
		if n == 0 {
			t.Errorf("VirtualMachine %s: no DataVolume disk", name)
		}
	}
	if len(dataVolumes) == 0 || len(vms) == 0 {
		t.Errorf("KubeVirt examples: %d DataVolumes, %d VirtualMachines", len(dataVolumes), len(vms))
	}
}

// get walks a decoded YAML document.
func get(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

package schedext

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	configv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"
)

// TestDocsSchedulerConfiguration checks the KubeSchedulerConfiguration of
// docs/kubernetes.md: it decodes strictly as kube-scheduler's
// configuration, its verbs are routes of the extender, and its port is the
// one the section's strata up example listens on.
func TestDocsSchedulerConfiguration(t *testing.T) {
	b, err := os.ReadFile("../../docs/kubernetes.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "\n## Storage-aware scheduling\n")
	if start < 0 {
		t.Fatal(`docs/kubernetes.md has no "## Storage-aware scheduling" section`)
	}
	section := doc[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	m := regexp.MustCompile("(?s)```yaml\n(apiVersion: kubescheduler.config.k8s.io/v1\n.*?)```").FindStringSubmatch(section)
	if m == nil {
		t.Fatal("no KubeSchedulerConfiguration block in the section")
	}
	var cfg configv1.KubeSchedulerConfiguration
	if err := yaml.UnmarshalStrict([]byte(m[1]), &cfg); err != nil {
		t.Fatalf("the documented KubeSchedulerConfiguration does not decode: %v", err)
	}
	if cfg.Kind != "KubeSchedulerConfiguration" || len(cfg.Extenders) != 1 {
		t.Fatalf("want a KubeSchedulerConfiguration with one extender: %+v", cfg)
	}
	ext := cfg.Extenders[0]
	if !ext.NodeCacheCapable || !ext.Ignorable || ext.Weight <= 0 || ext.BindVerb != "" || ext.PreemptVerb != "" || len(ext.ManagedResources) != 0 {
		t.Errorf("documented extender: %+v", ext)
	}
	u, err := url.Parse(ext.URLPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if flag := "--scheduler-extender-addr :" + u.Port(); !strings.Contains(section, flag) {
		t.Errorf("urlPrefix %s: the section does not show %q", ext.URLPrefix, flag)
	}
	e, err := New(Backend{Volumes: &fakeAPI{}, Cluster: &fakeAPI{}}, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{ext.FilterVerb, ext.PrioritizeVerb} {
		w := httptest.NewRecorder()
		e.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodPost, u.Path+"/"+verb, nil))
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "empty request body") {
			t.Errorf("POST %s/%s with no body: %d %s, want the extender's 400", u.Path, verb, w.Code, w.Body)
		}
	}
}

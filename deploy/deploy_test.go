// Package deploy holds no code: its test checks the deployment files under
// deploy/ and the Dockerfile against the bridge they deploy. Every
// Kubernetes manifest is decoded strictly into the k8s.io/api types (an
// unknown or misspelled field fails), every variable a manifest or the
// compose file sets must be one the bridge reads, the probes must point at
// /healthz and /readyz, and every series the Grafana dashboard queries must
// be one internal/metrics registers. A cluster is not needed.
package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/nr-bridge/nr-bridge/internal/metrics"
	"github.com/nr-bridge/nr-bridge/internal/testserver"
)

const modulePath = "github.com/nr-bridge/nr-bridge"

// runtimeVars are variables the Go runtime reads, allowed beside the
// bridge's own.
var runtimeVars = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG"}

var (
	bridgeVarsOnce sync.Once
	bridgeVarsSet  map[string]bool
	bridgeVarsErr  error
)

// bridgeVars returns every variable nr-bridge reads: the env tags of the
// struct fields in the module's packages that cmd/nr-bridge is built from.
func bridgeVars(t *testing.T) map[string]bool {
	t.Helper()
	bridgeVarsOnce.Do(func() {
		cmd := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}|{{.Dir}}|{{join .GoFiles ","}}`, "./cmd/nr-bridge")
		cmd.Dir = ".."
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			bridgeVarsErr = fmt.Errorf("go list: %v: %s", err, stderr.String())
			return
		}
		vars := map[string]bool{}
		fset := token.NewFileSet()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			parts := strings.SplitN(line, "|", 3)
			if len(parts) != 3 || !strings.HasPrefix(parts[0], modulePath) || parts[2] == "" {
				continue
			}
			for _, name := range strings.Split(parts[2], ",") {
				f, err := parser.ParseFile(fset, filepath.Join(parts[1], name), nil, parser.SkipObjectResolution)
				if err != nil {
					bridgeVarsErr = err
					return
				}
				ast.Inspect(f, func(n ast.Node) bool {
					field, ok := n.(*ast.Field)
					if !ok || field.Tag == nil {
						return true
					}
					tag, err := strconv.Unquote(field.Tag.Value)
					if err != nil {
						return true
					}
					if env, ok := reflect.StructTag(tag).Lookup("env"); ok {
						if name, _, _ := strings.Cut(env, ","); name != "" {
							vars[name] = true
						}
					}
					return true
				})
			}
		}
		bridgeVarsSet = vars
	})
	if bridgeVarsErr != nil {
		t.Fatal(bridgeVarsErr)
	}
	for _, v := range []string{"MQTT_URL", "MQTT_CLIENT_ID", "NATS_URL", "HTTP_ADDR", "HTTP_AUTH_TOKENS_FILE"} {
		if !bridgeVarsSet[v] {
			t.Fatalf("the bridge's variables %v lack %s: reading them went wrong", bridgeVarsSet, v)
		}
	}
	return bridgeVarsSet
}

func knownVar(t *testing.T, name string) bool {
	return bridgeVars(t)[name] || slices.Contains(runtimeVars, name)
}

// deployFiles returns the files under deploy/ with one of the extensions.
func deployFiles(t *testing.T, exts ...string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && slices.Contains(exts, filepath.Ext(path)) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// yamlDocs splits a YAML file into its documents, each re-encoded on its
// own, skipping empty ones.
func yamlDocs(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs [][]byte
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			continue
		}
		out, err := yaml.Marshal(&n)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		docs = append(docs, out)
	}
}

func TestEveryFileParses(t *testing.T) {
	files := deployFiles(t, ".yaml", ".yml", ".json")
	if len(files) < 5 {
		t.Fatalf("found %v under deploy/, want compose, kubernetes and grafana files", files)
	}
	for _, f := range files {
		if filepath.Ext(f) == ".json" {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var v any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Errorf("%s: %v", f, err)
			}
			continue
		}
		if len(yamlDocs(t, f)) == 0 {
			t.Errorf("%s: no YAML document", f)
		}
	}
}

// manifests are the decoded Kubernetes objects by kind and name.
type manifests struct {
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	pdbs         map[string]*policyv1.PodDisruptionBudget
	netpols      map[string]*networkingv1.NetworkPolicy
	namespaces   map[string]*corev1.Namespace
	files        []string // the files holding objects, relative to deploy/kubernetes
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{
		statefulSets: map[string]*appsv1.StatefulSet{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, netpols: map[string]*networkingv1.NetworkPolicy{},
		namespaces: map[string]*corev1.Namespace{},
	}
	dir := "kubernetes"
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || (filepath.Ext(name) != ".yaml" && filepath.Ext(name) != ".yml") || name == "kustomization.yaml" {
			continue
		}
		m.files = append(m.files, name)
		path := filepath.Join(dir, name)
		for i, doc := range yamlDocs(t, path) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := sigsyaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s doc %d: %v", path, i+1, err)
			}
			if head.APIVersion == "" || head.Kind == "" || head.Metadata.Name == "" {
				t.Errorf("%s doc %d: want apiVersion, kind and metadata.name, got %+v", path, i+1, head)
				continue
			}
			where := fmt.Sprintf("%s %s/%s", path, head.Kind, head.Metadata.Name)
			var obj any
			switch head.APIVersion + " " + head.Kind {
			case "apps/v1 StatefulSet":
				o := &appsv1.StatefulSet{}
				m.statefulSets[head.Metadata.Name], obj = o, o
			case "v1 Service":
				o := &corev1.Service{}
				m.services[head.Metadata.Name], obj = o, o
			case "v1 ConfigMap":
				o := &corev1.ConfigMap{}
				m.configMaps[head.Metadata.Name], obj = o, o
			case "v1 Secret":
				o := &corev1.Secret{}
				m.secrets[head.Metadata.Name], obj = o, o
			case "policy/v1 PodDisruptionBudget":
				o := &policyv1.PodDisruptionBudget{}
				m.pdbs[head.Metadata.Name], obj = o, o
			case "v1 Namespace":
				o := &corev1.Namespace{}
				m.namespaces[head.Metadata.Name], obj = o, o
			case "networking.k8s.io/v1 NetworkPolicy":
				o := &networkingv1.NetworkPolicy{}
				m.netpols[head.Metadata.Name], obj = o, o
			default:
				t.Errorf("%s: apiVersion/kind not known to this test; add it", where)
				continue
			}
			// Strict: a misspelled or misplaced field is an error.
			if err := sigsyaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s: %v", where, err)
			}
		}
	}
	return m
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	if len(m.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets, want 1", len(m.statefulSets))
	}
	var sts *appsv1.StatefulSet
	for _, s := range m.statefulSets {
		sts = s
	}
	pod := sts.Spec.Template
	podLabels := pod.Labels

	t.Run("statefulset", func(t *testing.T) {
		if sts.Spec.Replicas == nil || *sts.Spec.Replicas < 2 {
			t.Errorf("replicas %v, want 2 or more", sts.Spec.Replicas)
		}
		if sts.Spec.Selector == nil || !selects(sts.Spec.Selector.MatchLabels, podLabels) {
			t.Errorf("selector %v does not select the pod labels %v", sts.Spec.Selector, podLabels)
		}
		svc := m.services[sts.Spec.ServiceName]
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone || !selects(svc.Spec.Selector, podLabels) {
			t.Errorf("serviceName %q: want a headless Service selecting the pods", sts.Spec.ServiceName)
		}
		if len(pod.Spec.Containers) != 1 {
			t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
		}
		if sc := pod.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Error("pod securityContext: want runAsNonRoot: true")
		}
		if pod.Spec.TerminationGracePeriodSeconds == nil {
			t.Error("terminationGracePeriodSeconds not set")
		}
	})

	c := pod.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	portOK := func(p intstr.IntOrString) bool {
		if p.Type == intstr.String {
			_, ok := ports[p.StrVal]
			return ok
		}
		return slices.Contains(mapsValues(ports), p.IntVal)
	}

	t.Run("container", func(t *testing.T) {
		if ports["http"] != 8080 {
			t.Errorf("container ports %v, want http 8080 (the image's EXPOSE and HTTP_ADDR)", ports)
		}
		for _, p := range []struct {
			name  string
			probe *corev1.Probe
			path  string
		}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
			if p.probe == nil || p.probe.HTTPGet == nil {
				t.Errorf("%s probe: want an httpGet on %s", p.name, p.path)
				continue
			}
			if p.probe.HTTPGet.Path != p.path || !portOK(p.probe.HTTPGet.Port) {
				t.Errorf("%s probe: GET %s on port %v, want %s on the http port", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
			}
		}
		req := c.Resources.Requests
		if req.Cpu().IsZero() || req.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container securityContext %+v: want a read-only root filesystem, no privilege escalation, all capabilities dropped", sc)
		}
	})

	t.Run("environment", func(t *testing.T) {
		env := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			env[e.Name] = e
			if !knownVar(t, e.Name) {
				t.Errorf("env %s is not a variable of nr-bridge", e.Name)
			}
		}
		id, ok := env["MQTT_CLIENT_ID"]
		if !ok || id.ValueFrom == nil || id.ValueFrom.FieldRef == nil || id.ValueFrom.FieldRef.FieldPath != "metadata.name" {
			t.Errorf("MQTT_CLIENT_ID %+v: want it from fieldRef metadata.name (the stable pod name)", id)
		}
		var configMaps int
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef == nil {
				continue
			}
			cm := m.configMaps[ef.ConfigMapRef.Name]
			if cm == nil {
				t.Errorf("envFrom ConfigMap %q not in the manifests", ef.ConfigMapRef.Name)
				continue
			}
			configMaps++
			for k := range cm.Data {
				if !knownVar(t, k) {
					t.Errorf("ConfigMap %s key %s is not a variable of nr-bridge", cm.Name, k)
				}
			}
			if _, ok := cm.Data["MQTT_CLIENT_ID"]; ok {
				t.Errorf("ConfigMap %s sets MQTT_CLIENT_ID: every replica would share it", cm.Name)
			}
			if d, ok := cm.Data["SHUTDOWN_TIMEOUT"]; ok && pod.Spec.TerminationGracePeriodSeconds != nil {
				st, err := time.ParseDuration(d)
				if err != nil || time.Duration(*pod.Spec.TerminationGracePeriodSeconds)*time.Second < st+10*time.Second {
					t.Errorf("terminationGracePeriodSeconds %d: want SHUTDOWN_TIMEOUT %s plus at least 10 s", *pod.Spec.TerminationGracePeriodSeconds, d)
				}
			}
		}
		if configMaps == 0 {
			t.Error("no envFrom ConfigMap")
		}
		// The tokens file must come from a mounted Secret that has it.
		tf, ok := env["HTTP_AUTH_TOKENS_FILE"]
		if !ok {
			t.Fatal("HTTP_AUTH_TOKENS_FILE not set: the API would be unauthenticated")
		}
		found := false
		for _, vm := range c.VolumeMounts {
			rel, ok := strings.CutPrefix(tf.Value, vm.MountPath+"/")
			if !ok {
				continue
			}
			for _, v := range pod.Spec.Volumes {
				if v.Name != vm.Name || v.Secret == nil {
					continue
				}
				if keys, ok := loadKustomization(t).generatedSecrets()[v.Secret.SecretName]; ok {
					found = slices.Contains(keys, rel)
					continue
				}
				s := m.secrets[v.Secret.SecretName]
				if s == nil {
					t.Errorf("volume %s: Secret %s not in the manifests", v.Name, v.Secret.SecretName)
					continue
				}
				_, inData := s.Data[rel]
				_, inString := s.StringData[rel]
				found = inData || inString
			}
		}
		if !found {
			t.Errorf("HTTP_AUTH_TOKENS_FILE %s is not a key of a mounted Secret", tf.Value)
		}
		// A Secret volume is generated by the kustomization, or one the
		// operator creates (then optional, so the pods start without it).
		generated := loadKustomization(t).generatedSecrets()
		for _, v := range pod.Spec.Volumes {
			if v.Secret == nil || m.secrets[v.Secret.SecretName] != nil {
				continue
			}
			if _, ok := generated[v.Secret.SecretName]; !ok && (v.Secret.Optional == nil || !*v.Secret.Optional) {
				t.Errorf("volume %s: Secret %s neither in the manifests nor generated, and not optional", v.Name, v.Secret.SecretName)
			}
		}
	})

	t.Run("services", func(t *testing.T) {
		if len(m.services) < 2 {
			t.Errorf("%d Services, want a headless one and one for the API", len(m.services))
		}
		for name, s := range m.services {
			if !selects(s.Spec.Selector, podLabels) {
				t.Errorf("Service %s selector %v does not select the pods", name, s.Spec.Selector)
			}
			for _, p := range s.Spec.Ports {
				if !portOK(p.TargetPort) {
					t.Errorf("Service %s targetPort %s is not a container port", name, p.TargetPort.String())
				}
			}
		}
	})

	t.Run("disruption budget", func(t *testing.T) {
		if len(m.pdbs) != 1 {
			t.Fatalf("%d PodDisruptionBudgets, want 1", len(m.pdbs))
		}
		for name, p := range m.pdbs {
			if p.Spec.Selector == nil || !selects(p.Spec.Selector.MatchLabels, podLabels) {
				t.Errorf("PodDisruptionBudget %s does not select the pods", name)
			}
			if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
				t.Errorf("PodDisruptionBudget %s: want maxUnavailable or minAvailable", name)
			}
		}
	})

	t.Run("network policy", func(t *testing.T) {
		for name, np := range m.netpols {
			if !selects(np.Spec.PodSelector.MatchLabels, podLabels) {
				t.Errorf("NetworkPolicy %s does not select the pods", name)
			}
			for _, in := range np.Spec.Ingress {
				for _, p := range in.Ports {
					if p.Port != nil && !portOK(*p.Port) {
						t.Errorf("NetworkPolicy %s port %s is not a container port", name, p.Port.String())
					}
				}
			}
		}
	})

	t.Run("kustomization", func(t *testing.T) {
		var k struct {
			APIVersion string   `json:"apiVersion"`
			Kind       string   `json:"kind"`
			Resources  []string `json:"resources"`
		}
		docs := yamlDocs(t, filepath.Join("kubernetes", "kustomization.yaml"))
		if len(docs) != 1 {
			t.Fatalf("kustomization.yaml has %d documents", len(docs))
		}
		if err := sigsyaml.Unmarshal(docs[0], &k); err != nil {
			t.Fatal(err)
		}
		if k.Kind != "Kustomization" || k.APIVersion == "" {
			t.Errorf("kustomization.yaml: kind %q apiVersion %q", k.Kind, k.APIVersion)
		}
		got, want := slices.Sorted(slices.Values(k.Resources)), slices.Sorted(slices.Values(m.files))
		if !slices.Equal(got, want) {
			t.Errorf("kustomization resources %v, want every manifest %v", got, want)
		}
	})
}

func mapsValues(m map[string]int32) []int32 {
	var out []int32
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestCompose(t *testing.T) {
	docs := yamlDocs(t, filepath.Join("compose", "compose.yaml"))
	if len(docs) != 1 {
		t.Fatalf("compose.yaml has %d documents, want 1", len(docs))
	}
	type service struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Profiles    []string          `yaml:"profiles"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Command     []string          `yaml:"command"`
		Healthcheck any               `yaml:"healthcheck"`
		ReadOnly    bool              `yaml:"read_only"`
	}
	var c struct {
		Services map[string]service `yaml:"services"`
	}
	if err := yaml.Unmarshal(docs[0], &c); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mosquitto", "nats", "redpanda"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	if p := c.Services["redpanda"].Profiles; !slices.Contains(p, "kafka") {
		t.Errorf("redpanda profiles %v, want kafka", p)
	}
	if cmd := c.Services["nats"].Command; !slices.Contains(cmd, "-js") {
		t.Errorf("nats command %v, want JetStream (-js)", cmd)
	}
	mountsConf := false
	for _, v := range c.Services["mosquitto"].Volumes {
		src, dst, _ := strings.Cut(v, ":")
		if strings.HasPrefix(dst, "/mosquitto/config/mosquitto.conf") {
			if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
				t.Errorf("mosquitto config volume %s: %v", v, err)
			}
			mountsConf = true
		}
	}
	if !mountsConf {
		t.Error("mosquitto does not mount deploy/mosquitto/mosquitto.conf")
	}

	var ids []string
	for name, s := range c.Services {
		if s.Build == nil {
			continue // not built from the Dockerfile: not a bridge
		}
		id := s.Environment["MQTT_CLIENT_ID"]
		if id == "" || strings.Contains(id, "$") {
			t.Errorf("bridge %s: MQTT_CLIENT_ID %q, want a fixed, stable ID", name, id)
		}
		ids = append(ids, id)
		for k := range s.Environment {
			if !knownVar(t, k) {
				t.Errorf("bridge %s: environment %s is not a variable of nr-bridge", name, k)
			}
		}
		if s.Healthcheck != nil {
			t.Errorf("bridge %s: a healthcheck cannot run in the distroless image", name)
		}
		if !s.ReadOnly {
			t.Errorf("bridge %s: want read_only: true", name)
		}
	}
	slices.Sort(ids)
	if len(ids) != 2 || ids[0] == ids[1] {
		t.Errorf("bridge client IDs %v, want two distinct ones", ids)
	}
}

// metricNames are the series families internal/metrics registers, with
// their types, including the per-worker and per-connection families that
// appear once a worker exists.
func metricNames(t *testing.T) map[string]string {
	t.Helper()
	m := metrics.New(metrics.BackboneNATS, "test")
	m.TrackInflight("w1", func() int { return 0 })
	m.TrackOldestInflight("w1", func() time.Duration { return 0 })
	m.MQTTConnected("w1", true)
	m.HTTPRequest("GET /healthz", 200)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range fams {
		out[f.GetName()] = f.GetType().String()
	}
	return out
}

var seriesRef = regexp.MustCompile(`\b(nr_bridge_[a-z0-9_]+|go_[a-z0-9_]+|process_[a-z0-9_]+)\b`)

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("grafana", "nr-bridge.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	var queries []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(x, k)
			}
		case []any:
			for _, x := range v {
				walk(x, key)
			}
		case string:
			if key == "expr" || key == "query" || key == "definition" {
				queries = append(queries, v)
			}
		}
	}
	walk(dash, "")
	if len(queries) < 10 {
		t.Fatalf("%d queries in the dashboard, want panels over the bridge's series", len(queries))
	}
	registered := metricNames(t)
	used := map[string]bool{}
	for _, q := range queries {
		for _, name := range seriesRef.FindAllString(q, -1) {
			base := name
			if _, ok := registered[name]; !ok {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(name, suffix); ok && registered[b] == "HISTOGRAM" {
						base = b
					}
				}
			}
			if _, ok := registered[base]; !ok {
				t.Errorf("dashboard query %q uses %s, which internal/metrics does not register", q, name)
			}
			used[base] = true
		}
	}
	for name := range registered {
		if strings.HasPrefix(name, "nr_bridge_") && !used[name] {
			t.Errorf("series %s has no panel in the dashboard", name)
		}
	}
	// Panels need unique IDs and a place on the grid.
	ids := map[float64]bool{}
	panels, _ := dash["panels"].([]any)
	for _, p := range panels {
		pm, _ := p.(map[string]any)
		id, _ := pm["id"].(float64)
		if ids[id] {
			t.Errorf("panel id %v used twice", id)
		}
		ids[id] = true
		if _, ok := pm["gridPos"].(map[string]any); !ok {
			t.Errorf("panel %v has no gridPos", pm["title"])
		}
	}
}

// mosquittoSettings reads the key value lines of a mosquitto.conf.
func mosquittoSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		out[k] = append(out[k], strings.TrimSpace(v))
	}
	return out
}

func TestMosquittoConfig(t *testing.T) {
	path := filepath.Join("mosquitto", "mosquitto.conf")
	s := mosquittoSettings(t, path)
	atLeast := func(key string, min int) {
		t.Helper()
		v, err := strconv.Atoi(first(s[key]))
		if err != nil || v < min {
			t.Errorf("%s %q, want at least %d", key, first(s[key]), min)
		}
	}
	if first(s["persistence"]) != "true" {
		t.Errorf("persistence %q, want true: a broker restart must keep sessions and queues", first(s["persistence"]))
	}
	if v, err := strconv.Atoi(first(s["autosave_interval"])); err != nil || v <= 0 || v > 300 {
		t.Errorf("autosave_interval %q, want a short interval (default 1800 s loses up to 30 min at a crash)", first(s["autosave_interval"]))
	}
	atLeast("max_inflight_messages", 1000) // the bridge's MQTT_MAX_INFLIGHT default
	atLeast("max_queued_messages", 10000)  // sized for outages, never 0
	if first(s["persistent_client_expiration"]) == "" {
		t.Error("persistent_client_expiration unset: orphaned sessions would queue forever")
	}
	if len(s["listener"]) == 0 {
		t.Error("no listener")
	}

	// The broker itself must accept the file (paths and port adapted).
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
		if _, err := os.Stat(bin); err != nil {
			t.Skip("mosquitto binary not installed; syntax not checked by the broker")
		}
	}
	dir := t.TempDir()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	conf = strings.ReplaceAll(conf, "persistence_location /mosquitto/data/", "persistence_location "+dir+"/")
	port := testserver.FreePort(t)
	conf = regexp.MustCompile(`(?m)^listener 1883$`).ReplaceAllString(conf, fmt.Sprintf("listener %d 127.0.0.1", port))
	if os.Geteuid() == 0 {
		conf += "\nuser root\n"
	}
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-c", confPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	testserver.WaitFor(t, 8*time.Second, "mosquitto running with deploy/mosquitto/mosquitto.conf", func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("mosquitto exited (%v) with the deploy config:\n%s", err, out.String())
		default:
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var instr []string // instructions with continuation lines joined
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") || (line == "" && cur == "") {
			continue
		}
		if c, ok := strings.CutSuffix(line, "\\"); ok {
			cur += c + " "
			continue
		}
		instr = append(instr, cur+line)
		cur = ""
	}
	has := func(prefix, sub string) bool {
		for _, i := range instr {
			if strings.HasPrefix(strings.ToUpper(i), prefix) && strings.Contains(i, sub) {
				return true
			}
		}
		return false
	}
	for _, c := range []struct{ prefix, sub, why string }{
		{"ARG", "GO_VERSION=1.26", "the Go of go.mod"},
		{"FROM", "golang:${GO_VERSION} AS build", "a golang builder stage"},
		{"ENV", "CGO_ENABLED=0", "a static binary"},
		{"RUN", "-trimpath", "reproducible paths"},
		{"RUN", "-X main.buildVersion=${VERSION}", "the version stamped in"},
		{"FROM", "gcr.io/distroless/static", "a distroless final image"},
		{"FROM", ":nonroot", "the nonroot variant"},
		{"USER", "65532", "a non-root user"},
		{"EXPOSE", "8080", "the API port"},
	} {
		if !has(c.prefix, c.sub) {
			t.Errorf("Dockerfile: no %s with %q (%s)", c.prefix, c.sub, c.why)
		}
	}
	if has("HEALTHCHECK", "") {
		t.Error("Dockerfile has a HEALTHCHECK; the orchestrator probes /healthz")
	}
	// go mod download reads the go.mod of every module replaced by a local
	// directory (third_party/paho.golang), so the directory must be in the
	// image before it runs.
	gomod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	download := slices.IndexFunc(instr, func(i string) bool { return strings.Contains(i, "go mod download") })
	for _, line := range strings.Split(string(gomod), "\n") {
		_, dir, ok := strings.Cut(line, "=> ./")
		if !strings.HasPrefix(line, "replace ") || !ok {
			continue
		}
		top, _, _ := strings.Cut(dir, "/")
		copied := slices.IndexFunc(instr, func(i string) bool {
			return strings.HasPrefix(strings.ToUpper(i), "COPY") && strings.Contains(i, " "+top+"/")
		})
		if copied < 0 || download < 0 || copied > download {
			t.Errorf("Dockerfile: go.mod replaces a module with ./%s, which is not copied before go mod download", dir)
		}
	}
	main, err := os.ReadFile(filepath.Join("..", "cmd", "nr-bridge", "version.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^var buildVersion = `).Match(main) {
		t.Error("cmd/nr-bridge has no `var buildVersion`, which the Dockerfile's -X main.buildVersion sets")
	}
	ignore, err := os.ReadFile(filepath.Join("..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\.git$`).Match(ignore) {
		t.Error(".dockerignore does not exclude .git")
	}
}

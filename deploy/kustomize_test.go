package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

// kustomizeImage is an images entry: the image name the manifests use and
// what replaces it.
type kustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName"`
	NewTag  string `json:"newTag"`
}

// kustomization is the part of deploy/kubernetes/kustomization.yaml the
// tests look at.
type kustomization struct {
	APIVersion      string           `json:"apiVersion"`
	Kind            string           `json:"kind"`
	Namespace       string           `json:"namespace"`
	Resources       []string         `json:"resources"`
	Images          []kustomizeImage `json:"images"`
	SecretGenerator []struct {
		Name     string   `json:"name"`
		Files    []string `json:"files"`
		Literals []string `json:"literals"`
		Envs     []string `json:"envs"`
	} `json:"secretGenerator"`
}

func loadKustomization(t *testing.T) *kustomization {
	t.Helper()
	docs := yamlDocs(t, filepath.Join("kubernetes", "kustomization.yaml"))
	if len(docs) != 1 {
		t.Fatalf("kustomization.yaml has %d documents", len(docs))
	}
	var k kustomization
	if err := sigsyaml.Unmarshal(docs[0], &k); err != nil {
		t.Fatal(err)
	}
	return &k
}

// generatedSecrets are the Secrets the kustomization generates, by name,
// with their keys (a file source "key=path" or "path" gives one key).
func (k *kustomization) generatedSecrets() map[string][]string {
	out := map[string][]string{}
	for _, g := range k.SecretGenerator {
		var keys []string
		for _, f := range g.Files {
			key, _, ok := strings.Cut(f, "=")
			if !ok {
				key = filepath.Base(f)
			}
			keys = append(keys, key)
		}
		out[g.Name] = keys
	}
	return out
}

// TestKustomizationNamespace: `kubectl apply -k` creates the namespace it
// deploys into, and puts every object there.
func TestKustomizationNamespace(t *testing.T) {
	k, m := loadKustomization(t), loadManifests(t)
	if k.Namespace == "" {
		t.Fatal("kustomization.yaml sets no namespace: the objects would land in the kubectl context's")
	}
	if _, ok := m.namespaces[k.Namespace]; !ok || len(m.namespaces) != 1 {
		t.Errorf("namespaces in the manifests %v, want exactly the kustomization's %q", mapKeys(m.namespaces), k.Namespace)
	}
	for _, f := range m.files {
		for _, doc := range yamlDocs(t, filepath.Join("kubernetes", f)) {
			var head struct {
				Metadata struct{ Namespace string } `json:"metadata"`
			}
			if err := sigsyaml.Unmarshal(doc, &head); err != nil {
				t.Fatal(err)
			}
			if head.Metadata.Namespace != "" && head.Metadata.Namespace != k.Namespace {
				t.Errorf("%s: metadata.namespace %q, want none (the kustomization sets %q)", f, head.Metadata.Namespace, k.Namespace)
			}
		}
	}
}

// TestKustomizationSecretsNotOverwritten: `kubectl apply -k` must never
// replace the operator's tokens or certificates with a placeholder. No
// Secret is among the resources; the tokens Secret is generated from a
// file that is never committed (and apply -k fails without it).
func TestKustomizationSecretsNotOverwritten(t *testing.T) {
	k, m := loadKustomization(t), loadManifests(t)
	if len(m.secrets) != 0 {
		t.Errorf("Secrets %v in the manifests: apply -k would overwrite the operator's", mapKeys(m.secrets))
	}
	gen := k.generatedSecrets()
	keys, ok := gen["nr-bridge-auth"]
	if !ok || len(keys) != 1 || keys[0] != "tokens" {
		t.Fatalf("secretGenerator %v, want nr-bridge-auth with the one key tokens", gen)
	}
	for _, g := range k.SecretGenerator {
		if len(g.Literals) > 0 || len(g.Envs) > 0 {
			t.Errorf("secretGenerator %s has literals or envs: secrets must come from files the operator writes", g.Name)
		}
		for _, f := range g.Files {
			_, path, ok := strings.Cut(f, "=")
			if !ok {
				path = f
			}
			path = filepath.Join("kubernetes", path)
			if out, err := exec.Command("git", "check-ignore", "-q", path).CombinedOutput(); err != nil {
				t.Errorf("%s is not git-ignored (%v %s): a token file could be committed", path, err, out)
			}
		}
	}
}

// TestKustomizationImage: the image the StatefulSet names is the one the
// kustomization's images entry replaces, so setting newName/newTag there
// deploys the image the operator built.
func TestKustomizationImage(t *testing.T) {
	k, m := loadKustomization(t), loadManifests(t)
	var names []string
	for _, s := range m.statefulSets {
		for _, c := range s.Spec.Template.Spec.Containers {
			name, _, _ := strings.Cut(c.Image, ":")
			names = append(names, name)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(k.Images, func(i kustomizeImage) bool { return i.Name == n && i.NewName != "" && i.NewTag != "" }) {
			t.Errorf("container image %s has no images entry with newName and newTag in kustomization.yaml", n)
		}
	}
	if len(names) == 0 {
		t.Fatal("no container")
	}
}

// TestConfigMapBackendsExplained: the broker and backbone addresses of the
// ConfigMap are Service names this directory does not deploy; the file and
// docs/operations.md say so for each.
func TestConfigMapBackendsExplained(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("kubernetes", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	if err := sigsyaml.Unmarshal(raw, &cm); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join("..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	hostPort := regexp.MustCompile(`^(?:[a-z]+://)?([A-Za-z0-9.-]+):(\d+)$`)
	for _, v := range []string{"MQTT_URL", "NATS_URL", "KAFKA_BROKERS"} {
		mm := hostPort.FindStringSubmatch(cm.Data[v])
		if mm == nil {
			t.Errorf("ConfigMap %s = %q, want host:port", v, cm.Data[v])
			continue
		}
		host := mm[1]
		if !strings.Contains(string(raw), "# "+host+", ") && !strings.Contains(string(raw), " "+host+" ") {
			t.Errorf("configmap.yaml does not explain the host %s of %s in a comment", host, v)
		}
		if !strings.Contains(string(doc), "`"+host+":"+mm[2]+"`") {
			t.Errorf("docs/operations.md does not name %s:%s (%s) where it explains the ConfigMap", host, mm[2], v)
		}
	}
	if !strings.Contains(string(raw), "Service names") {
		t.Error("configmap.yaml does not say the hosts are Service names")
	}
}

// TestKustomizeRenders renders the kustomization with kubectl (offline)
// from a copy holding a tokens file: every object in the namespace, the
// StatefulSet mounting the generated Secret. Without the tokens file the
// render fails. Skipped where kubectl is not installed.
func TestKustomizeRenders(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	dir := filepath.Join(t.TempDir(), "kubernetes")
	if err := os.CopyFS(dir, os.DirFS("kubernetes")); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(dir, "secrets", "tokens"))
	if out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput(); err == nil || !strings.Contains(string(out), "secrets/tokens") {
		t.Fatalf("render without secrets/tokens: err %v, output %s; want a failure naming the file", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets", "tokens"), []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kubectl, "kustomize", dir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v", err)
	}
	ns := loadKustomization(t).Namespace
	var secretName string
	var stsSecrets []string
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var o struct {
			Kind     string
			Metadata struct{ Name, Namespace string }
			Data     map[string]string
			Spec     struct {
				Template struct {
					Spec struct {
						Volumes []struct {
							Secret *struct{ SecretName string } `json:"secret"`
						}
					}
				}
			}
		}
		if err := sigsyaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatal(err)
		}
		switch {
		case o.Kind == "Namespace":
			if o.Metadata.Name != ns {
				t.Errorf("Namespace %s, want %s", o.Metadata.Name, ns)
			}
		case o.Metadata.Namespace != ns:
			t.Errorf("%s %s in namespace %q, want %q", o.Kind, o.Metadata.Name, o.Metadata.Namespace, ns)
		}
		if o.Kind == "Secret" {
			secretName = o.Metadata.Name
			if o.Data["tokens"] != "dDBrZW4K" { // base64 of "t0ken\n"
				t.Errorf("generated Secret data %v, want the tokens file", o.Data)
			}
		}
		if o.Kind == "StatefulSet" {
			for _, v := range o.Spec.Template.Spec.Volumes {
				if v.Secret != nil {
					stsSecrets = append(stsSecrets, v.Secret.SecretName)
				}
			}
		}
	}
	if !strings.HasPrefix(secretName, "nr-bridge-auth-") || !slices.Contains(stsSecrets, secretName) {
		t.Errorf("generated Secret %q, StatefulSet mounts %v: want it mounted", secretName, stsSecrets)
	}
}

func mapKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

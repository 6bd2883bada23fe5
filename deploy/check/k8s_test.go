package check

// The Kubernetes layouts under deploy/k8s, each rendered with `kubectl
// kustomize` and decoded strictly into its API type (helpers_test.go); the
// checks themselves are in k8s_checks_test.go.
//
//	base              flowgate's Deployment, Service, PDB, config; alone, in front of a `flowise` Service
//	overlays/gateway  the base + HPA, ServiceMonitor, Redis, Flowise behind a headless Service
//	overlays/ingress  the gateway + TLS at an Ingress (cert-manager)
//	overlays/sidecar  flowgate as a native sidecar in Flowise's pod

import (
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The checker must fail on the mistakes it exists to catch.
func TestStrictDecoderRejectsBadManifests(t *testing.T) {
	bad := map[string]string{
		"unknown field": `
apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  selector: {app: x}
  ports: [{port: 80, targetPrt: 8080}]`,
		"field in the wrong case": `
apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  ports: [{port: 80, TargetPort: 8080}]`,
		"duplicate key": `
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
data: {a: "1", a: "2"}`,
		"wrong type": `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec: {replicas: "two"}`,
		"misspelt ServiceMonitor field": `
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: x}
spec:
  selector: {matchLabels: {app: x}}
  endpoints: [{port: metrics, pth: /metrics}]`,
		"misspelt HPA field": `
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: x}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}
  minReplica: 3
  maxReplicas: 10`,
	}
	for name, doc := range bad {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		obj := newObject(head.APIVersion, head.Kind)
		if obj == nil {
			t.Fatalf("%s: newObject does not know %s/%s", name, head.APIVersion, head.Kind)
		}
		if err := decodeStrict([]byte(doc), obj); err == nil {
			t.Errorf("%s: decodeStrict accepted it", name)
		}
	}
	if newObject("apps/v1", "DaemonSet") != nil || newObject("v1beta1", "Deployment") != nil || newObject("monitoring.coreos.com/v1", "PodMonitor") != nil {
		t.Error("newObject knows a kind or apiVersion the project does not ship")
	}
	good := map[string]string{
		"Service": `
apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  selector: {app: x}
  ports: [{name: http, port: 80, targetPort: http}]`,
		"ServiceMonitor": `
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: x, labels: {a: b}}
spec:
  selector: {matchLabels: {app: x}}
  endpoints: [{port: metrics, path: /metrics, interval: 15s, scrapeTimeout: 10s}]`,
	}
	for name, doc := range good {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		if err := decodeStrict([]byte(doc), newObject(head.APIVersion, head.Kind)); err != nil {
			t.Errorf("decodeStrict rejected a valid %s: %v", name, err)
		}
	}
}

func preStopSleep(c *corev1.Container) time.Duration {
	if c == nil || c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0
	}
	return time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
}

func grace(pod *corev1.PodSpec) time.Duration {
	if pod.TerminationGracePeriodSeconds == nil {
		return 30 * time.Second // the Kubernetes default
	}
	return time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
}

// checkGrace asserts the kubelet waits longer than flowgate drains, so a
// rollout never SIGKILLs a stream flowgate is still finishing.
func checkGrace(t *testing.T, where string, pod *corev1.PodSpec, shutdown, before time.Duration) {
	t.Helper()
	g := grace(pod)
	if g <= 30*time.Second {
		t.Errorf("%s: terminationGracePeriodSeconds is %v, must exceed 30s (flowgate's default shutdown_timeout)", where, g)
	}
	if need := before + shutdown; g <= need {
		t.Errorf("%s: terminationGracePeriodSeconds %v does not exceed preStop (%v) + server.shutdown_timeout (%v)", where, g, before, shutdown)
	}
}

// Every kustomization under deploy/k8s has a test here.
func TestK8sEveryKustomizationIsChecked(t *testing.T) {
	found := map[string]bool{}
	for _, d := range kustomizationDirs(t) {
		found[d] = true
		if _, ok := k8sLayouts[d]; !ok {
			t.Errorf("deploy/k8s/%s is a kustomization no test checks: add it to k8sLayouts with a test of its own", d)
		}
	}
	for d := range k8sLayouts {
		if !found[d] {
			t.Errorf("k8sLayouts lists deploy/k8s/%s, which holds no kustomization", d)
		}
	}
}

// The base alone: flowgate in front of an existing `flowise` Service.
func TestK8sBase(t *testing.T) {
	const where = "base"
	r := kustomize(t, "base")
	checkPodWiring(t, r)
	checkPods(t, where, r, nil)
	checkPDBs(t, where, r)
	checkNamespaces(t, where, r, "")
	// docs/deploy.md has you create it with kubectl.
	checkSecretRefs(t, where, r, map[string]bool{"flowgate-admin": true})

	d, _, _, cfg := gatewayDeployment(t, where, r)
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("%s: Deployment flowgate should run at least 2 replicas", where)
	}
	atFlowise := false
	for _, u := range cfg.Upstreams {
		if h := u.DNS; h != "" {
			atFlowise = atFlowise || strings.HasPrefix(h, "flowise")
		} else if strings.HasPrefix(u.URL, "http://flowise:") || strings.HasPrefix(u.URL, "http://flowise.") {
			atFlowise = true
		}
	}
	if !atFlowise {
		t.Errorf("%s: no upstream points at the flowise Service: %+v", where, cfg.Upstreams)
	}
}

// checkGatewayOverlay checks what the gateway overlay renders, and what the
// ingress overlay keeps of it. It returns flowgate's config.
func checkGatewayOverlay(t *testing.T, where string, r *rendered) gateConfig {
	t.Helper()
	checkPodWiring(t, r)
	checkPods(t, where, r, nil)
	checkPDBs(t, where, r)
	checkNamespaces(t, where, r, "flowise")
	checkSecretRefs(t, where, r, nil) // every Secret comes from the secretGenerator

	// The namespace enforces the restricted Pod Security Standard: every
	// pod must pass it, or the API server refuses it.
	if ns, ok := r.NSes["flowise"]; ok {
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("%s: namespace flowise does not enforce the restricted Pod Security Standard", where)
		}
	}
	for _, name := range sortedKeys(r.Deployments) {
		checkRestricted(t, where+": Deployment "+name, &r.Deployments[name].Spec.Template.Spec)
	}

	_, pod, gate, cfg := gatewayDeployment(t, where, r)
	checkHPA(t, where, r)
	checkServiceMonitor(t, where, r)

	if p := cfg.Health.Active.Path; p != "" && p != flowisePing {
		t.Errorf("%s: health.active.path %s: Flowise answers only %s without credentials", where, p, flowisePing)
	}
	if len(cfg.Upstreams) == 0 {
		t.Fatalf("%s: flowgate has no upstream", where)
	}
	for _, u := range cfg.Upstreams {
		d := checkHeadlessUpstream(t, where, r, u)
		if d == nil {
			continue
		}
		refresh, err := u.refresh()
		if err != nil {
			t.Errorf("%s: upstream refresh %q: %v", where, u.Refresh, err)
		}
		checkFlowise(t, where, r, d, refresh)
		checkOnlyFlowgateReaches(t, where, r, d, int32(u.Port))
	}

	checkRedis(t, where, r, cfg, pod, gate)
	if svc, ok := r.Services["redis"]; ok {
		if d := servedBy(r, svc); d != nil {
			checkOnlyFlowgateReaches(t, where, r, d, 6379)
		}
	}
	return cfg
}

func TestK8sGateway(t *testing.T) {
	r := kustomize(t, "overlays/gateway")
	checkGatewayOverlay(t, "gateway", r)
	if len(r.Ingresses) > 0 {
		t.Errorf("gateway: renders an Ingress; that is the ingress overlay's")
	}
}

func TestK8sIngress(t *testing.T) {
	const where = "ingress"
	r := kustomize(t, "overlays/ingress")
	cfg := checkGatewayOverlay(t, where, r)
	checkIngress(t, where, r, cfg)

	// Its flowgate.yaml is the gateway's plus proxy.trusted_proxies.
	read := func(file string) map[string]any {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(data, &m); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return m
	}
	gw := read(filepath.Join(k8sDir, "overlays", "gateway", "flowgate.yaml"))
	ing := read(filepath.Join(k8sDir, "overlays", "ingress", "flowgate.yaml"))
	if p, ok := ing["proxy"].(map[string]any); ok {
		delete(p, "trusted_proxies")
		if len(p) == 0 {
			delete(ing, "proxy")
		}
	}
	if !reflect.DeepEqual(gw, ing) {
		a, _ := yaml.Marshal(gw)
		b, _ := yaml.Marshal(ing)
		t.Errorf("%s: flowgate.yaml differs from the gateway overlay's by more than proxy.trusted_proxies:\ngateway:\n%s\ningress (without trusted_proxies):\n%s", where, a, b)
	}
}

func TestK8sSidecar(t *testing.T) {
	const where = "sidecar"
	r := kustomize(t, "overlays/sidecar")
	checkPodWiring(t, r)
	checkPods(t, where, r, map[string]string{
		"flowise/flowise": "the upstream image runs as root and keeps its SQLite data in /root/.flowise",
	})
	checkPDBs(t, where, r)
	checkNamespaces(t, where, r, "")
	checkSecretRefs(t, where, r, map[string]bool{"flowgate-admin": true})

	d, ok := r.Deployments["flowise"]
	if !ok {
		t.Fatalf("no Deployment flowise; rendered %v", r.Kinds)
	}
	pod := &d.Spec.Template.Spec

	// flowgate is a native sidecar: an init container that keeps running, so
	// it starts before Flowise and stops after it.
	gate, isInit := findContainer(pod, "flowgate")
	if gate == nil {
		t.Fatalf("%s: no flowgate container", where)
	}
	if !isInit || gate.RestartPolicy == nil || *gate.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("%s: flowgate must be an initContainer with restartPolicy: Always (a native sidecar)", where)
	}
	flowise, fIsInit := findContainer(pod, "flowise")
	if flowise == nil || fIsInit {
		t.Fatalf("%s: no flowise main container", where)
	}
	cfg := gateContainer(t, where, r, pod, gate)
	checkScrapeAnnotations(t, where, &d.Spec.Template)
	checkGrace(t, where, pod, shutdownTimeout(t, where, cfg), preStopSleep(flowise)+preStopSleep(gate))

	// The upstream is Flowise over loopback, on the port Flowise declares.
	for _, u := range cfg.Upstreams {
		checkLoopbackUpstream(t, where, u, flowise)
	}

	// Every Service port in front of this pod lands on flowgate, never on
	// Flowise, so no request can bypass the gateway.
	services := 0
	for name, svc := range r.Services {
		if servedBy(r, svc) != d {
			continue
		}
		services++
		reachesProxy := false
		for _, sp := range svc.Spec.Ports {
			tc, port := targetContainer(pod, sp)
			switch {
			case tc == nil:
				t.Errorf("%s: Service %s port %s targets %s, which no container declares", where, name, sp.Name, sp.TargetPort.String())
			case tc.Name != gate.Name:
				t.Errorf("%s: Service %s port %s targets container %s port %d: traffic would bypass flowgate", where, name, sp.Name, tc.Name, port)
			case port == proxyPort:
				reachesProxy = true
			}
		}
		if !reachesProxy {
			t.Errorf("%s: Service %s has no port on flowgate's %d", where, name, proxyPort)
		}
	}
	if services == 0 {
		t.Errorf("%s: no Service selects the Flowise pod", where)
	}

	// A NetworkPolicy on the pod, if any, must not open Flowise's own port.
	for name, np := range r.NetPols {
		sel, err := metaSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			if len(rule.Ports) == 0 {
				t.Errorf("%s: NetworkPolicy %s admits every port, Flowise's included", where, name)
			}
			for _, p := range rule.Ports {
				if policyPortOpens(p, flowise) {
					t.Errorf("%s: NetworkPolicy %s admits Flowise's port directly", where, name)
				}
			}
		}
	}
}

func policyPortOpens(p networkingv1.NetworkPolicyPort, c *corev1.Container) bool {
	if p.Port == nil {
		return true
	}
	if p.Port.Type == intstr.String {
		for _, cp := range c.Ports {
			if cp.Name == p.Port.StrVal {
				return true
			}
		}
		return false
	}
	lo, hi := p.Port.IntVal, p.Port.IntVal
	if p.EndPort != nil {
		hi = *p.EndPort
	}
	for _, cp := range c.Ports {
		if cp.ContainerPort >= lo && cp.ContainerPort <= hi {
			return true
		}
	}
	return false
}

// The secretGenerators read git-ignored files; only their templates are
// committed, with every secret left empty (an empty value stops the pod
// that needs it, where a placeholder would run with a known secret).
func TestK8sSecretTemplates(t *testing.T) {
	ignoreData, err := os.ReadFile(filepath.Join(k8sDir, ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(ignoreData), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimPrefix(l, "/"))
		}
	}
	ignored := func(rel string) bool {
		for _, p := range patterns {
			if ok, _ := path.Match(p, rel); ok {
				return true
			}
		}
		return false
	}

	// Not secrets: defaults a template may carry.
	nonSecret := map[string]bool{"DATABASE_PORT": true, "DATABASE_NAME": true, "DATABASE_USER": true}
	generated := 0
	for _, dir := range kustomizationDirs(t) {
		data, err := os.ReadFile(filepath.Join(k8sDir, filepath.FromSlash(dir), "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var k struct {
			SecretGenerator []struct {
				Name     string   `json:"name"`
				Envs     []string `json:"envs"`
				Files    []string `json:"files"`
				Literals []string `json:"literals"`
			} `json:"secretGenerator"`
		}
		if err := yaml.Unmarshal(data, &k); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		for _, g := range k.SecretGenerator {
			generated++
			if len(g.Literals) > 0 {
				t.Errorf("%s: secretGenerator %s has literals: secrets would be committed", dir, g.Name)
			}
			for _, f := range append(append([]string{}, g.Envs...), g.Files...) {
				rel := path.Join(dir, f)
				if !ignored(rel) {
					t.Errorf("deploy/k8s/%s (secretGenerator %s) is not git-ignored by deploy/k8s/.gitignore", rel, g.Name)
				}
				example := filepath.Join(k8sDir, filepath.FromSlash(rel)) + ".example"
				if _, err := os.Stat(example); err != nil {
					t.Errorf("deploy/k8s/%s has no template %s.example", rel, path.Base(rel))
					continue
				}
				if ignored(rel + ".example") {
					t.Errorf("deploy/k8s/%s.example is git-ignored: the template would not be committed", rel)
				}
				kv := envFile(t, example)
				if len(kv) == 0 {
					t.Errorf("%s lists no key", example)
				}
				for key, v := range kv {
					if v != "" && !nonSecret[key] {
						t.Errorf("%s gives %s a value: leave secrets empty in a template", example, key)
					}
				}
			}
		}
	}
	if generated < 3 {
		t.Errorf("%d secretGenerators, want the gateway's three (admin token, Redis password, Flowise)", generated)
	}
}

// docs/deploy.md names every layout, and every deploy/k8s path it names exists.
func TestK8sDocs(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for d := range k8sLayouts {
		if !strings.Contains(doc, "deploy/k8s/"+d) {
			t.Errorf("docs/deploy.md does not mention deploy/k8s/%s", d)
		}
	}
	for _, m := range regexp.MustCompile(`deploy/k8s/[A-Za-z0-9_./*-]*[A-Za-z0-9_*]`).FindAllString(doc, -1) {
		p := filepath.Join(repoRoot, filepath.FromSlash(m))
		if matches, _ := filepath.Glob(p); len(matches) > 0 {
			continue
		}
		if _, err := os.Stat(p + ".example"); err == nil && strings.HasSuffix(m, ".env") {
			continue // a git-ignored secrets file, made from its template
		}
		t.Errorf("docs/deploy.md names %s, which does not exist", m)
	}
	examples, _ := filepath.Glob(filepath.Join(k8sDir, "overlays", "*", "secrets", "*.env.example"))
	for _, e := range examples {
		if name := strings.TrimSuffix(filepath.Base(e), ".example"); !strings.Contains(doc, name) {
			t.Errorf("docs/deploy.md does not say how to write %s", name)
		}
	}
}

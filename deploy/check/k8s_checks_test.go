package check

// The checks the Kubernetes tests (k8s_test.go) run on rendered manifests.
// Each takes a reporter, not *testing.T, so TestK8sChecksCatchMistakes can
// prove it fails on the mistake it exists to catch.

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// ---- the layouts ------------------------------------------------------------

// k8sLayouts is every kustomization under deploy/k8s and the test that
// checks it. TestK8sEveryKustomizationIsChecked fails on a kustomization
// missing here, so a new overlay cannot ship unchecked.
var k8sLayouts = map[string]string{
	"base":             "TestK8sBase",
	"overlays/gateway": "TestK8sGateway",
	"overlays/ingress": "TestK8sIngress",
	"overlays/sidecar": "TestK8sSidecar",
}

// kustomizationDirs lists the folders under deploy/k8s that hold a
// kustomization, relative and slash-separated.
func kustomizationDirs(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(k8sDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch d.Name() {
		case "kustomization.yaml", "kustomization.yml", "Kustomization":
			rel, err := filepath.Rel(k8sDir, filepath.Dir(p))
			if err != nil {
				return err
			}
			dirs = append(dirs, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(dirs)
	return dirs
}

// k8sFlowgateConfigs returns the flowgate.yaml of every kustomization.
func k8sFlowgateConfigs(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, d := range kustomizationDirs(t) {
		f := filepath.Join(k8sDir, filepath.FromSlash(d), "flowgate.yaml")
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	return files
}

// isSecretEnv reports whether a file under deploy/k8s is a real secrets
// file of a secretGenerator (git-ignored, never read by the tests).
func isSecretEnv(rel string) bool {
	return path.Base(path.Dir(rel)) == "secrets" && strings.HasSuffix(rel, ".env")
}

// renderK8s renders the kustomization at rel (under deploy/k8s) with
// `kubectl kustomize`, offline. It renders a copy of deploy/k8s in which
// every secrets/*.env is its committed *.env.example: the real,
// git-ignored secrets are never read, and a fresh checkout renders.
func renderK8s(t *testing.T, rel string) []byte {
	t.Helper()
	kubectl := needTool(t, "kubectl", "kubectl 1.27+ (Debian package kubectl, preinstalled on the go machine image); `kubectl kustomize` renders offline")
	tmp := filepath.Join(t.TempDir(), "k8s")
	err := filepath.WalkDir(k8sDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, err := filepath.Rel(k8sDir, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(tmp, r)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if isSecretEnv(filepath.ToSlash(r)) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
		if real, ok := strings.CutSuffix(dst, ".env.example"); ok {
			return os.WriteFile(real+".env", data, 0o600)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return run(t, ".", kubectl, "kustomize", filepath.Join(tmp, filepath.FromSlash(rel)))
}

// ---- the ServiceMonitor CRD ---------------------------------------------------

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// (monitoring.coreos.com/v1) these manifests use, with the CRD's field
// names. Decoded strictly like the k8s.io/api types: a misspelt field fails,
// and so does a real one not listed here (add it, from
// prometheus-operator's pkg/apis/monitoring/v1/servicemonitor_types.go).
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              serviceMonitorSpec `json:"spec"`
}

type serviceMonitorSpec struct {
	JobLabel          string               `json:"jobLabel,omitempty"`
	Selector          metav1.LabelSelector `json:"selector"`
	NamespaceSelector *struct {
		Any        bool     `json:"any,omitempty"`
		MatchNames []string `json:"matchNames,omitempty"`
	} `json:"namespaceSelector,omitempty"`
	Endpoints []serviceMonitorEndpoint `json:"endpoints"`
}

type serviceMonitorEndpoint struct {
	Port          string              `json:"port,omitempty"`
	TargetPort    *intstr.IntOrString `json:"targetPort,omitempty"`
	Path          string              `json:"path,omitempty"`
	Scheme        string              `json:"scheme,omitempty"`
	Interval      string              `json:"interval,omitempty"`
	ScrapeTimeout string              `json:"scrapeTimeout,omitempty"`
	HonorLabels   bool                `json:"honorLabels,omitempty"`
}

// ---- helpers ------------------------------------------------------------------

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func allContainers(pod *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range pod.InitContainers {
		cs = append(cs, &pod.InitContainers[i])
	}
	for i := range pod.Containers {
		cs = append(cs, &pod.Containers[i])
	}
	return cs
}

// runsFlowgate reports whether a pod has a flowgate container.
func runsFlowgate(d *appsv1.Deployment) bool {
	c, _ := findContainer(&d.Spec.Template.Spec, "flowgate")
	return c != nil
}

// secretForFile returns the Secret and key a file inside a container comes
// from, if a Secret volume mounted there holds it.
func secretForFile(pod *corev1.PodSpec, c *corev1.Container, file string) (name, key string, ok bool) {
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, file)
		if err != nil || strings.HasPrefix(rel, "..") || rel == "." {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			if len(v.Secret.Items) == 0 {
				return v.Secret.SecretName, rel, true
			}
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					return v.Secret.SecretName, it.Key, true
				}
			}
		}
	}
	return "", "", false
}

// envFromSecret reports which Secret and key a container's variable comes
// from; literal reports a variable set with a plain value instead.
func envFromSecret(r *rendered, c *corev1.Container, name string) (secret, key string, literal bool) {
	for _, e := range c.Env {
		if e.Name != name {
			continue
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			return e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key, false
		}
		return "", "", true
	}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef == nil {
			continue
		}
		if s, ok := r.Secrets[ef.SecretRef.Name]; ok {
			if _, ok := s.Data[ef.Prefix+name]; ok {
				return s.Name, name, false
			}
			if _, ok := s.StringData[ef.Prefix+name]; ok {
				return s.Name, name, false
			}
		}
	}
	return "", "", false
}

// servicePortTo resolves a Service port (by name or number) to the
// container and container port it reaches.
func servicePortTo(r *rendered, svc *corev1.Service, port intstr.IntOrString) (*appsv1.Deployment, *corev1.Container, int32) {
	d := servedBy(r, svc)
	if d == nil {
		return nil, nil, 0
	}
	for _, sp := range svc.Spec.Ports {
		if (port.Type == intstr.String && sp.Name == port.StrVal) || (port.Type == intstr.Int && sp.Port == port.IntVal) {
			c, cp := targetContainer(&d.Spec.Template.Spec, sp)
			return d, c, cp
		}
	}
	return d, nil, 0
}

func durationOr(t reporter, where, key, v string, def time.Duration) time.Duration {
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Errorf("%s: %s %q: %v", where, key, v, err)
		return def
	}
	return d
}

// byteSize reads flowgate's sizes (docs/config.md): bytes, or a number with
// B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024).
func byteSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"b", 1}}
	lower := strings.ToLower(s)
	for _, u := range units {
		if n, ok := strings.CutSuffix(lower, u.suffix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
			return int64(f * float64(u.mult)), err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// nginxSize reads an nginx size (proxy-body-size): bytes, or k/m/g (1024s).
func nginxSize(s string) (int64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, strings.TrimSuffix(s, "k")
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, strings.TrimSuffix(s, "m")
	case strings.HasSuffix(s, "g"):
		mult, s = 1<<30, strings.TrimSuffix(s, "g")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

// ---- checks every pod of every layout passes ----------------------------------

// checkImageRef asserts an image names a release: a tag or digest, never
// `latest` (or no tag, which means latest), so a restart cannot change
// what runs.
func checkImageRef(t reporter, where string, c *corev1.Container) {
	t.Helper()
	img := c.Image
	name, digest, _ := strings.Cut(img, "@")
	tag := ""
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name, tag = name[:i], name[i+1:]
	}
	switch {
	case name == "":
		t.Errorf("%s: container %s has no image", where, c.Name)
	case tag == "latest":
		t.Errorf("%s: container %s runs %s: pin a release, not latest", where, c.Name, img)
	case tag == "" && digest == "":
		t.Errorf("%s: container %s runs %s without a tag, which is latest: pin a release", where, c.Name, img)
	}
}

// checkPods runs the checks every container of every layout passes:
// requests and limits, a pinned image, no service account token, and
// non-root with a read-only root filesystem unless exempt names the
// container ("Deployment/container") with the reason.
func checkPods(t reporter, where string, r *rendered, exempt map[string]string) {
	t.Helper()
	for _, name := range sortedKeys(r.Deployments) {
		d := r.Deployments[name]
		pod := &d.Spec.Template.Spec
		w := where + ": Deployment " + name
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: nothing here calls the Kubernetes API: set automountServiceAccountToken: false", w)
		}
		for _, c := range allContainers(pod) {
			checkResources(t, w, c)
			checkImageRef(t, w, c)
			if _, ok := exempt[name+"/"+c.Name]; ok {
				continue
			}
			checkNonRoot(t, w, pod, c)
		}
	}
}

// checkRestricted asserts a pod passes the "restricted" Pod Security
// Standard, which the namespace enforces: otherwise the API server refuses
// its pods. (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
func checkRestricted(t reporter, where string, pod *corev1.PodSpec) {
	t.Helper()
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("%s: uses host namespaces", where)
	}
	for _, v := range pod.Volumes {
		vs := v.VolumeSource
		if vs.ConfigMap == nil && vs.Secret == nil && vs.EmptyDir == nil && vs.PersistentVolumeClaim == nil &&
			vs.Projected == nil && vs.DownwardAPI == nil && vs.CSI == nil && vs.Ephemeral == nil {
			t.Errorf("%s: volume %s is of a type the restricted profile refuses", where, v.Name)
		}
	}
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if len(psc.Sysctls) > 0 {
		t.Errorf("%s: sets sysctls", where)
	}
	for _, c := range allContainers(pod) {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: container %s is privileged", where, c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: container %s does not set allowPrivilegeEscalation: false", where, c.Name)
		}
		nonRoot := psc.RunAsNonRoot
		if sc.RunAsNonRoot != nil {
			nonRoot = sc.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			t.Errorf("%s: container %s does not set runAsNonRoot: true", where, c.Name)
		}
		for _, uid := range []*int64{psc.RunAsUser, sc.RunAsUser} {
			if uid != nil && *uid == 0 {
				t.Errorf("%s: container %s runs as uid 0", where, c.Name)
			}
		}
		seccomp := psc.SeccompProfile
		if sc.SeccompProfile != nil {
			seccomp = sc.SeccompProfile
		}
		if seccomp == nil || (seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault && seccomp.Type != corev1.SeccompProfileTypeLocalhost) {
			t.Errorf("%s: container %s has no RuntimeDefault or Localhost seccomp profile", where, c.Name)
		}
		drops := false
		if sc.Capabilities != nil {
			for _, cp := range sc.Capabilities.Drop {
				drops = drops || cp == "ALL"
			}
			for _, cp := range sc.Capabilities.Add {
				if cp != "NET_BIND_SERVICE" {
					t.Errorf("%s: container %s adds capability %s", where, c.Name, cp)
				}
			}
		}
		if !drops {
			t.Errorf("%s: container %s does not drop ALL capabilities", where, c.Name)
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				t.Errorf("%s: container %s uses hostPort %d", where, c.Name, p.HostPort)
			}
		}
	}
}

// checkNamespaces asserts every namespaced object lands in want ("" for
// the namespace kubectl is pointed at), and that a wanted namespace is
// rendered too, so `kubectl apply -k` creates it.
func checkNamespaces(t reporter, where string, r *rendered, want string) {
	t.Helper()
	for _, k := range r.Kinds {
		if strings.HasPrefix(k, "Namespace/") {
			continue
		}
		if got := r.ObjNamespace[k]; got != want {
			t.Errorf("%s: %s is in namespace %q, want %q", where, k, got, want)
		}
	}
	if want != "" {
		if _, ok := r.NSes[want]; !ok {
			t.Errorf("%s: namespace %s is not rendered: kubectl apply -k would fail on a fresh cluster", where, want)
		}
	}
}

// checkSecretRefs asserts every Secret a pod reads is rendered with the
// keys it reads, or is one of external (created by hand, documented).
func checkSecretRefs(t reporter, where string, r *rendered, external map[string]bool) {
	t.Helper()
	need := func(w, name, key string, optional bool) {
		s, ok := r.Secrets[name]
		if !ok {
			if !external[name] && !optional {
				t.Errorf("%s: Secret %s is neither rendered nor one the docs have you create", w, name)
			}
			return
		}
		if key == "" {
			return
		}
		_, inData := s.Data[key]
		_, inString := s.StringData[key]
		if !inData && !inString && !optional {
			t.Errorf("%s: Secret %s has no key %s", w, name, key)
		}
	}
	for _, dn := range sortedKeys(r.Deployments) {
		pod := &r.Deployments[dn].Spec.Template.Spec
		w := where + ": Deployment " + dn
		for _, v := range pod.Volumes {
			if v.Secret == nil {
				continue
			}
			opt := v.Secret.Optional != nil && *v.Secret.Optional
			if len(v.Secret.Items) == 0 {
				need(w, v.Secret.SecretName, "", opt)
			}
			for _, it := range v.Secret.Items {
				need(w, v.Secret.SecretName, it.Key, opt)
			}
		}
		for _, c := range allContainers(pod) {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					ref := e.ValueFrom.SecretKeyRef
					need(w, ref.Name, ref.Key, ref.Optional != nil && *ref.Optional)
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil {
					need(w, ef.SecretRef.Name, "", ef.SecretRef.Optional != nil && *ef.SecretRef.Optional)
				}
			}
		}
	}
}

// checkPDBs asserts no PodDisruptionBudget forbids every eviction.
func checkPDBs(t reporter, where string, r *rendered) {
	t.Helper()
	for name, p := range r.PDBs {
		if mu := p.Spec.MaxUnavailable; mu != nil && (mu.String() == "0" || mu.String() == "0%") {
			t.Errorf("%s: PodDisruptionBudget %s: maxUnavailable 0 blocks every node drain", where, name)
		}
		if p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil {
			t.Errorf("%s: PodDisruptionBudget %s sets neither minAvailable nor maxUnavailable", where, name)
		}
	}
}

// ---- flowgate's own Deployment (base, gateway, ingress) -----------------------

// gatewayDeployment checks the flowgate Deployment shared by the base and
// the overlays built on it, and returns it with its pod, container and
// config. The names are those .github/workflows/deploy.yml rolls out and
// smoke-tests: Deployment flowgate, container flowgate, Service flowgate
// with the metrics port.
func gatewayDeployment(t *testing.T, where string, r *rendered) (*appsv1.Deployment, *corev1.PodSpec, *corev1.Container, gateConfig) {
	t.Helper()
	d, ok := r.Deployments["flowgate"]
	if !ok {
		t.Fatalf("%s: no Deployment flowgate; rendered %v", where, r.Kinds)
	}
	pod := &d.Spec.Template.Spec
	c, isInit := findContainer(pod, "flowgate")
	if c == nil || isInit {
		t.Fatalf("%s: no flowgate container in the Deployment's containers", where)
	}
	cfg := gateContainer(t, where, r, pod, c)
	checkScrapeAnnotations(t, where, &d.Spec.Template)
	checkGrace(t, where, pod, shutdownTimeout(t, where, cfg), preStopSleep(c))
	if preStopSleep(c) == 0 {
		t.Errorf("%s: flowgate has no preStop sleep: SIGTERM would close the listener before endpoint removal reaches every proxy", where)
	}

	svc, ok := r.Services["flowgate"]
	if !ok {
		t.Fatalf("%s: no Service flowgate", where)
	}
	if servedBy(r, svc) != d {
		t.Errorf("%s: Service flowgate does not select the flowgate pods", where)
	}
	ports := map[int32]bool{}
	for _, sp := range svc.Spec.Ports {
		tc, port := targetContainer(pod, sp)
		if tc == nil {
			t.Errorf("%s: Service port %s targets %s, which no container declares", where, sp.Name, sp.TargetPort.String())
			continue
		}
		ports[port] = true
		if port == metricsPort && sp.Port != metricsPort {
			t.Errorf("%s: Service flowgate serves metrics on %d; deploy.yml's smoke check port-forwards %d", where, sp.Port, metricsPort)
		}
	}
	for _, p := range []int32{proxyPort, metricsPort} {
		if !ports[p] {
			t.Errorf("%s: no port of Service flowgate targets flowgate's %d", where, p)
		}
	}

	pdb := false
	for _, p := range r.PDBs {
		if sel, err := metaSelector(p.Spec.Selector); err == nil && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			pdb = true
		}
	}
	if !pdb {
		t.Errorf("%s: no PodDisruptionBudget covers the flowgate pods", where)
	}
	return d, pod, c, cfg
}

// ---- the gateway overlay ------------------------------------------------------

// The seed's autoscaling/v2 policy (issue 11).
var seedHPABehavior = autoscalingv2.HorizontalPodAutoscalerBehavior{
	ScaleDown: &autoscalingv2.HPAScalingRules{
		StabilizationWindowSeconds: ptr[int32](300),
		Policies: []autoscalingv2.HPAScalingPolicy{
			{Type: autoscalingv2.PercentScalingPolicy, Value: 50, PeriodSeconds: 60},
		},
	},
	ScaleUp: &autoscalingv2.HPAScalingRules{
		StabilizationWindowSeconds: ptr[int32](60),
		Policies: []autoscalingv2.HPAScalingPolicy{
			{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 60},
			{Type: autoscalingv2.PodsScalingPolicy, Value: 2, PeriodSeconds: 60},
		},
	},
}

func ptr[T any](v T) *T { return &v }

// checkHPA asserts one HPA scales the flowgate Deployment with the seed's
// policy: 3 to 10 replicas, CPU at 70 % and memory at 80 % of the requests,
// and its scale-up and scale-down behaviour.
func checkHPA(t reporter, where string, r *rendered) {
	t.Helper()
	if len(r.HPAs) != 1 {
		t.Errorf("%s: %d HorizontalPodAutoscalers, want one for flowgate", where, len(r.HPAs))
	}
	for name, h := range r.HPAs {
		w := where + ": HPA " + name
		ref := h.Spec.ScaleTargetRef
		if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" {
			t.Errorf("%s targets %s %s, want apps/v1 Deployment", w, ref.APIVersion, ref.Kind)
		}
		d, ok := r.Deployments[ref.Name]
		if !ok {
			t.Errorf("%s targets Deployment %s, which is not rendered", w, ref.Name)
		} else {
			if !runsFlowgate(d) {
				t.Errorf("%s targets Deployment %s, which runs no flowgate container", w, ref.Name)
			}
			if d.Spec.Replicas != nil {
				t.Errorf("%s: Deployment %s sets replicas: %d; every kubectl apply would put that back over the HPA's count, so leave it to the HPA", w, ref.Name, *d.Spec.Replicas)
			}
			// Utilization is relative to requests; without them the HPA does nothing.
			for _, c := range allContainers(&d.Spec.Template.Spec) {
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
					t.Errorf("%s: container %s lacks the cpu and memory requests the HPA's utilization is relative to", w, c.Name)
				}
			}
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != 3 {
			min := "unset"
			if h.Spec.MinReplicas != nil {
				min = strconv.Itoa(int(*h.Spec.MinReplicas))
			}
			t.Errorf("%s: minReplicas %s, want 3", w, min)
		}
		if h.Spec.MaxReplicas != 10 {
			t.Errorf("%s: maxReplicas %d, want 10", w, h.Spec.MaxReplicas)
		}
		want := map[corev1.ResourceName]int32{corev1.ResourceCPU: 70, corev1.ResourceMemory: 80}
		got := map[corev1.ResourceName]int32{}
		for _, m := range h.Spec.Metrics {
			if m.Type != autoscalingv2.ResourceMetricSourceType || m.Resource == nil ||
				m.Resource.Target.Type != autoscalingv2.UtilizationMetricType || m.Resource.Target.AverageUtilization == nil {
				t.Errorf("%s: metric %+v is not a Resource utilization target", w, m)
				continue
			}
			got[m.Resource.Name] = *m.Resource.Target.AverageUtilization
		}
		if !reflect.DeepEqual(got, want) || len(h.Spec.Metrics) != len(want) {
			t.Errorf("%s: utilization targets %v, want %v", w, got, want)
		}
		if h.Spec.Behavior == nil || !reflect.DeepEqual(*h.Spec.Behavior, seedHPABehavior) {
			gotY, _ := yaml.Marshal(h.Spec.Behavior)
			wantY, _ := yaml.Marshal(seedHPABehavior)
			t.Errorf("%s: behavior is\n%s\nwant the seed's\n%s", w, gotY, wantY)
		}
	}
}

// checkServiceMonitor asserts a ServiceMonitor selects the flowgate Service
// (and no other) and scrapes /metrics on its metrics port.
func checkServiceMonitor(t reporter, where string, r *rendered) {
	t.Helper()
	if len(r.SvcMonitors) == 0 {
		t.Errorf("%s: no ServiceMonitor", where)
	}
	for name, sm := range r.SvcMonitors {
		w := where + ": ServiceMonitor " + name
		if ns := sm.Spec.NamespaceSelector; ns != nil && (ns.Any || len(ns.MatchNames) > 0) {
			own := sm.Namespace
			if ns.Any || len(ns.MatchNames) != 1 || ns.MatchNames[0] != own {
				t.Errorf("%s: namespaceSelector %+v reaches beyond its own namespace %q", w, *ns, own)
			}
		}
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil || sel.Empty() {
			t.Errorf("%s: selector %v selects nothing or everything (%v)", w, sm.Spec.Selector, err)
			continue
		}
		var selected []*corev1.Service
		for _, sn := range sortedKeys(r.Services) {
			s := r.Services[sn]
			if !sel.Matches(labels.Set(s.Labels)) {
				continue
			}
			if d := servedBy(r, s); d == nil || !runsFlowgate(d) {
				t.Errorf("%s selects Service %s, which is not flowgate's", w, sn)
				continue
			}
			selected = append(selected, s)
		}
		if len(selected) == 0 {
			t.Errorf("%s selects no flowgate Service (its labels must match the Service's metadata labels)", w)
		}
		if len(sm.Spec.Endpoints) == 0 {
			t.Errorf("%s has no endpoints", w)
		}
		for i, ep := range sm.Spec.Endpoints {
			if ep.Path != "/metrics" {
				t.Errorf("%s: endpoints[%d].path %q, want /metrics", w, i, ep.Path)
			}
			if ep.Scheme != "" && ep.Scheme != "http" {
				t.Errorf("%s: endpoints[%d].scheme %q: the metrics listener is plain HTTP", w, i, ep.Scheme)
			}
			if ep.Port == "" {
				t.Errorf("%s: endpoints[%d] names no Service port", w, i)
				continue
			}
			for _, s := range selected {
				_, c, port := servicePortTo(r, s, intstr.FromString(ep.Port))
				if c == nil || c.Name != "flowgate" || port != metricsPort {
					t.Errorf("%s: endpoints[%d].port %q of Service %s does not reach flowgate's metrics port %d", w, i, ep.Port, s.Name, metricsPort)
				}
			}
		}
	}
}

// checkHeadlessUpstream asserts a gateway upstream is a dns upstream whose
// name is a rendered headless Service in front of Flowise's pods, in the
// namespace the name says, with the container port flowgate dials. It
// returns the Deployment behind it.
func checkHeadlessUpstream(t reporter, where string, r *rendered, u gateUpstream) *appsv1.Deployment {
	t.Helper()
	if u.DNS == "" {
		t.Errorf("%s: upstream %q is a url: the gateway discovers Flowise's pods through a headless Service (upstreams[].dns)", where, u.URL)
		return nil
	}
	parts := strings.Split(strings.TrimSuffix(u.DNS, "."), ".")
	svc, ok := r.Services[parts[0]]
	if !ok {
		t.Errorf("%s: upstream dns %s: no Service %s is rendered", where, u.DNS, parts[0])
		return nil
	}
	ns := r.ObjNamespace["Service/"+svc.Name]
	if len(parts) >= 2 && parts[1] != ns {
		t.Errorf("%s: upstream dns %s names namespace %s, but Service %s is rendered into %q", where, u.DNS, parts[1], svc.Name, ns)
	}
	if len(parts) >= 3 {
		if rest := strings.Join(parts[2:], "."); rest != "svc" && rest != "svc.cluster.local" {
			t.Errorf("%s: upstream dns %s is not <service>.<namespace>.svc[.cluster.local]", where, u.DNS)
		}
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("%s: Service %s is not headless (clusterIP: None): its name would resolve to one cluster IP, and flowgate would see one upstream instead of each pod", where, svc.Name)
	}
	if svc.Spec.PublishNotReadyAddresses {
		t.Errorf("%s: Service %s publishes pods that are not Ready: flowgate would send them traffic", where, svc.Name)
	}
	if len(svc.Spec.Selector) == 0 {
		t.Errorf("%s: Service %s has no selector: no pod records", where, svc.Name)
		return nil
	}
	d := servedBy(r, svc)
	if d == nil {
		t.Errorf("%s: Service %s selects no Deployment's pods", where, svc.Name)
		return nil
	}
	if runsFlowgate(d) {
		t.Errorf("%s: Service %s selects flowgate's own pods", where, svc.Name)
	}
	reaches := false
	for _, sp := range svc.Spec.Ports {
		if c, port := targetContainer(&d.Spec.Template.Spec, sp); c != nil && int(port) == u.Port {
			reaches = true
		}
	}
	if !reaches {
		t.Errorf("%s: no port of Service %s targets container port %d (upstreams[].port): its DNS answers with pod addresses, so flowgate dials the container's own port", where, svc.Name, u.Port)
	}
	return d
}

// checkLoopbackUpstream asserts the sidecar's upstream is Flowise in its
// own pod: a url on loopback, on a port the Flowise container declares.
func checkLoopbackUpstream(t reporter, where string, u gateUpstream, flowise *corev1.Container) {
	t.Helper()
	if u.DNS != "" {
		t.Errorf("%s: upstream dns %s: the sidecar proxies to its own pod over loopback", where, u.DNS)
		return
	}
	p, err := url.Parse(u.URL)
	if err != nil {
		t.Errorf("%s: upstream %q: %v", where, u.URL, err)
		return
	}
	ip := net.ParseIP(p.Hostname())
	if p.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
		t.Errorf("%s: upstream %s is not on loopback: the sidecar proxies to its own pod", where, u.URL)
	}
	port, err := strconv.Atoi(p.Port())
	if err != nil {
		t.Errorf("%s: upstream %s has no port", where, u.URL)
		return
	}
	if !declaresPort(flowise, int32(port)) {
		t.Errorf("%s: upstream %s: the flowise container does not declare that port", where, u.URL)
	}
}

// checkOnlyFlowgateReaches asserts a NetworkPolicy admits only flowgate's
// pods to target's pods, and only on port.
func checkOnlyFlowgateReaches(t reporter, where string, r *rendered, target *appsv1.Deployment, port int32) {
	t.Helper()
	var gateLabels labels.Set
	for _, d := range r.Deployments {
		if runsFlowgate(d) {
			gateLabels = d.Spec.Template.Labels
		}
	}
	covered := false
	for _, name := range sortedKeys(r.NetPols) {
		np := r.NetPols[name]
		sel, err := metaSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(target.Spec.Template.Labels)) {
			continue
		}
		ingressType := len(np.Spec.PolicyTypes) == 0
		for _, pt := range np.Spec.PolicyTypes {
			ingressType = ingressType || pt == networkingv1.PolicyTypeIngress
		}
		if !ingressType {
			continue
		}
		covered = true
		admitsGate := false
		for _, rule := range np.Spec.Ingress {
			if len(rule.From) == 0 {
				t.Errorf("%s: NetworkPolicy %s admits every source to %s", where, name, target.Name)
			}
			for _, peer := range rule.From {
				if peer.IPBlock != nil || peer.NamespaceSelector != nil || peer.PodSelector == nil {
					t.Errorf("%s: NetworkPolicy %s admits a source beyond flowgate's pods to %s", where, name, target.Name)
					continue
				}
				ps, err := metaSelector(peer.PodSelector)
				if err != nil || ps.Empty() || !ps.Matches(gateLabels) {
					t.Errorf("%s: NetworkPolicy %s admits pods other than flowgate's to %s", where, name, target.Name)
					continue
				}
				admitsGate = true
			}
			if len(rule.Ports) == 0 {
				t.Errorf("%s: NetworkPolicy %s admits every port of %s", where, name, target.Name)
			}
			for _, p := range rule.Ports {
				if p.Port == nil || p.Port.Type != intstr.Int || p.Port.IntVal != port || p.EndPort != nil {
					t.Errorf("%s: NetworkPolicy %s admits port %v of %s, want only %d", where, name, p.Port, target.Name, port)
				}
			}
		}
		if !admitsGate {
			t.Errorf("%s: NetworkPolicy %s does not admit flowgate to %s", where, name, target.Name)
		}
	}
	if !covered {
		t.Errorf("%s: no NetworkPolicy limits who reaches %s: clients could bypass flowgate", where, target.Name)
	}
}

// Flowise 3.1's unauthenticated liveness path. It has no /api/v1/health
// route and answers 401 there (its auth middleware covers /api/v1 beyond a
// whitelist), so a probe there never passes.
const flowisePing = "/api/v1/ping"

// checkFlowise asserts the gateway overlay's Flowise: probes on the path
// Flowise answers without credentials, the seed's resources, Postgres with
// its settings from a Secret, and a preStop sleep that outlasts flowgate's
// DNS refresh (so no request reaches a stopping pod).
func checkFlowise(t reporter, where string, r *rendered, d *appsv1.Deployment, refresh time.Duration) {
	t.Helper()
	pod := &d.Spec.Template.Spec
	c, _ := findContainer(pod, "flowise")
	if c == nil {
		t.Errorf("%s: Deployment %s has no flowise container", where, d.Name)
		return
	}
	w := where + ": Deployment " + d.Name
	for _, pr := range []struct {
		kind string
		p    *corev1.Probe
	}{{"liveness", c.LivenessProbe}, {"readiness", c.ReadinessProbe}} {
		if pr.p == nil || pr.p.HTTPGet == nil {
			t.Errorf("%s: flowise has no HTTP %s probe", w, pr.kind)
			continue
		}
		if pr.p.HTTPGet.Path != flowisePing {
			t.Errorf("%s: flowise's %s probe gets %s; Flowise 3.1 answers only %s without credentials (401 elsewhere, /api/v1/health included)", w, pr.kind, pr.p.HTTPGet.Path, flowisePing)
		}
		if port, ok := portNumber(c, pr.p.HTTPGet.Port); !ok || port != 3000 {
			t.Errorf("%s: flowise's %s probe uses port %s, want 3000", w, pr.kind, pr.p.HTTPGet.Port.String())
		}
	}
	seed := map[string]corev1.ResourceList{
		"requests": {corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("512Mi")},
		"limits":   {corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
	for kind, got := range map[string]corev1.ResourceList{"requests": c.Resources.Requests, "limits": c.Resources.Limits} {
		for name, q := range seed[kind] {
			if g, ok := got[name]; !ok || g.Cmp(q) != 0 {
				t.Errorf("%s: flowise %s.%s is %v, want the seed's %s", w, kind, name, got[name], q.String())
			}
		}
	}
	dbType := ""
	for _, e := range c.Env {
		if e.Name == "DATABASE_TYPE" {
			dbType = e.Value
		}
	}
	if dbType != "postgres" {
		t.Errorf("%s: DATABASE_TYPE is %q, want postgres: several replicas cannot share SQLite", w, dbType)
	}
	for _, v := range []string{"DATABASE_HOST", "DATABASE_PORT", "DATABASE_NAME", "DATABASE_USER", "DATABASE_PASSWORD",
		"FLOWISE_SECRETKEY_OVERWRITE", "JWT_AUTH_TOKEN_SECRET", "JWT_REFRESH_TOKEN_SECRET", "EXPRESS_SESSION_SECRET", "TOKEN_HASH_SECRET"} {
		s, _, literal := envFromSecret(r, c, v)
		if literal {
			t.Errorf("%s: %s is written in the manifest: it comes from the Secret", w, v)
		} else if s == "" {
			t.Errorf("%s: %s comes from no rendered Secret", w, v)
		}
	}
	stop := preStopSleep(c)
	// CoreDNS's kubernetes plugin answers with a 5s TTL by default.
	if need := refresh + 5*time.Second; stop <= need {
		t.Errorf("%s: flowise's preStop sleep %v does not outlast flowgate's DNS refresh + the DNS TTL (%v): flowgate would still send it requests after it stops", w, stop, need)
	}
	if g := grace(pod); g <= stop {
		t.Errorf("%s: terminationGracePeriodSeconds %v does not exceed the preStop sleep %v", w, g, stop)
	}
}

// checkRedis asserts flowgate's redis.addr is a rendered Service in front
// of a Redis with an append-only file on a volume and a password, the same
// Secret flowgate reads its redis.password_file from.
func checkRedis(t reporter, where string, r *rendered, cfg gateConfig, gatePod *corev1.PodSpec, gate *corev1.Container) {
	t.Helper()
	if cfg.Redis.Addr == "" {
		t.Errorf("%s: redis.addr is not set: the replicas would not share quotas, the ledger or the cache", where)
		return
	}
	host, port, err := net.SplitHostPort(cfg.Redis.Addr)
	if err != nil {
		t.Errorf("%s: redis.addr %q: %v", where, cfg.Redis.Addr, err)
		return
	}
	svc, ok := r.Services[strings.Split(host, ".")[0]]
	if !ok {
		t.Errorf("%s: redis.addr %s: no such Service is rendered", where, cfg.Redis.Addr)
		return
	}
	pn, _ := strconv.Atoi(port)
	d, rc, cp := servicePortTo(r, svc, intstr.FromInt(pn))
	if rc == nil {
		t.Errorf("%s: redis.addr %s: Service %s has no port %s reaching a container", where, cfg.Redis.Addr, svc.Name, port)
		return
	}
	w := where + ": Deployment " + d.Name
	if cp != 6379 {
		t.Errorf("%s: Service %s port %s reaches container port %d, not Redis's 6379", w, svc.Name, port, cp)
	}
	cmd := strings.Join(append(append([]string{}, rc.Command...), rc.Args...), " ")
	if !strings.Contains(cmd, "--appendonly yes") {
		t.Errorf("%s: Redis runs without --appendonly yes: a restart would lose the ledger and quota state", w)
	}
	if !strings.Contains(cmd, "--requirepass") {
		t.Errorf("%s: Redis runs without a password (--requirepass)", w)
	}
	onVolume := false
	for _, m := range rc.VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && m.MountPath == "/data" && v.PersistentVolumeClaim != nil {
				onVolume = true
			}
		}
	}
	if !onVolume {
		t.Errorf("%s: Redis's /data is not on a PersistentVolumeClaim", w)
	}
	if d.Spec.Replicas != nil && *d.Spec.Replicas > 1 {
		t.Errorf("%s: %d Redis replicas with no replication between them", w, *d.Spec.Replicas)
	}
	if cfg.Redis.PasswordFile == "" {
		t.Errorf("%s: redis.password_file is not set, but Redis requires a password", where)
		return
	}
	sname, skey, ok := secretForFile(gatePod, gate, cfg.Redis.PasswordFile)
	if !ok {
		t.Errorf("%s: redis.password_file %s is not mounted from a Secret", where, cfg.Redis.PasswordFile)
		return
	}
	rs, rk, literal := envFromSecret(r, rc, "REDIS_PASSWORD")
	if literal || rs != sname || rk != skey {
		t.Errorf("%s: Redis's REDIS_PASSWORD comes from %s/%s, flowgate's password from %s/%s: they must be one Secret key", w, rs, rk, sname, skey)
	}
}

// checkIngress asserts the Ingress terminates TLS with cert-manager as the
// seed's did and hands every request to flowgate's proxy port, with limits
// no tighter than flowgate's own, while flowgate serves plain HTTP behind it
// and believes the controller's X-Forwarded-* headers.
func checkIngress(t reporter, where string, r *rendered, cfg gateConfig) {
	t.Helper()
	if len(r.Ingresses) == 0 {
		t.Errorf("%s: no Ingress", where)
	}
	if m := cfg.TLS.Mode; m != "" && m != "off" {
		t.Errorf("%s: flowgate's tls.mode is %s: behind an Ingress that terminates TLS it serves plain HTTP", where, m)
	}
	if len(cfg.Proxy.TrustedProxies) == 0 {
		t.Errorf("%s: proxy.trusted_proxies is empty: flowgate would replace the ingress controller's X-Forwarded-For and see every client as the controller", where)
	}
	for _, p := range cfg.Proxy.TrustedProxies {
		_, n, err := net.ParseCIDR(p)
		if err != nil && net.ParseIP(p) == nil {
			t.Errorf("%s: proxy.trusted_proxies %q is neither a CIDR nor an IP", where, p)
		} else if n != nil {
			if ones, _ := n.Mask.Size(); ones == 0 {
				t.Errorf("%s: proxy.trusted_proxies %q trusts every address", where, p)
			}
		}
	}
	readAtLeast := max(durationOr(t, where, "proxy.response_header_timeout", cfg.Proxy.ResponseHeaderTimeout, 300*time.Second),
		durationOr(t, where, "proxy.idle_timeout", cfg.Proxy.IdleTimeout, 300*time.Second))
	body := int64(100 << 20)
	if cfg.Proxy.MaxBodyBytes != "" {
		n, err := byteSize(cfg.Proxy.MaxBodyBytes)
		if err != nil {
			t.Errorf("%s: proxy.max_body_bytes %q: %v", where, cfg.Proxy.MaxBodyBytes, err)
		}
		body = n
	}
	for _, name := range sortedKeys(r.Ingresses) {
		ing := r.Ingresses[name]
		w := where + ": Ingress " + name
		if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" {
			t.Errorf("%s: ingressClassName is not nginx (the seed's)", w)
		}
		a := ing.Annotations
		for k, v := range map[string]string{
			"cert-manager.io/cluster-issuer":                 "letsencrypt-prod",
			"nginx.ingress.kubernetes.io/ssl-redirect":       "true",
			"nginx.ingress.kubernetes.io/force-ssl-redirect": "true",
			"nginx.ingress.kubernetes.io/proxy-buffering":    "off",
		} {
			if a[k] != v {
				t.Errorf("%s: annotation %s is %q, want %q", w, k, a[k], v)
			}
		}
		if s, err := strconv.Atoi(a["nginx.ingress.kubernetes.io/proxy-read-timeout"]); err != nil || time.Duration(s)*time.Second <= readAtLeast {
			t.Errorf("%s: proxy-read-timeout %q must exceed flowgate's response_header_timeout and idle_timeout (%v): ingress-nginx would cut answers flowgate still waits for", w, a["nginx.ingress.kubernetes.io/proxy-read-timeout"], readAtLeast)
		}
		if n, err := nginxSize(a["nginx.ingress.kubernetes.io/proxy-body-size"]); err != nil || n < body {
			t.Errorf("%s: proxy-body-size %q is below flowgate's max_body_bytes (%d): ingress-nginx would refuse uploads flowgate accepts", w, a["nginx.ingress.kubernetes.io/proxy-body-size"], body)
		}
		tlsHosts := map[string]bool{}
		for _, tls := range ing.Spec.TLS {
			if tls.SecretName == "" {
				t.Errorf("%s: a tls entry has no secretName for cert-manager to fill", w)
			}
			for _, h := range tls.Hosts {
				tlsHosts[h] = true
			}
		}
		if len(ing.Spec.TLS) == 0 {
			t.Errorf("%s: no tls: the Ingress would serve plain HTTP", w)
		}
		if ing.Spec.DefaultBackend != nil {
			t.Errorf("%s: a defaultBackend bypasses the rules' checks", w)
		}
		root := false
		for _, rule := range ing.Spec.Rules {
			if rule.Host == "" || !tlsHosts[rule.Host] {
				t.Errorf("%s: host %q has no certificate in tls", w, rule.Host)
			}
			if rule.HTTP == nil {
				continue
			}
			for _, p := range rule.HTTP.Paths {
				if p.Path == "/" && p.PathType != nil && *p.PathType == networkingv1.PathTypePrefix {
					root = true
				}
				b := p.Backend.Service
				if b == nil {
					t.Errorf("%s: path %s has no Service backend", w, p.Path)
					continue
				}
				svc, ok := r.Services[b.Name]
				if !ok {
					t.Errorf("%s: path %s: Service %s is not rendered", w, p.Path, b.Name)
					continue
				}
				port := intstr.FromInt32(b.Port.Number)
				if b.Port.Name != "" {
					port = intstr.FromString(b.Port.Name)
				}
				if _, c, cp := servicePortTo(r, svc, port); c == nil || c.Name != "flowgate" || cp != proxyPort {
					t.Errorf("%s: path %s goes to Service %s port %s, which does not reach flowgate's proxy port %d", w, p.Path, b.Name, port.String(), proxyPort)
				}
			}
		}
		if !root {
			t.Errorf("%s: no path / of type Prefix: not every request reaches flowgate", w)
		}
	}
}

// ---- test doubles -------------------------------------------------------------

// recorder is a reporter that keeps what the checks report.
type recorder struct{ errs []string }

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// envFile reads KEY=VALUE lines (a kustomize env file), skipping comments
// and blank lines.
func envFile(t *testing.T, file string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: %q is not KEY=VALUE", file, line)
			continue
		}
		kv[k] = v
	}
	return kv
}

package check

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Paths are relative to this package's folder, deploy/check.
const (
	repoRoot  = "../.."
	deployDir = ".."
	k8sDir    = "../k8s"
)

// The flowgate ports the manifests, probes and Dockerfile agree on.
const (
	proxyPort   = 8080
	metricsPort = 9090
)

// needTool returns the path of an external tool. When it is missing the test
// is skipped on a developer's machine and fails under CI=true, so a CI that
// forgot to install it cannot pass by skipping.
func needTool(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is not installed but CI=true: install it (%s)", name, install)
	}
	t.Skipf("%s not installed (%s); set CI=true to make this a failure", name, install)
	return ""
}

func run(t *testing.T, dir, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// ---- strict decoding ------------------------------------------------------

// decodeStrict turns one YAML document into obj, failing on duplicate keys,
// on unknown fields and on fields whose case differs from the API's
// (encoding/json alone would accept "containerport").
func decodeStrict(doc []byte, obj any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	strictErrs, err := kjson.UnmarshalStrict(js, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strictErrs) > 0 {
		return errors.Join(strictErrs...)
	}
	return nil
}

// newObject returns an empty typed object for an apiVersion and kind, or nil
// for anything this project does not ship. A ServiceMonitor (a CRD, with no
// type in k8s.io/api) decodes into the local serviceMonitor.
func newObject(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/Namespace":
		return &corev1.Namespace{}
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}
	case "networking.k8s.io/v1/Ingress":
		return &networkingv1.Ingress{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &serviceMonitor{}
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "v1/PersistentVolumeClaim":
		return &corev1.PersistentVolumeClaim{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}
	}
	return nil
}

// rendered is one kustomization's output, decoded.
type rendered struct {
	Deployments  map[string]*appsv1.Deployment
	Services     map[string]*corev1.Service
	ConfigMaps   map[string]*corev1.ConfigMap
	Secrets      map[string]*corev1.Secret
	PDBs         map[string]*policyv1.PodDisruptionBudget
	PVCs         map[string]*corev1.PersistentVolumeClaim
	NetPols      map[string]*networkingv1.NetworkPolicy
	ServiceAccts map[string]*corev1.ServiceAccount
	NSes         map[string]*corev1.Namespace
	HPAs         map[string]*autoscalingv2.HorizontalPodAutoscaler
	Ingresses    map[string]*networkingv1.Ingress
	SvcMonitors  map[string]*serviceMonitor
	Kinds        []string
	// ObjNamespace is each object's metadata.namespace, by "Kind/name".
	ObjNamespace map[string]string
}

// decodeAll splits a multi-document YAML stream and strictly decodes every
// document into its k8s.io/api type. Unknown kinds fail.
func decodeAll(t *testing.T, stream []byte) *rendered {
	t.Helper()
	r := &rendered{
		Deployments:  map[string]*appsv1.Deployment{},
		Services:     map[string]*corev1.Service{},
		ConfigMaps:   map[string]*corev1.ConfigMap{},
		Secrets:      map[string]*corev1.Secret{},
		PDBs:         map[string]*policyv1.PodDisruptionBudget{},
		PVCs:         map[string]*corev1.PersistentVolumeClaim{},
		NetPols:      map[string]*networkingv1.NetworkPolicy{},
		ServiceAccts: map[string]*corev1.ServiceAccount{},
		NSes:         map[string]*corev1.Namespace{},
		HPAs:         map[string]*autoscalingv2.HorizontalPodAutoscaler{},
		Ingresses:    map[string]*networkingv1.Ingress{},
		SvcMonitors:  map[string]*serviceMonitor{},
		ObjNamespace: map[string]string{},
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for i := 0; ; i++ {
		doc, err := reader.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		obj := newObject(head.APIVersion, head.Kind)
		if obj == nil {
			t.Errorf("document %d (%s): unknown kind %s/%s: add its type to newObject or fix the manifest", i, head.Metadata.Name, head.APIVersion, head.Kind)
			continue
		}
		if err := decodeStrict(doc, obj); err != nil {
			t.Errorf("%s %s: strict decode: %v", head.Kind, head.Metadata.Name, err)
			continue
		}
		if head.Metadata.Name == "" {
			t.Errorf("document %d: %s without metadata.name", i, head.Kind)
		}
		name := head.Metadata.Name
		r.Kinds = append(r.Kinds, head.Kind+"/"+name)
		r.ObjNamespace[head.Kind+"/"+name] = head.Metadata.Namespace
		dup := false
		switch o := obj.(type) {
		case *appsv1.Deployment:
			_, dup = r.Deployments[name]
			r.Deployments[name] = o
		case *corev1.Service:
			_, dup = r.Services[name]
			r.Services[name] = o
		case *corev1.ConfigMap:
			_, dup = r.ConfigMaps[name]
			r.ConfigMaps[name] = o
		case *corev1.Secret:
			_, dup = r.Secrets[name]
			r.Secrets[name] = o
		case *policyv1.PodDisruptionBudget:
			_, dup = r.PDBs[name]
			r.PDBs[name] = o
		case *corev1.PersistentVolumeClaim:
			_, dup = r.PVCs[name]
			r.PVCs[name] = o
		case *networkingv1.NetworkPolicy:
			_, dup = r.NetPols[name]
			r.NetPols[name] = o
		case *corev1.ServiceAccount:
			_, dup = r.ServiceAccts[name]
			r.ServiceAccts[name] = o
		case *corev1.Namespace:
			_, dup = r.NSes[name]
			r.NSes[name] = o
		case *autoscalingv2.HorizontalPodAutoscaler:
			_, dup = r.HPAs[name]
			r.HPAs[name] = o
		case *networkingv1.Ingress:
			_, dup = r.Ingresses[name]
			r.Ingresses[name] = o
		case *serviceMonitor:
			_, dup = r.SvcMonitors[name]
			r.SvcMonitors[name] = o
		}
		if dup {
			t.Errorf("%s %s appears twice", head.Kind, name)
		}
	}
	if len(r.Kinds) == 0 {
		t.Fatal("the render holds no object")
	}
	return r
}

// kustomize renders the kustomization at rel (a folder under deploy/k8s)
// with kubectl (offline); see renderK8s.
func kustomize(t *testing.T, rel string) *rendered {
	t.Helper()
	return decodeAll(t, renderK8s(t, rel))
}

// ---- flowgate's own config, as far as the manifests depend on it ----------

// gateConfig is the subset of config/config.go that deployment files rely on.
// Decoded leniently: the gateway's own `validate` owns the full schema.
type gateConfig struct {
	Server struct {
		Listen          string `json:"listen"`
		MetricsListen   string `json:"metrics_listen"`
		AdminListen     string `json:"admin_listen"`
		ShutdownTimeout string `json:"shutdown_timeout"`
	} `json:"server"`
	Upstreams []gateUpstream `json:"upstreams"`
	Proxy     struct {
		MaxBodyBytes          string   `json:"max_body_bytes"`
		ResponseHeaderTimeout string   `json:"response_header_timeout"`
		IdleTimeout           string   `json:"idle_timeout"`
		TrustedProxies        []string `json:"trusted_proxies"`
	} `json:"proxy"`
	Health struct {
		Active struct {
			Path string `json:"path"`
		} `json:"active"`
	} `json:"health"`
	Admin struct {
		Token     string `json:"token"`
		TokenFile string `json:"token_file"`
	} `json:"admin"`
	Redis struct {
		Addr         string `json:"addr"`
		Password     string `json:"password"`
		PasswordFile string `json:"password_file"`
	} `json:"redis"`
	TLS struct {
		Mode         string `json:"mode"`
		Listen       string `json:"listen"`
		RedirectHTTP *bool  `json:"redirect_http"`
		RedirectPort int    `json:"redirect_port"`
		CertFile     string `json:"cert_file"`
		KeyFile      string `json:"key_file"`
		StorageDir   string `json:"storage_dir"`
		HSTS         string `json:"hsts"`
		ACME         struct {
			Domains []string `json:"domains"`
			Email   string   `json:"email"`
		} `json:"acme"`
	} `json:"tls"`
}

// gateUpstream is one upstreams[] entry: a url, or a dns name whose A/AAAA
// records are the replicas (a headless Service), with their port.
type gateUpstream struct {
	URL     string `json:"url"`
	Name    string `json:"name"`
	DNS     string `json:"dns"`
	Port    int    `json:"port"`
	Scheme  string `json:"scheme"`
	Refresh string `json:"refresh"`
}

// refresh is how often a dns upstream is resolved again (10s when unset).
func (u gateUpstream) refresh() (time.Duration, error) {
	if u.Refresh == "" {
		return 10 * time.Second, nil
	}
	return time.ParseDuration(u.Refresh)
}

// parseGateConfig reads a flowgate.yaml and checks what every deployment
// relies on: at least one upstream, each an absolute http(s) URL or a DNS
// name with a port, listeners on the ports the manifests probe and publish,
// the admin token and Redis password only by file, and a shutdown timeout
// it returns (30s when unset).
func parseGateConfig(t *testing.T, where string, data []byte) gateConfig {
	t.Helper()
	var c gateConfig
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: flowgate config does not parse: %v", where, err)
	}
	if len(c.Upstreams) == 0 {
		t.Errorf("%s: no upstreams: flowgate would have nothing to proxy to", where)
	}
	for i, u := range c.Upstreams {
		if u.DNS != "" {
			if u.URL != "" {
				t.Errorf("%s: upstreams[%d] sets both url and dns", where, i)
			}
			if strings.ContainsAny(u.DNS, "/:[] ") {
				t.Errorf("%s: upstreams[%d].dns %q is not a host name", where, i, u.DNS)
			}
			if u.Port < 1 || u.Port > 65535 {
				t.Errorf("%s: upstreams[%d].port %d: a dns upstream needs its replicas' port", where, i, u.Port)
			}
			if u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https" {
				t.Errorf("%s: upstreams[%d].scheme %q is not http or https", where, i, u.Scheme)
			}
			if d, err := u.refresh(); err != nil || d < time.Second {
				t.Errorf("%s: upstreams[%d].refresh %q is not a duration of at least 1s", where, i, u.Refresh)
			}
			continue
		}
		p, err := url.Parse(u.URL)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			t.Errorf("%s: upstreams[%d].url %q is not an absolute http(s) URL", where, i, u.URL)
		}
	}
	checkPort(t, where, "server.listen", c.Server.Listen, proxyPort)
	checkPort(t, where, "server.metrics_listen", c.Server.MetricsListen, metricsPort)
	if a := c.Server.AdminListen; a != "" {
		host, _, err := net.SplitHostPort(a)
		if err != nil || (host != "127.0.0.1" && host != "localhost" && host != "::1") {
			t.Errorf("%s: server.admin_listen %q: the admin API must stay on loopback", where, a)
		}
	}
	if c.Admin.Token != "" {
		t.Errorf("%s: admin.token is written in the config: use admin.token_file (a secret)", where)
	}
	if c.Admin.TokenFile == "" {
		t.Errorf("%s: admin.token_file is not set: the admin API would refuse every call", where)
	}
	if c.Redis.Password != "" {
		t.Errorf("%s: redis.password is written in the config: use redis.password_file (a secret)", where)
	}
	return c
}

func checkPort(t *testing.T, where, key, addr string, want int) {
	t.Helper()
	if addr == "" {
		return // the default, which is the wanted port
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port != fmt.Sprint(want) {
		t.Errorf("%s: %s %q: the manifests expect port %d", where, key, addr, want)
	}
}

func shutdownTimeout(t *testing.T, where string, c gateConfig) time.Duration {
	t.Helper()
	if c.Server.ShutdownTimeout == "" {
		return 30 * time.Second
	}
	d, err := time.ParseDuration(c.Server.ShutdownTimeout)
	if err != nil {
		t.Fatalf("%s: server.shutdown_timeout %q: %v", where, c.Server.ShutdownTimeout, err)
	}
	return d
}

// ---- pod helpers ------------------------------------------------------------

// findContainer looks in containers and init containers (native sidecars).
func findContainer(spec *corev1.PodSpec, name string) (*corev1.Container, bool) {
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i], false
		}
	}
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == name {
			return &spec.InitContainers[i], true
		}
	}
	return nil, false
}

// portNumber resolves a probe's or Service's port (number or name) against a
// container's declared ports.
func portNumber(c *corev1.Container, p intstr.IntOrString) (int32, bool) {
	if p.Type == intstr.Int {
		return p.IntVal, true
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

func declaresPort(c *corev1.Container, port int32) bool {
	for _, cp := range c.Ports {
		if cp.ContainerPort == port {
			return true
		}
	}
	return false
}

// reporter is the part of *testing.T the manifest checks use, so that a test
// can hand them a recorder and prove they catch what they exist to catch.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// checkHTTPProbe asserts a probe is an HTTP GET of path on the metrics port.
func checkHTTPProbe(t reporter, where string, c *corev1.Container, kind string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil {
		t.Errorf("%s: container %s has no %s probe", where, c.Name, kind)
		return
	}
	if p.HTTPGet == nil {
		t.Errorf("%s: %s probe of %s is not an HTTP GET", where, kind, c.Name)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: %s probe of %s gets %q, want %q", where, kind, c.Name, p.HTTPGet.Path, path)
	}
	port, ok := portNumber(c, p.HTTPGet.Port)
	if !ok || port != metricsPort {
		t.Errorf("%s: %s probe of %s uses port %s, want %d (the metrics listener)", where, kind, c.Name, p.HTTPGet.Port.String(), metricsPort)
	}
	if p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
		t.Errorf("%s: %s probe of %s uses scheme %s; the metrics listener is plain HTTP", where, kind, c.Name, p.HTTPGet.Scheme)
	}
}

// checkNonRoot asserts the container cannot run as root, with the pod's
// securityContext as the fallback, as the kubelet resolves it.
func checkNonRoot(t reporter, where string, pod *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	var nonRoot *bool
	var uid *int64
	if ps := pod.SecurityContext; ps != nil {
		nonRoot, uid = ps.RunAsNonRoot, ps.RunAsUser
	}
	sc := c.SecurityContext
	if sc != nil && sc.RunAsNonRoot != nil {
		nonRoot = sc.RunAsNonRoot
	}
	if sc != nil && sc.RunAsUser != nil {
		uid = sc.RunAsUser
	}
	if nonRoot == nil || !*nonRoot {
		t.Errorf("%s: container %s does not set runAsNonRoot: true", where, c.Name)
	}
	if uid != nil && *uid == 0 {
		t.Errorf("%s: container %s runs as uid 0", where, c.Name)
	}
	if sc == nil {
		t.Errorf("%s: container %s has no securityContext", where, c.Name)
		return
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: container %s: readOnlyRootFilesystem is not true", where, c.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: container %s: allowPrivilegeEscalation is not false", where, c.Name)
	}
	dropsAll := false
	if sc.Capabilities != nil {
		for _, c := range sc.Capabilities.Drop {
			if c == "ALL" {
				dropsAll = true
			}
		}
		if len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: container %s adds capabilities %v", where, c.Name, sc.Capabilities.Add)
		}
	}
	if !dropsAll {
		t.Errorf("%s: container %s does not drop ALL capabilities", where, c.Name)
	}
}

// checkResources asserts cpu and memory requests and limits, each limit at
// least its request (the scheduler, the kubelet's OOM killer and the HPA's
// utilization all read them).
func checkResources(t reporter, where string, c *corev1.Container) {
	t.Helper()
	req, lim := c.Resources.Requests, c.Resources.Limits
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		r, hasReq := req[name]
		l, hasLim := lim[name]
		if !hasReq || r.IsZero() {
			t.Errorf("%s: container %s has no %s request", where, c.Name, name)
		}
		if !hasLim || l.IsZero() {
			t.Errorf("%s: container %s has no %s limit", where, c.Name, name)
		}
		if hasReq && hasLim && l.Cmp(r) < 0 {
			t.Errorf("%s: container %s: %s limit %s is below its request %s", where, c.Name, name, l.String(), r.String())
		}
	}
}

// checkScrapeAnnotations asserts Prometheus' annotation-based discovery finds
// the metrics port.
func checkScrapeAnnotations(t *testing.T, where string, tpl *corev1.PodTemplateSpec) {
	t.Helper()
	a := tpl.Annotations
	if a["prometheus.io/scrape"] != "true" {
		t.Errorf("%s: pod template lacks prometheus.io/scrape: \"true\"", where)
	}
	if a["prometheus.io/port"] != fmt.Sprint(metricsPort) {
		t.Errorf("%s: prometheus.io/port is %q, want %q", where, a["prometheus.io/port"], fmt.Sprint(metricsPort))
	}
	if p, ok := a["prometheus.io/path"]; ok && p != "/metrics" {
		t.Errorf("%s: prometheus.io/path is %q, want /metrics", where, p)
	}
}

// gateContainer checks the flowgate container that any flowgate pod runs and
// returns its config, read from the ConfigMap it mounts.
func gateContainer(t *testing.T, where string, r *rendered, pod *corev1.PodSpec, c *corev1.Container) gateConfig {
	t.Helper()
	checkHTTPProbe(t, where, c, "liveness", c.LivenessProbe, "/healthz")
	checkHTTPProbe(t, where, c, "readiness", c.ReadinessProbe, "/readyz")
	if c.StartupProbe != nil {
		// /readyz waits for an upstream; a startup probe only needs the process.
		checkHTTPProbe(t, where, c, "startup", c.StartupProbe, "/healthz")
	}
	checkNonRoot(t, where, pod, c)
	checkResources(t, where, c)
	for _, port := range []int32{proxyPort, metricsPort} {
		if !declaresPort(c, port) {
			t.Errorf("%s: container %s does not declare port %d", where, c.Name, port)
		}
	}

	// -config FILE must be a file the pod mounts from a rendered ConfigMap.
	cfgPath := ""
	for i, a := range c.Args {
		if (a == "-config" || a == "--config") && i+1 < len(c.Args) {
			cfgPath = c.Args[i+1]
		} else if v, ok := strings.CutPrefix(a, "-config="); ok {
			cfgPath = v
		}
	}
	if cfgPath == "" {
		t.Fatalf("%s: container %s is not started with -config FILE", where, c.Name)
	}
	cm, key := mountedConfigMap(t, where, r, pod, c, cfgPath)
	if cm == nil {
		t.Fatalf("%s: %s is not a key of a ConfigMap mounted in container %s", where, cfgPath, c.Name)
	}
	cfg := parseGateConfig(t, where+": ConfigMap "+cm.Name, []byte(cm.Data[key]))

	// admin.token_file and redis.password_file must come from mounted Secrets.
	if tf := cfg.Admin.TokenFile; tf != "" && !mountedFromSecret(pod, c, tf) {
		t.Errorf("%s: admin.token_file %s is not inside a Secret volume mounted in %s", where, tf, c.Name)
	}
	if pf := cfg.Redis.PasswordFile; pf != "" && !mountedFromSecret(pod, c, pf) {
		t.Errorf("%s: redis.password_file %s is not inside a Secret volume mounted in %s", where, pf, c.Name)
	}
	return cfg
}

// mountedConfigMap finds the ConfigMap and key that file resolves to.
func mountedConfigMap(t *testing.T, where string, r *rendered, pod *corev1.PodSpec, c *corev1.Container, file string) (*corev1.ConfigMap, string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, file)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		if m.SubPath != "" {
			rel = m.SubPath
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := r.ConfigMaps[v.ConfigMap.Name]
			if !ok {
				t.Errorf("%s: volume %s references ConfigMap %s, which the kustomization does not render", where, v.Name, v.ConfigMap.Name)
				return nil, ""
			}
			key := rel
			for _, it := range v.ConfigMap.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			if _, ok := cm.Data[key]; !ok {
				t.Errorf("%s: ConfigMap %s has no key %s", where, cm.Name, key)
				return nil, ""
			}
			return cm, key
		}
	}
	return nil, ""
}

// mountedFromSecret reports whether a Secret volume holds file.
func mountedFromSecret(pod *corev1.PodSpec, c *corev1.Container, file string) bool {
	_, _, ok := secretForFile(pod, c, file)
	return ok
}

// checkPodWiring asserts the generic things kubectl apply would only find
// late: selectors match templates, volumes reference rendered objects.
func checkPodWiring(t *testing.T, r *rendered) {
	t.Helper()
	for name, d := range r.Deployments {
		sel, err := metaSelector(d.Spec.Selector)
		if err != nil {
			t.Errorf("Deployment %s: selector: %v", name, err)
			continue
		}
		if sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Deployment %s: selector does not match its pod template's labels", name)
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.ConfigMap != nil {
				if _, ok := r.ConfigMaps[v.ConfigMap.Name]; !ok {
					t.Errorf("Deployment %s: volume %s: ConfigMap %s is not rendered", name, v.Name, v.ConfigMap.Name)
				}
			}
			if v.PersistentVolumeClaim != nil {
				if _, ok := r.PVCs[v.PersistentVolumeClaim.ClaimName]; !ok {
					t.Errorf("Deployment %s: volume %s: PVC %s is not rendered", name, v.Name, v.PersistentVolumeClaim.ClaimName)
				}
			}
		}
	}
	for name, s := range r.Services {
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s selects no pods", name)
			continue
		}
		if servedBy(r, s) == nil {
			t.Errorf("Service %s: its selector matches no Deployment's pods", name)
		}
	}
	for name, p := range r.PDBs {
		sel, err := metaSelector(p.Spec.Selector)
		if err != nil {
			t.Errorf("PodDisruptionBudget %s: %v", name, err)
			continue
		}
		matched := false
		for _, d := range r.Deployments {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				matched = true
				replicas := int32(1)
				if d.Spec.Replicas != nil {
					replicas = *d.Spec.Replicas
				}
				if p.Spec.MinAvailable != nil && p.Spec.MinAvailable.Type == intstr.Int && p.Spec.MinAvailable.IntVal >= replicas {
					t.Errorf("PodDisruptionBudget %s: minAvailable %d with %d replicas blocks every node drain", name, p.Spec.MinAvailable.IntVal, replicas)
				}
			}
		}
		if !matched {
			t.Errorf("PodDisruptionBudget %s matches no Deployment's pods", name)
		}
	}
}

// servedBy returns the Deployment whose pods a Service selects.
func servedBy(r *rendered, s *corev1.Service) *appsv1.Deployment {
	sel := labels.SelectorFromSet(s.Spec.Selector)
	for _, d := range r.Deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			return d
		}
	}
	return nil
}

// targetContainer resolves a Service port's targetPort to the container of
// the pod that declares it (containers and native sidecars alike).
func targetContainer(pod *corev1.PodSpec, sp corev1.ServicePort) (*corev1.Container, int32) {
	tp := sp.TargetPort
	if tp.Type == intstr.Int && tp.IntVal == 0 {
		tp = intstr.FromInt32(sp.Port) // targetPort defaults to port
	}
	all := append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...)
	for i := range all {
		c := &all[i]
		for _, cp := range c.Ports {
			if (tp.Type == intstr.Int && cp.ContainerPort == tp.IntVal) || (tp.Type == intstr.String && cp.Name == tp.StrVal) {
				return c, cp.ContainerPort
			}
		}
	}
	return nil, 0
}

func metaSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return nil, errors.New("no selector")
	}
	return metav1.LabelSelectorAsSelector(s)
}

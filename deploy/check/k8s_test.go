package check

import (
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
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
	}
	for name, doc := range bad {
		var obj any
		if strings.Contains(doc, "kind: Deployment") {
			obj = newObject("apps/v1", "Deployment")
		} else if strings.Contains(doc, "kind: Service") {
			obj = newObject("v1", "Service")
		} else {
			obj = newObject("v1", "ConfigMap")
		}
		if err := decodeStrict([]byte(doc), obj); err == nil {
			t.Errorf("%s: decodeStrict accepted it", name)
		}
	}
	if newObject("apps/v1", "DaemonSet") != nil || newObject("v1beta1", "Deployment") != nil {
		t.Error("newObject knows a kind or apiVersion the project does not ship")
	}
	good := `
apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  selector: {app: x}
  ports: [{name: http, port: 80, targetPort: http}]`
	if err := decodeStrict([]byte(good), newObject("v1", "Service")); err != nil {
		t.Errorf("decodeStrict rejected a valid Service: %v", err)
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

func TestK8sStandalone(t *testing.T) {
	const where = "standalone"
	r := kustomize(t, filepath.Join(k8sDir, "standalone"))
	checkPodWiring(t, r)

	d, ok := r.Deployments["flowgate"]
	if !ok {
		t.Fatalf("no Deployment flowgate; rendered %v", r.Kinds)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("%s: Deployment flowgate should run at least 2 replicas", where)
	}
	pod := &d.Spec.Template.Spec
	c, isInit := findContainer(pod, "flowgate")
	if c == nil || isInit {
		t.Fatalf("%s: no flowgate container in the Deployment's containers", where)
	}
	cfg := gateContainer(t, where, r, pod, c)
	checkScrapeAnnotations(t, where, &d.Spec.Template)
	checkGrace(t, where, pod, shutdownTimeout(t, where, cfg), preStopSleep(c))

	// Points at the flowise Service.
	atFlowise := false
	for _, u := range cfg.Upstreams {
		if p, err := url.Parse(u.URL); err == nil && strings.SplitN(p.Hostname(), ".", 2)[0] == "flowise" {
			atFlowise = true
		}
	}
	if !atFlowise {
		t.Errorf("%s: no upstream points at the flowise Service: %+v", where, cfg.Upstreams)
	}

	// The Service reaches flowgate's proxy port.
	svc, ok := r.Services["flowgate"]
	if !ok {
		t.Fatalf("%s: no Service flowgate", where)
	}
	if servedBy(r, svc) != d {
		t.Errorf("%s: Service flowgate does not select the flowgate pods", where)
	}
	reachesProxy := false
	for _, sp := range svc.Spec.Ports {
		tc, port := targetContainer(pod, sp)
		if tc == nil {
			t.Errorf("%s: Service port %s targets %s, which no container declares", where, sp.Name, sp.TargetPort.String())
			continue
		}
		if port == proxyPort {
			reachesProxy = true
		}
	}
	if !reachesProxy {
		t.Errorf("%s: no Service port targets flowgate's %d", where, proxyPort)
	}

	if len(r.PDBs) == 0 {
		t.Errorf("%s: no PodDisruptionBudget", where)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: flowgate needs no Kubernetes API token: set automountServiceAccountToken: false", where)
	}
}

func TestK8sSidecar(t *testing.T) {
	const where = "sidecar"
	r := kustomize(t, filepath.Join(k8sDir, "sidecar"))
	checkPodWiring(t, r)

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
	if sp := gate.StartupProbe; sp != nil && sp.HTTPGet != nil && sp.HTTPGet.Path == "/readyz" {
		t.Errorf("%s: flowgate's startupProbe waits on /readyz, which needs Flowise, which waits on the startupProbe", where)
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
		p, err := url.Parse(u.URL)
		if err != nil {
			continue
		}
		ip := net.ParseIP(p.Hostname())
		if p.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			t.Errorf("%s: upstream %s is not on loopback: the sidecar proxies to its own pod", where, u.URL)
		}
		if !declaresPort(flowise, int32(mustAtoi(t, p.Port()))) {
			t.Errorf("%s: upstream %s: the flowise container does not declare that port", where, u.URL)
		}
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

package check

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// renderedGateConfig parses the flowgate.yaml of the one ConfigMap that
// holds it.
func renderedGateConfig(t *testing.T, r *rendered) gateConfig {
	t.Helper()
	for _, name := range sortedKeys(r.ConfigMaps) {
		if data, ok := r.ConfigMaps[name].Data["flowgate.yaml"]; ok {
			return parseGateConfig(t, "ConfigMap "+name, []byte(data))
		}
	}
	t.Fatalf("no ConfigMap holds flowgate.yaml; rendered %v", r.Kinds)
	return gateConfig{}
}

func container(t *testing.T, r *rendered, deployment, name string) *corev1.Container {
	t.Helper()
	d, ok := r.Deployments[deployment]
	if !ok {
		t.Fatalf("no Deployment %s", deployment)
	}
	c, _ := findContainer(&d.Spec.Template.Spec, name)
	if c == nil {
		t.Fatalf("Deployment %s has no container %s", deployment, name)
	}
	return c
}

// Each check fails on a copy of a shipped layout with the one mistake it
// exists to catch, and passes on the layout as shipped.
func TestK8sChecksCatchMistakes(t *testing.T) {
	streams := map[string][]byte{}
	for _, l := range []string{"overlays/gateway", "overlays/ingress", "overlays/sidecar"} {
		streams[l] = renderK8s(t, l)
	}

	checks := map[string]func(e reporter, r *rendered, cfg gateConfig){
		"pods": func(e reporter, r *rendered, cfg gateConfig) { checkPods(e, "x", r, nil) },
		"hpa":  func(e reporter, r *rendered, cfg gateConfig) { checkHPA(e, "x", r) },
		"servicemonitor": func(e reporter, r *rendered, cfg gateConfig) {
			checkServiceMonitor(e, "x", r)
		},
		"headless": func(e reporter, r *rendered, cfg gateConfig) {
			for _, u := range cfg.Upstreams {
				checkHeadlessUpstream(e, "x", r, u)
			}
		},
		"flowise": func(e reporter, r *rendered, cfg gateConfig) {
			checkFlowise(e, "x", r, r.Deployments["flowise"], 10*time.Second)
		},
		"redis": func(e reporter, r *rendered, cfg gateConfig) {
			d := r.Deployments["flowgate"]
			c, _ := findContainer(&d.Spec.Template.Spec, "flowgate")
			checkRedis(e, "x", r, cfg, &d.Spec.Template.Spec, c)
		},
		"netpol": func(e reporter, r *rendered, cfg gateConfig) {
			checkOnlyFlowgateReaches(e, "x", r, r.Deployments["flowise"], 3000)
			checkOnlyFlowgateReaches(e, "x", r, r.Deployments["redis"], 6379)
		},
		"restricted": func(e reporter, r *rendered, cfg gateConfig) {
			for _, name := range sortedKeys(r.Deployments) {
				checkRestricted(e, "x", &r.Deployments[name].Spec.Template.Spec)
			}
		},
		"probes": func(e reporter, r *rendered, cfg gateConfig) {
			for _, d := range r.Deployments {
				if c, _ := findContainer(&d.Spec.Template.Spec, "flowgate"); c != nil {
					checkHTTPProbe(e, "x", c, "liveness", c.LivenessProbe, "/healthz")
					checkHTTPProbe(e, "x", c, "readiness", c.ReadinessProbe, "/readyz")
				}
			}
		},
		"ingress": func(e reporter, r *rendered, cfg gateConfig) { checkIngress(e, "x", r, cfg) },
		"loopback": func(e reporter, r *rendered, cfg gateConfig) {
			d := r.Deployments["flowise"]
			f, _ := findContainer(&d.Spec.Template.Spec, "flowise")
			for _, u := range cfg.Upstreams {
				checkLoopbackUpstream(e, "x", u, f)
			}
		},
	}

	type mistake struct {
		name   string
		layout string
		check  string
		break_ func(t *testing.T, r *rendered, cfg *gateConfig)
	}
	gw, ing, side := "overlays/gateway", "overlays/ingress", "overlays/sidecar"
	mistakes := []mistake{
		{"flowgate on latest", gw, "pods", func(t *testing.T, r *rendered, _ *gateConfig) {
			container(t, r, "flowgate", "flowgate").Image = "ghcr.io/flowgate/flowgate:latest"
		}},
		{"redis without a tag", gw, "pods", func(t *testing.T, r *rendered, _ *gateConfig) {
			container(t, r, "redis", "redis").Image = "redis"
		}},
		{"flowise without a cpu limit", gw, "pods", func(t *testing.T, r *rendered, _ *gateConfig) {
			delete(container(t, r, "flowise", "flowise").Resources.Limits, corev1.ResourceCPU)
		}},
		{"flowgate without a memory request", gw, "pods", func(t *testing.T, r *rendered, _ *gateConfig) {
			delete(container(t, r, "flowgate", "flowgate").Resources.Requests, corev1.ResourceMemory)
		}},
		{"a limit below its request", gw, "pods", func(t *testing.T, r *rendered, _ *gateConfig) {
			container(t, r, "redis", "redis").Resources.Limits[corev1.ResourceMemory] = resource.MustParse("64Mi")
		}},
		{"redis with a writable root filesystem", gw, "pods", func(t *testing.T, r *rendered, _ *gateConfig) {
			container(t, r, "redis", "redis").SecurityContext.ReadOnlyRootFilesystem = ptr(false)
		}},
		{"flowgate as root", gw, "pods", func(t *testing.T, r *rendered, _ *gateConfig) {
			container(t, r, "flowgate", "flowgate").SecurityContext.RunAsUser = ptr[int64](0)
		}},
		{"HPA on another Deployment", gw, "hpa", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.HPAs["flowgate"].Spec.ScaleTargetRef.Name = "flowise"
		}},
		{"HPA on a Deployment not rendered", gw, "hpa", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.HPAs["flowgate"].Spec.ScaleTargetRef.Name = "flowgate-v2"
		}},
		{"HPA minReplicas 2", gw, "hpa", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.HPAs["flowgate"].Spec.MinReplicas = ptr[int32](2)
		}},
		{"HPA memory target 90", gw, "hpa", func(t *testing.T, r *rendered, _ *gateConfig) {
			for _, m := range r.HPAs["flowgate"].Spec.Metrics {
				if m.Resource.Name == corev1.ResourceMemory {
					m.Resource.Target.AverageUtilization = ptr[int32](90)
				}
			}
		}},
		{"HPA scaling down after 60s", gw, "hpa", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.HPAs["flowgate"].Spec.Behavior.ScaleDown.StabilizationWindowSeconds = ptr[int32](60)
		}},
		{"replicas fixed under the HPA", gw, "hpa", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.Deployments["flowgate"].Spec.Replicas = ptr[int32](3)
		}},
		{"a ClusterIP Service as the upstream", gw, "headless", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.Services["flowise-headless"].Spec.ClusterIP = ""
		}},
		{"not-ready pods in DNS", gw, "headless", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.Services["flowise-headless"].Spec.PublishNotReadyAddresses = true
		}},
		{"the upstream as a url", gw, "headless", func(t *testing.T, r *rendered, cfg *gateConfig) {
			cfg.Upstreams[0] = gateUpstream{URL: "http://flowise-headless:3000", Name: "flowise"}
		}},
		{"the upstream on the wrong port", gw, "headless", func(t *testing.T, r *rendered, cfg *gateConfig) {
			cfg.Upstreams[0].Port = 80
		}},
		{"the upstream in another namespace", gw, "headless", func(t *testing.T, r *rendered, cfg *gateConfig) {
			cfg.Upstreams[0].DNS = "flowise-headless.default.svc.cluster.local"
		}},
		{"the upstream selecting flowgate", gw, "headless", func(t *testing.T, r *rendered, cfg *gateConfig) {
			r.Services["flowise-headless"].Spec.Selector = r.Deployments["flowgate"].Spec.Selector.MatchLabels
			r.Services["flowise-headless"].Spec.Ports[0].TargetPort = intstr.FromInt32(proxyPort)
			cfg.Upstreams[0].Port = proxyPort
		}},
		{"ServiceMonitor path", gw, "servicemonitor", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.SvcMonitors["flowgate"].Spec.Endpoints[0].Path = "/metric"
		}},
		{"ServiceMonitor on the proxy port", gw, "servicemonitor", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.SvcMonitors["flowgate"].Spec.Endpoints[0].Port = "http"
		}},
		{"ServiceMonitor on Flowise", gw, "servicemonitor", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.SvcMonitors["flowgate"].Spec.Selector.MatchLabels = map[string]string{"app.kubernetes.io/name": "flowise"}
		}},
		{"Flowise ready on /api/v1/health", gw, "flowise", func(t *testing.T, r *rendered, _ *gateConfig) {
			container(t, r, "flowise", "flowise").ReadinessProbe.HTTPGet.Path = "/api/v1/health"
		}},
		{"Flowise stopping before flowgate notices", gw, "flowise", func(t *testing.T, r *rendered, _ *gateConfig) {
			container(t, r, "flowise", "flowise").Lifecycle.PreStop.Sleep.Seconds = 10
		}},
		{"a database password in the manifest", gw, "flowise", func(t *testing.T, r *rendered, _ *gateConfig) {
			c := container(t, r, "flowise", "flowise")
			c.Env = append(c.Env, corev1.EnvVar{Name: "DATABASE_PASSWORD", Value: "hunter2"})
		}},
		{"Flowise on SQLite", gw, "flowise", func(t *testing.T, r *rendered, _ *gateConfig) {
			c := container(t, r, "flowise", "flowise")
			for i := range c.Env {
				if c.Env[i].Name == "DATABASE_TYPE" {
					c.Env[i].Value = "sqlite"
				}
			}
		}},
		{"Redis without an append-only file", gw, "redis", func(t *testing.T, r *rendered, _ *gateConfig) {
			c := container(t, r, "redis", "redis")
			for i := range c.Args {
				c.Args[i] = strings.ReplaceAll(c.Args[i], "--appendonly yes", "--appendonly no")
			}
		}},
		{"Redis and flowgate on different passwords", gw, "redis", func(t *testing.T, r *rendered, _ *gateConfig) {
			c := container(t, r, "redis", "redis")
			for i := range c.Env {
				if c.Env[i].Name == "REDIS_PASSWORD" {
					c.Env[i].ValueFrom.SecretKeyRef.Name = "another"
				}
			}
		}},
		{"no redis.addr", gw, "redis", func(t *testing.T, r *rendered, cfg *gateConfig) {
			cfg.Redis.Addr = ""
		}},
		{"Flowise open to every pod", gw, "netpol", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.NetPols["flowise-from-flowgate"].Spec.Ingress[0].From = nil
		}},
		{"Redis open on every port", gw, "netpol", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.NetPols["redis-from-flowgate"].Spec.Ingress[0].Ports = nil
		}},
		{"a hostPath volume", gw, "restricted", func(t *testing.T, r *rendered, _ *gateConfig) {
			s := &r.Deployments["flowise"].Spec.Template.Spec
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}},
		{"no seccomp profile", gw, "restricted", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.Deployments["redis"].Spec.Template.Spec.SecurityContext.SeccompProfile = nil
		}},
		{"liveness on /readyz", gw, "probes", func(t *testing.T, r *rendered, _ *gateConfig) {
			container(t, r, "flowgate", "flowgate").LivenessProbe.HTTPGet.Path = "/readyz"
		}},
		{"readiness on the proxy port", gw, "probes", func(t *testing.T, r *rendered, _ *gateConfig) {
			container(t, r, "flowgate", "flowgate").ReadinessProbe.HTTPGet.Port = intstr.FromInt32(proxyPort)
		}},
		{"the Ingress on the metrics port", ing, "ingress", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.Ingresses["flowgate"].Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port.Name = "metrics"
		}},
		{"the Ingress without cert-manager", ing, "ingress", func(t *testing.T, r *rendered, _ *gateConfig) {
			delete(r.Ingresses["flowgate"].Annotations, "cert-manager.io/cluster-issuer")
		}},
		{"the Ingress cutting long answers", ing, "ingress", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.Ingresses["flowgate"].Annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"] = "60"
		}},
		{"the Ingress refusing uploads", ing, "ingress", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.Ingresses["flowgate"].Annotations["nginx.ingress.kubernetes.io/proxy-body-size"] = "1m"
		}},
		{"a host without a certificate", ing, "ingress", func(t *testing.T, r *rendered, _ *gateConfig) {
			r.Ingresses["flowgate"].Spec.Rules[0].Host = "other.example.com"
		}},
		{"the controller not trusted", ing, "ingress", func(t *testing.T, r *rendered, cfg *gateConfig) {
			cfg.Proxy.TrustedProxies = nil
		}},
		{"the sidecar's upstream off the pod", side, "loopback", func(t *testing.T, r *rendered, cfg *gateConfig) {
			cfg.Upstreams[0].URL = "http://flowise:3000"
		}},
		{"the sidecar's upstream by dns", side, "loopback", func(t *testing.T, r *rendered, cfg *gateConfig) {
			cfg.Upstreams[0] = gateUpstream{DNS: "flowise-headless", Port: 3000}
		}},
		{"the sidecar's upstream on an undeclared port", side, "loopback", func(t *testing.T, r *rendered, cfg *gateConfig) {
			cfg.Upstreams[0].URL = "http://127.0.0.1:3001"
		}},
	}

	// As shipped, every check passes on every layout its mistakes use.
	used := map[string]bool{}
	for _, m := range mistakes {
		if used[m.layout+" "+m.check] {
			continue
		}
		used[m.layout+" "+m.check] = true
		r := decodeAll(t, streams[m.layout])
		var rec recorder
		checks[m.check](&rec, r, renderedGateConfig(t, r))
		if len(rec.errs) > 0 {
			t.Errorf("%s on %s as shipped: %s", m.check, m.layout, strings.Join(rec.errs, "; "))
		}
	}
	for _, m := range mistakes {
		t.Run(m.name, func(t *testing.T) {
			r := decodeAll(t, streams[m.layout])
			cfg := renderedGateConfig(t, r)
			m.break_(t, r, &cfg)
			var rec recorder
			checks[m.check](&rec, r, cfg)
			if len(rec.errs) == 0 {
				t.Errorf("check %q did not notice %s", m.check, m.name)
			} else {
				t.Logf("%s: %s", m.check, rec.errs[0])
			}
		})
	}
}

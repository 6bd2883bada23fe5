package check

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// Every flowgate config the deployment files ship passes the gateway's own
// `flowgate validate`, so a renamed or mistyped key fails here and not at a
// user's first start. The token_file paths exist only inside containers, so
// each config is checked with its token_file pointed at a temporary file.
func TestShippedConfigsPassFlowgateValidate(t *testing.T) {
	mains, _ := filepath.Glob(filepath.Join(repoRoot, "cmd", "flowgate", "*.go"))
	hasMain := false
	for _, m := range mains {
		if !strings.HasSuffix(m, "_test.go") {
			hasMain = true
		}
	}
	if !hasMain {
		t.Skip("cmd/flowgate has no Go source yet")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "flowgate")
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	run(t, root, goBin, "build", "-o", bin, "./cmd/flowgate")

	token := filepath.Join(tmp, "admin_token")
	if err := os.WriteFile(token, []byte("check-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// deploy/compose/flowgate.*.yaml: TestComposeFlowgateConfigs (docker_test.go).
	var configs []string
	// Every kustomization's flowgate.yaml (base and overlays).
	k8sConfigs := k8sFlowgateConfigs(t)
	if len(k8sConfigs) < 4 {
		t.Errorf("found %d flowgate.yaml under %s, want the base's and the gateway, ingress and sidecar overlays'", len(k8sConfigs), k8sDir)
	}
	configs = append(configs, k8sConfigs...)
	for _, c := range configs {
		t.Run(strings.TrimPrefix(filepath.ToSlash(c), "../"), func(t *testing.T) {
			data, err := os.ReadFile(c)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := yaml.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			// Secret files exist only inside the containers.
			if admin, ok := doc["admin"].(map[string]any); ok {
				if _, ok := admin["token_file"]; ok {
					admin["token_file"] = token
				}
			}
			if redis, ok := doc["redis"].(map[string]any); ok {
				if _, ok := redis["password_file"]; ok {
					redis["password_file"] = token
				}
			}
			out, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), "flowgate.yaml")
			if err := os.WriteFile(f, out, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "validate", "-config", f)
			if msg, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("flowgate validate -config %s: %v\n%s", c, err, msg)
			}
		})
	}
}

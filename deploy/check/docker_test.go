package check

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return n
}

// ---- Dockerfile -------------------------------------------------------------

type instruction struct {
	Line  int
	Cmd   string // upper case
	Args  string
	Stage string // the stage's AS name, or its index
}

// parseDockerfile joins continuation lines and tags each instruction with
// the stage it belongs to. It returns the instructions and the last stage.
func parseDockerfile(t *testing.T, path string) ([]instruction, string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []instruction
	stage, stages := "", 0
	var buf strings.Builder
	start := 0
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if buf.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if buf.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // comments inside a continued instruction
		}
		if buf.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, `\`) {
			buf.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		buf.WriteString(line)
		full := buf.String()
		buf.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stages++
			stage = fmt.Sprint(stages - 1)
			f := strings.Fields(args)
			for i := range f {
				if strings.EqualFold(f[i], "AS") && i+1 < len(f) {
					stage = f[i+1]
				}
			}
		}
		out = append(out, instruction{Line: start, Cmd: cmd, Args: strings.TrimSpace(args), Stage: stage})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out, stage
}

func isRootUser(user string) bool {
	u, _, _ := strings.Cut(strings.TrimSpace(user), ":")
	return u == "" || u == "root" || u == "0"
}

func TestDockerfile(t *testing.T) {
	ins, final := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	stages := map[string]bool{}
	var (
		user, health, entry string
		exposed             = map[string]bool{}
		finalFrom           string
		all                 strings.Builder
	)
	for _, in := range ins {
		all.WriteString(in.Cmd + " " + in.Args + "\n")
		if in.Cmd == "FROM" {
			stages[in.Stage] = true
		}
		if in.Stage != final {
			continue
		}
		switch in.Cmd {
		case "FROM":
			finalFrom = in.Args
		case "USER":
			user = in.Args
		case "HEALTHCHECK":
			health = in.Args
		case "ENTRYPOINT":
			entry = in.Args
		case "EXPOSE":
			for _, p := range strings.Fields(in.Args) {
				exposed[strings.TrimSuffix(p, "/tcp")] = true
			}
		}
	}
	text := all.String()

	// The default target is the gateway, running as non-root.
	if user == "" || isRootUser(user) {
		t.Errorf("the final stage (%s) sets no non-root USER (got %q)", final, user)
	}
	if _, err := strconv.Atoi(strings.SplitN(user, ":", 2)[0]); err != nil {
		t.Errorf("USER %q is not numeric: Kubernetes' runAsNonRoot cannot verify a user name", user)
	}
	if !regexp.MustCompile(`CMD\s+.*flowgate"?\s*,?\s*"?healthcheck`).MatchString(health) {
		t.Errorf("the final stage's HEALTHCHECK does not run `flowgate healthcheck`: %q", health)
	}
	if !strings.Contains(entry, "flowgate") {
		t.Errorf("the final stage's ENTRYPOINT is not flowgate: %q", entry)
	}
	for _, p := range []int{proxyPort, metricsPort} {
		if !exposed[fmt.Sprint(p)] {
			t.Errorf("the final stage does not EXPOSE %d", p)
		}
	}
	if !strings.Contains(finalFrom, "distroless") && !strings.HasPrefix(finalFrom, "scratch") {
		t.Errorf("the final stage is not minimal (distroless or scratch): FROM %s", finalFrom)
	}
	if !stages["fakeflow"] {
		t.Error("no `fakeflow` target")
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=${VERSION}", "--mount=type=cache,target=/go/pkg/mod", "./cmd/flowgate", "./cmd/fakeflow", "golang:"} {
		if !strings.Contains(text, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
}

// The build context must keep what `go build` needs.
func TestDockerignoreKeepsSources(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "!") {
			t.Skip(".dockerignore uses exceptions; this simple matcher cannot judge it")
		}
		patterns = append(patterns, strings.TrimPrefix(l, "/"))
	}
	for _, need := range []string{"go.mod", "go.sum", "cmd/flowgate/main.go", "cmd/fakeflow/main.go", "config/config.go", "proxy/proxy.go"} {
		for _, p := range patterns {
			for sub := need; sub != "."; sub = filepath.Dir(sub) {
				m1, _ := filepath.Match(p, sub)
				m2 := false
				if rest, ok := strings.CutPrefix(p, "**/"); ok {
					m2, _ = filepath.Match(rest, filepath.Base(sub))
				}
				if m1 || m2 {
					t.Errorf(".dockerignore pattern %q excludes %s, which the build needs", p, need)
				}
			}
		}
	}
}

// ---- docker-compose -----------------------------------------------------------

type composeService struct {
	Image       string         `json:"image"`
	Command     []string       `json:"command"`
	Ports       []any          `json:"ports"`
	Expose      []any          `json:"expose"`
	Profiles    []string       `json:"profiles"`
	DependsOn   map[string]any `json:"depends_on"`
	Healthcheck *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
	Volumes         []string `json:"volumes"`
	Secrets         []any    `json:"secrets"`
	StopGracePeriod string   `json:"stop_grace_period"`
	User            string   `json:"user"`
	ReadOnly        bool     `json:"read_only"`
}

type composeFileT struct {
	Services map[string]composeService `json:"services"`
	Secrets  map[string]struct {
		File string `json:"file"`
	} `json:"secrets"`
}

// publishes reports whether a compose port entry (short or long syntax, as
// `config` prints it) publishes container port target.
func publishes(p any, target int) bool {
	switch v := p.(type) {
	case string:
		v = strings.TrimSuffix(v, "/tcp")
		parts := strings.Split(v, ":")
		return len(parts) >= 2 && parts[len(parts)-1] == fmt.Sprint(target)
	case map[string]any:
		return fmt.Sprint(v["target"]) == fmt.Sprint(target) && v["published"] != nil
	}
	return false
}

func TestCompose(t *testing.T) {
	dc := needTool(t, "docker-compose", "apt-get install -y docker-compose")
	// -q: validate only; exit 1 on an unknown key or a bad value.
	run(t, ".", dc, "-f", composeFile, "config", "-q")
	run(t, ".", dc, "-f", composeFile, "--profile", "demo", "config", "-q")

	// Read the resolved file (anchors merged, paths absolute).
	var cf composeFileT
	if err := yaml.Unmarshal(run(t, ".", dc, "-f", composeFile, "config"), &cf); err != nil {
		t.Fatalf("compose config output: %v", err)
	}

	flowise, ok := cf.Services["flowise"]
	if !ok {
		t.Fatal("no flowise service")
	}
	if len(flowise.Ports) > 0 {
		t.Errorf("flowise publishes ports %v: clients could bypass flowgate", flowise.Ports)
	}
	if !strings.HasPrefix(flowise.Image, "flowiseai/flowise") {
		t.Errorf("flowise runs image %q, want flowiseai/flowise", flowise.Image)
	}
	if len(flowise.Profiles) > 0 {
		t.Errorf("flowise is in profiles %v; it belongs to the default stack", flowise.Profiles)
	}
	fake, ok := cf.Services["fakeflow"]
	if !ok || !contains(fake.Profiles, "demo") {
		t.Error("no fakeflow service in profile demo")
	}

	for name, wantProfile := range map[string]string{"flowgate": "", "flowgate-demo": "demo"} {
		s, ok := cf.Services[name]
		if !ok {
			t.Errorf("no %s service", name)
			continue
		}
		if (wantProfile == "" && len(s.Profiles) > 0) || (wantProfile != "" && !contains(s.Profiles, wantProfile)) {
			t.Errorf("%s: profiles %v, want %q", name, s.Profiles, wantProfile)
		}
		pub := false
		for _, p := range s.Ports {
			pub = pub || publishes(p, proxyPort)
		}
		if !pub {
			t.Errorf("%s does not publish port %d", name, proxyPort)
		}
		if s.Healthcheck == nil || !strings.Contains(strings.Join(s.Healthcheck.Test, " "), "flowgate healthcheck") {
			t.Errorf("%s: healthcheck does not run `flowgate healthcheck`", name)
		}
		if s.User != "" && isRootUser(s.User) {
			t.Errorf("%s runs as root", name)
		}
		if len(s.DependsOn) == 0 {
			t.Errorf("%s depends on nothing", name)
		}
		for dep, cond := range s.DependsOn {
			m, _ := cond.(map[string]any)
			if m["condition"] != "service_healthy" {
				t.Errorf("%s: depends_on %s is not condition: service_healthy", name, dep)
			}
			if d, ok := cf.Services[dep]; !ok || d.Healthcheck == nil {
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}

		// The mounted config: upstream is the service it waits for, the
		// admin token is a compose secret, and Docker waits longer than
		// flowgate drains.
		cfgFile := ""
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && strings.HasSuffix(parts[1], ".yaml") {
				cfgFile = parts[0]
			}
		}
		if cfgFile == "" || !contains(s.Command, "-config") {
			t.Errorf("%s: no config file mounted and passed with -config", name)
			continue
		}
		data, err := os.ReadFile(cfgFile)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		cfg := parseGateConfig(t, name+": "+filepath.Base(cfgFile), data)
		for _, u := range cfg.Upstreams {
			p, err := url.Parse(u.URL)
			if err != nil {
				continue
			}
			if _, ok := s.DependsOn[p.Hostname()]; !ok {
				t.Errorf("%s: upstream %s is not a service it waits for", name, u.URL)
			}
		}
		secretOK := false
		for _, sec := range s.Secrets {
			src := fmt.Sprint(sec)
			if m, ok := sec.(map[string]any); ok {
				src = fmt.Sprint(m["source"])
			}
			if _, declared := cf.Secrets[src]; declared && cfg.Admin.TokenFile == "/run/secrets/"+src {
				secretOK = true
			}
		}
		if !secretOK {
			t.Errorf("%s: admin.token_file %q is not a compose secret of this service", name, cfg.Admin.TokenFile)
		}
		stop := 10 * time.Second // Docker's default
		if s.StopGracePeriod != "" {
			if stop, err = time.ParseDuration(s.StopGracePeriod); err != nil {
				t.Errorf("%s: stop_grace_period %q: %v", name, s.StopGracePeriod, err)
			}
		}
		if sd := shutdownTimeout(t, name, cfg); stop <= sd {
			t.Errorf("%s: stop_grace_period %v does not exceed server.shutdown_timeout %v: Docker would SIGKILL draining streams", name, stop, sd)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

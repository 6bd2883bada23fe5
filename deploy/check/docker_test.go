package check

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
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
//
// deploy/compose/docker-compose.yml is the production stack and
// docker-compose.demo.yml the first look. `docker-compose config` (1.29,
// Debian's package) validates and resolves them offline, without an engine;
// the tests read what it prints, as compose would run it.

const (
	composeDir  = "../compose"
	composeProd = composeDir + "/docker-compose.yml"
	composeDemo = composeDir + "/docker-compose.demo.yml"
)

// composeRequired holds the variables the production file refuses to start
// without, each with the placeholder the tests set: distinct values, so each
// can be traced to where compose puts it.
var composeRequired = map[string]string{
	"POSTGRES_PASSWORD":                "placeholder-postgres-password",
	"REDIS_PASSWORD":                   "placeholder-redis-password",
	"FLOWISE_JWT_AUTH_TOKEN_SECRET":    "placeholder-jwt-auth-secret",
	"FLOWISE_JWT_REFRESH_TOKEN_SECRET": "placeholder-jwt-refresh-secret",
	"FLOWISE_EXPRESS_SESSION_SECRET":   "placeholder-session-secret",
	"FLOWISE_TOKEN_HASH_SECRET":        "placeholder-token-hash-secret",
	"GRAFANA_ADMIN_PASSWORD":           "placeholder-grafana-password",
	"FLOWISE_APP_URL":                  "https://flowise.example.com",
}

// composeSecretVars are the required variables that are secrets (the
// rest, FLOWISE_APP_URL, is only required).
func composeSecretVars() map[string]string {
	out := map[string]string{}
	for k, v := range composeRequired {
		if k != "FLOWISE_APP_URL" {
			out[k] = v
		}
	}
	return out
}

// composeStateful maps each service that keeps state to its data path in
// the container, which must be a named volume.
var composeStateful = map[string]string{
	"flowise":    "/root/.flowise",
	"postgres":   "/var/lib/postgresql/data",
	"redis":      "/data",
	"flowgate":   "/var/lib/flowgate",
	"prometheus": "/prometheus",
	"grafana":    "/var/lib/grafana",
}

// composeImages are the production stack's pinned images; flowgate is
// built from the repository's Dockerfile.
var composeImages = map[string]string{
	"flowise":    "flowiseai/flowise:3.1.3",
	"postgres":   "postgres:16.4-alpine",
	"redis":      "redis:7.4.1-alpine",
	"prometheus": "prom/prometheus:v2.53.0",
	"grafana":    "grafana/grafana-oss:11.2.0",
}

// composeTLSModes are FLOWGATE_TLS_MODE's values: each selects
// flowgate.<mode>.yaml.
var composeTLSModes = []string{"acme", "files", "off"}

type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
		Target     string `json:"target"`
	} `json:"build"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	Ports       []any             `json:"ports"`
	DependsOn   map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	Healthcheck *struct {
		Test    []string `json:"test"`
		Disable bool     `json:"disable"`
	} `json:"healthcheck"`
	Volumes         []any          `json:"volumes"`
	Secrets         []any          `json:"secrets"`
	Networks        map[string]any `json:"networks"`
	StopGracePeriod string         `json:"stop_grace_period"`
	User            string         `json:"user"`
	ReadOnly        bool           `json:"read_only"`
	CapDrop         []string       `json:"cap_drop"`
	SecurityOpt     []string       `json:"security_opt"`
}

type composeProject struct {
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
	Networks map[string]*struct {
		Internal bool `json:"internal"`
	} `json:"networks"`
	Secrets map[string]struct {
		File string `json:"file"`
	} `json:"secrets"`
}

// composeRun runs docker-compose on file with exactly env (plus PATH and a
// scratch HOME) and envFile as its --env-file (an empty one when ""), so
// neither the caller's environment nor a real deploy/compose/.env leaks in.
func composeRun(t *testing.T, file, envFile string, env map[string]string, args ...string) ([]byte, error) {
	t.Helper()
	dc := needTool(t, "docker-compose", "apt-get install -y docker-compose; `docker-compose config` needs no engine")
	home := t.TempDir()
	if envFile == "" {
		envFile = filepath.Join(home, "empty.env")
		if err := os.WriteFile(envFile, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	envFile, err := filepath.Abs(envFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dc, append([]string{"-f", file, "--env-file", envFile}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("docker-compose -f %s %s: %v\n%s", file, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// composeConfig validates file (config -q, exit 1 on an unknown key or a
// bad value) and returns it resolved: anchors merged, variables
// interpolated, relative paths made absolute.
func composeConfig(t *testing.T, file string, env map[string]string) *composeProject {
	t.Helper()
	if _, err := composeRun(t, file, "", env, "config", "-q"); err != nil {
		t.Fatal(err)
	}
	out, err := composeRun(t, file, "", env, "config")
	if err != nil {
		t.Fatal(err)
	}
	var p composeProject
	if err := yaml.Unmarshal(out, &p); err != nil {
		t.Fatalf("%s: docker-compose config output: %v", file, err)
	}
	if len(p.Services) == 0 {
		t.Fatalf("%s: no services", file)
	}
	return &p
}

// prodEnv is every required variable set to its placeholder, plus extra.
func prodEnv(extra ...string) map[string]string {
	env := map[string]string{}
	for k, v := range composeRequired {
		env[k] = v
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

func absPath(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// ---- reading the resolved services ---------------------------------------

type composeMount struct {
	Source, Target string
	ReadOnly       bool
	Named          bool // a named volume, not a bind mount
}

// mounts returns a service's volumes, short syntax ("src:dst:mode", as 1.29
// prints it) or long.
func (s composeService) mounts() []composeMount {
	var out []composeMount
	for _, v := range s.Volumes {
		switch m := v.(type) {
		case string:
			parts := strings.Split(m, ":")
			if len(parts) == 1 {
				out = append(out, composeMount{Target: parts[0]}) // anonymous
				continue
			}
			mt := composeMount{Source: parts[0], Target: parts[1]}
			if len(parts) > 2 {
				for _, o := range strings.Split(parts[2], ",") {
					mt.ReadOnly = mt.ReadOnly || o == "ro"
				}
			}
			mt.Named = !filepath.IsAbs(mt.Source) && !strings.HasPrefix(mt.Source, ".") && !strings.HasPrefix(mt.Source, "~")
			out = append(out, mt)
		case map[string]any:
			ro, _ := m["read_only"].(bool)
			out = append(out, composeMount{Source: fmt.Sprint(m["source"]), Target: fmt.Sprint(m["target"]), ReadOnly: ro, Named: m["type"] == "volume"})
		}
	}
	return out
}

// mountAt returns the mount whose container path is target.
func (s composeService) mountAt(target string) (composeMount, bool) {
	for _, m := range s.mounts() {
		if m.Target == target {
			return m, true
		}
	}
	return composeMount{}, false
}

// mountOf returns the mount a container path lies in (the deepest).
func (s composeService) mountOf(path string) (composeMount, bool) {
	var best composeMount
	found := false
	for _, m := range s.mounts() {
		if (path == m.Target || strings.HasPrefix(path, strings.TrimSuffix(m.Target, "/")+"/")) && len(m.Target) >= len(best.Target) {
			best, found = m, true
		}
	}
	return best, found
}

type composePort struct {
	HostIP, Published, Target string
}

// ports returns a service's published ports.
func (s composeService) ports() []composePort {
	var out []composePort
	for _, p := range s.Ports {
		switch v := p.(type) {
		case string:
			v, _, _ = strings.Cut(v, "/")
			parts := strings.Split(v, ":")
			switch len(parts) {
			case 1:
				out = append(out, composePort{Target: parts[0]})
			case 2:
				out = append(out, composePort{Published: parts[0], Target: parts[1]})
			default:
				n := len(parts)
				out = append(out, composePort{HostIP: strings.Join(parts[:n-2], ":"), Published: parts[n-2], Target: parts[n-1]})
			}
		case map[string]any:
			cp := composePort{Target: fmt.Sprint(v["target"])}
			if v["published"] != nil {
				cp.Published = fmt.Sprint(v["published"])
			}
			if v["host_ip"] != nil {
				cp.HostIP = fmt.Sprint(v["host_ip"])
			}
			out = append(out, cp)
		}
	}
	return out
}

// networks returns the networks a service joins (default when none).
func (s composeService) networks() []string {
	if len(s.Networks) == 0 {
		return []string{"default"}
	}
	var out []string
	for n := range s.Networks {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func shareNetwork(a, b composeService) bool {
	for _, x := range a.networks() {
		if contains(b.networks(), x) {
			return true
		}
	}
	return false
}

// arg returns the value after flag in a command ("--flag v" or "--flag=v").
func arg(cmd []string, flag string) (string, bool) {
	for i, a := range cmd {
		if a == flag && i+1 < len(cmd) {
			return cmd[i+1], true
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v, true
		}
	}
	return "", false
}

// pinnedImage reports whether ref names a fixed version: a digest, or a tag
// other than latest.
func pinnedImage(ref string) bool {
	if strings.Contains(ref, "@sha256:") {
		return true
	}
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon < slash+1 {
		return false
	}
	tag := ref[colon+1:]
	return tag != "" && tag != "latest" && !strings.ContainsAny(tag, "${}")
}

// checkComposeBasics asserts what every service of both files needs: a
// healthcheck, a pinned image or a build from the repository's Dockerfile,
// waits only on healthy services, no privilege gain, and named volumes
// that are declared (each used by one service: flowgate's embedded store,
// Postgres and Redis all lock their files).
func checkComposeBasics(t *testing.T, file string, p *composeProject) {
	t.Helper()
	_, finalStage := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	stages := map[string]bool{finalStage: true}
	ins, _ := parseDockerfile(t, filepath.Join(repoRoot, "Dockerfile"))
	for _, in := range ins {
		if in.Cmd == "FROM" {
			stages[in.Stage] = true
		}
	}
	usedBy := map[string]string{}
	for name, s := range p.Services {
		where := file + ": " + name
		if s.Healthcheck == nil || s.Healthcheck.Disable || len(s.Healthcheck.Test) == 0 || s.Healthcheck.Test[0] == "NONE" {
			t.Errorf("%s: no healthcheck", where)
		}
		if s.Build != nil {
			if s.Build.Context != absPath(t, repoRoot) || (s.Build.Dockerfile != "" && s.Build.Dockerfile != "Dockerfile") {
				t.Errorf("%s: built from %s/%s, want the repository's Dockerfile", where, s.Build.Context, s.Build.Dockerfile)
			}
			if !stages[s.Build.Target] {
				t.Errorf("%s: build target %q is not a stage of the Dockerfile", where, s.Build.Target)
			}
		} else if !pinnedImage(s.Image) {
			t.Errorf("%s: image %q is not pinned (a tag other than latest, or a digest)", where, s.Image)
		}
		if s.User != "" && isRootUser(s.User) {
			t.Errorf("%s: runs as root (user %q)", where, s.User)
		}
		if !contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: security_opt lacks no-new-privileges:true", where)
		}
		for dep, d := range s.DependsOn {
			if d.Condition != "service_healthy" {
				t.Errorf("%s: depends_on %s is %q, want condition: service_healthy", where, dep, d.Condition)
			}
			if ds, ok := p.Services[dep]; !ok || ds.Healthcheck == nil {
				t.Errorf("%s: waits for %s to be healthy, which has no healthcheck", where, dep)
			}
		}
		for _, m := range s.mounts() {
			if m.Source == "" {
				t.Errorf("%s: anonymous volume at %s: its data is lost on `up` after a change; name it", where, m.Target)
				continue
			}
			if !m.Named {
				if _, err := os.Stat(m.Source); err != nil && !strings.Contains(m.Source, "/secrets") {
					t.Errorf("%s: bind mount source %s: %v", where, m.Source, err)
				}
				continue
			}
			if _, ok := p.Volumes[m.Source]; !ok {
				t.Errorf("%s: volume %s is not declared under the top-level volumes", where, m.Source)
			}
			if other, ok := usedBy[m.Source]; ok && other != name {
				t.Errorf("%s: volume %s is also mounted by %s", where, m.Source, other)
			}
			usedBy[m.Source] = name
		}
	}
	for v := range p.Volumes {
		if _, ok := usedBy[v]; !ok {
			t.Errorf("%s: volume %s is declared and mounted by no service", file, v)
		}
	}
}

// ---- the files are valid and need what they should ------------------------

func TestComposeFilesValidate(t *testing.T) {
	// The demo needs nothing: no .env, no secret.
	composeConfig(t, composeDemo, nil)
	// The production file, with every required value, in each TLS mode.
	for _, mode := range composeTLSModes {
		composeConfig(t, composeProd, prodEnv("FLOWGATE_TLS_MODE", mode))
	}
}

// No secret has a default: without any one of them compose refuses the
// file, naming it, instead of starting with a known password.
func TestComposeProdRequiresSecrets(t *testing.T) {
	names := make([]string, 0, len(composeRequired))
	for k := range composeRequired {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		env := prodEnv()
		delete(env, name)
		_, err := composeRun(t, composeProd, "", env, "config", "-q")
		if err == nil {
			t.Errorf("docker-compose config passes without %s", name)
		} else if !strings.Contains(err.Error(), name) {
			t.Errorf("docker-compose config fails without %s, but does not name it: %v", name, err)
		}
		env[name] = ""
		if _, err := composeRun(t, composeProd, "", env, "config", "-q"); err == nil {
			t.Errorf("docker-compose config passes with %s empty", name)
		}
	}
}

// envExample reads .env.example: its keys in order, their values, and
// whether a comment line comes right before each.
func envExample(t *testing.T) (keys []string, values map[string]string, commented map[string]bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(composeDir, ".env.example"))
	if err != nil {
		t.Fatal(err)
	}
	values, commented = map[string]string{}, map[string]bool{}
	prevComment := false
	for i, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "":
			prevComment = false
		case strings.HasPrefix(l, "#"):
			prevComment = true
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || !regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`).MatchString(k) {
				t.Errorf(".env.example line %d: %q is not KEY=value", i+1, l)
				continue
			}
			if _, dup := values[k]; dup {
				t.Errorf(".env.example: %s twice", k)
			}
			keys = append(keys, k)
			values[k] = v
			commented[k] = prevComment
		}
	}
	return keys, values, commented
}

var composeVarRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)`)

// composeVars returns the variables a compose file interpolates.
func composeVars(t *testing.T, file string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range composeVarRef.FindAllStringSubmatchIndex(string(data), -1) {
		if m[0] > 0 && data[m[0]-1] == '$' {
			continue // $${...}: escaped, for the container's shell
		}
		out[string(data[m[2]:m[3]])] = true
	}
	return out
}

// .env.example documents every variable of the production file, each under
// a comment, and leaves every secret empty: compose refuses it as is, and
// takes it once the secrets are filled in.
func TestComposeEnvExample(t *testing.T) {
	keys, values, commented := envExample(t)
	used := composeVars(t, composeProd)
	for v := range used {
		if _, ok := values[v]; !ok {
			t.Errorf("docker-compose.yml uses ${%s}, which .env.example does not list", v)
		}
	}
	for _, k := range keys {
		if !used[k] && !strings.HasPrefix(k, "COMPOSE_") {
			t.Errorf(".env.example lists %s, which docker-compose.yml does not use", k)
		}
		if !commented[k] {
			t.Errorf(".env.example: %s has no comment right above it", k)
		}
	}
	for k := range composeRequired {
		if v, ok := values[k]; ok && v != "" {
			t.Errorf(".env.example: %s=%q: required values are left empty, for each site to fill in", k, v)
		}
	}
	if values["COMPOSE_PROJECT_NAME"] == "" {
		t.Error(".env.example does not set COMPOSE_PROJECT_NAME: the project (and its volumes) would be named after the folder, compose")
	}

	example := filepath.Join(composeDir, ".env.example")
	if _, err := composeRun(t, composeProd, example, nil, "config", "-q"); err == nil {
		t.Error("docker-compose config passes with .env.example as it is: a secret has a value or no requirement")
	}
	// Filled in (the shell's values win over the file's), it is valid, and
	// its TLS mode and secret paths are the defaults.
	out, err := composeRun(t, composeProd, example, prodEnv(), "config")
	if err != nil {
		t.Fatal(err)
	}
	var p composeProject
	if err := yaml.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	gate := p.Services["flowgate"]
	if m, ok := gate.mountAt("/etc/flowgate/flowgate.yaml"); !ok || m.Source != absPath(t, filepath.Join(composeDir, "flowgate."+values["FLOWGATE_TLS_MODE"]+".yaml")) {
		t.Errorf("with .env.example, flowgate's config is %+v, want flowgate.%s.yaml", m, values["FLOWGATE_TLS_MODE"])
	}
	if !contains(composeTLSModes, values["FLOWGATE_TLS_MODE"]) {
		t.Errorf(".env.example: FLOWGATE_TLS_MODE=%q, want one of %v", values["FLOWGATE_TLS_MODE"], composeTLSModes)
	}
}

// .env and secrets/ never reach git.
func TestComposeGitignore(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(composeDir, ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	if !lines[".env"] && !lines["/.env"] {
		t.Error("deploy/compose/.gitignore does not ignore .env")
	}
	if !lines["secrets/"] && !lines["/secrets/"] {
		t.Error("deploy/compose/.gitignore does not ignore secrets/")
	}
	if _, err := os.Stat(filepath.Join(composeDir, ".env")); err == nil {
		t.Log("deploy/compose/.env exists (ignored by git); the tests do not read it")
	}
}

var (
	secretName   = regexp.MustCompile(`(?i)PASSWORD|SECRET|TOKEN|_AUTH$|_KEY$`)
	requiredRef  = regexp.MustCompile(`^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$`)
	emptyDefault = regexp.MustCompile(`^\$\{[A-Za-z_][A-Za-z0-9_]*:?-\}$`)
	withDefault  = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*):?-([^}]*)\}`)
)

// secretKey reports whether a variable's name says it holds a secret (and
// not the path of one).
func secretKey(k string) bool {
	for _, suffix := range []string{"_FILE", "_DIR", "_PATH"} {
		if strings.HasSuffix(k, suffix) {
			return false
		}
	}
	return secretName.MatchString(k)
}

// No secret is written in either file: every environment value under a
// secret's name, and Redis's --requirepass, is a reference to a variable
// without a default (or with an empty one); no secret variable has a
// default anywhere. Resolved, each such value is one of the placeholders,
// and no healthcheck carries one on its command line.
func TestComposeNoInlineSecrets(t *testing.T) {
	for _, file := range []string{composeProd, composeDemo} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range withDefault.FindAllStringSubmatch(string(data), -1) {
			name, def := m[1], m[2]
			if secretKey(name) && def != "" {
				t.Errorf("%s: ${%s} has the default %q: a secret must come from .env", file, name, def)
			}
		}
		var raw struct {
			Services map[string]struct {
				Environment any `json:"environment"`
				Command     any `json:"command"`
			} `json:"services"`
		}
		if err := yaml.Unmarshal(data, &raw); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for name, s := range raw.Services {
			env := map[string]string{}
			switch e := s.Environment.(type) {
			case map[string]any:
				for k, v := range e {
					env[k] = fmt.Sprint(v)
				}
			case []any:
				for _, kv := range e {
					k, v, _ := strings.Cut(fmt.Sprint(kv), "=")
					env[k] = v
				}
			}
			for k, v := range env {
				if secretKey(k) && !requiredRef.MatchString(v) && !emptyDefault.MatchString(v) {
					t.Errorf("%s: %s: %s is %q, not ${VARIABLE:?...} from .env", file, name, k, v)
				}
			}
			if cmd, ok := s.Command.([]any); ok {
				var args []string
				for _, a := range cmd {
					args = append(args, fmt.Sprint(a))
				}
				if v, ok := arg(args, "--requirepass"); ok && !requiredRef.MatchString(v) {
					t.Errorf("%s: %s: --requirepass %q, not ${VARIABLE:?...} from .env", file, name, v)
				}
			}
		}
	}

	placeholders := map[string]bool{}
	for _, v := range composeSecretVars() {
		placeholders[v] = true
	}
	p := composeConfig(t, composeProd, prodEnv())
	for name, s := range p.Services {
		for k, v := range s.Environment {
			if secretKey(k) && !placeholders[v] {
				t.Errorf("prod: %s: %s resolves to %q, not a value from the environment", name, k, v)
			}
		}
		if s.Healthcheck != nil {
			hc := strings.Join(s.Healthcheck.Test, " ")
			for v := range placeholders {
				if strings.Contains(hc, v) {
					t.Errorf("prod: %s: the healthcheck carries a secret on its command line: %s", name, hc)
				}
			}
		}
	}
	d := composeConfig(t, composeDemo, nil)
	for name, s := range d.Services {
		for k, v := range s.Environment {
			if secretKey(k) && v != "" {
				t.Errorf("demo: %s: %s is %q with nothing set", name, k, v)
			}
		}
	}
}

// ---- the production stack ---------------------------------------------------

func TestComposeProd(t *testing.T) {
	p := composeConfig(t, composeProd, prodEnv())
	checkComposeBasics(t, "prod", p)

	for _, name := range []string{"flowise", "postgres", "redis", "flowgate", "prometheus", "grafana"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("no %s service", name)
		}
	}
	for name, want := range composeImages {
		if s := p.Services[name]; s.Image != want || s.Build != nil {
			t.Errorf("%s: image %q (build %v), want the pinned %s", name, s.Image, s.Build != nil, want)
		}
	}
	if b := p.Services["flowgate"].Build; b == nil || b.Target != "flowgate" {
		t.Error("flowgate: not built from the Dockerfile's flowgate target")
	}

	// State on named volumes.
	for name, path := range composeStateful {
		m, ok := p.Services[name].mountAt(path)
		if !ok || !m.Named || m.ReadOnly {
			t.Errorf("%s: %s is not on a writable named volume (%+v)", name, path, m)
		}
	}

	// Only flowgate faces the network, on 80 and 443; the rest is on
	// loopback or unpublished.
	for name, s := range p.Services {
		for _, cp := range s.ports() {
			if cp.Published == "" {
				continue
			}
			if cp.HostIP == "127.0.0.1" || cp.HostIP == "::1" {
				continue
			}
			if name != "flowgate" || !((cp.Published == "80" && cp.Target == "8080") || (cp.Published == "443" && cp.Target == "8443")) {
				t.Errorf("%s publishes %s:%s->%s on every interface; only flowgate's 80 and 443 may", name, cp.HostIP, cp.Published, cp.Target)
			}
		}
	}
	for _, name := range []string{"flowise", "postgres", "redis"} {
		if ps := p.Services[name].ports(); len(ps) > 0 {
			t.Errorf("%s publishes %v: everything goes through flowgate", name, ps)
		}
	}

	// Postgres and Redis sit on internal networks only, which Prometheus
	// and Grafana do not join.
	for _, name := range []string{"postgres", "redis"} {
		for _, n := range p.Services[name].networks() {
			if nw := p.Networks[n]; nw == nil || !nw.Internal {
				t.Errorf("%s joins network %s, which is not internal: no route out is needed", name, n)
			}
		}
		for _, other := range []string{"prometheus", "grafana"} {
			if shareNetwork(p.Services[name], p.Services[other]) {
				t.Errorf("%s shares a network with %s", name, other)
			}
		}
	}

	// Postgres, and Flowise on it.
	pg, fl := p.Services["postgres"], p.Services["flowise"]
	if pg.Environment["POSTGRES_PASSWORD"] != composeRequired["POSTGRES_PASSWORD"] {
		t.Errorf("postgres: POSTGRES_PASSWORD is not taken from POSTGRES_PASSWORD")
	}
	if pg.Healthcheck == nil || !strings.Contains(strings.Join(pg.Healthcheck.Test, " "), "pg_isready") {
		t.Error("postgres: the healthcheck does not run pg_isready")
	}
	for k, want := range map[string]string{
		"DATABASE_TYPE":            "postgres",
		"DATABASE_HOST":            "postgres",
		"DATABASE_PORT":            "5432",
		"DATABASE_USER":            pg.Environment["POSTGRES_USER"],
		"DATABASE_NAME":            pg.Environment["POSTGRES_DB"],
		"DATABASE_PASSWORD":        composeRequired["POSTGRES_PASSWORD"],
		"APP_URL":                  composeRequired["FLOWISE_APP_URL"],
		"JWT_AUTH_TOKEN_SECRET":    composeRequired["FLOWISE_JWT_AUTH_TOKEN_SECRET"],
		"JWT_REFRESH_TOKEN_SECRET": composeRequired["FLOWISE_JWT_REFRESH_TOKEN_SECRET"],
		"EXPRESS_SESSION_SECRET":   composeRequired["FLOWISE_EXPRESS_SESSION_SECRET"],
		"TOKEN_HASH_SECRET":        composeRequired["FLOWISE_TOKEN_HASH_SECRET"],
	} {
		if got := fl.Environment[k]; got != want || want == "" {
			t.Errorf("flowise: %s=%q, want %q", k, got, want)
		}
	}
	if _, ok := fl.DependsOn["postgres"]; !ok {
		t.Error("flowise does not wait for postgres")
	}
	if !shareNetwork(fl, pg) {
		t.Error("flowise and postgres share no network")
	}

	// Redis: persistent, with a password, probed without it on the command line.
	rd := p.Services["redis"]
	if v, _ := arg(rd.Command, "--appendonly"); v != "yes" {
		t.Errorf("redis: command %v lacks --appendonly yes", rd.Command)
	}
	pass, _ := arg(rd.Command, "--requirepass")
	if pass != composeRequired["REDIS_PASSWORD"] {
		t.Errorf("redis: --requirepass is not taken from REDIS_PASSWORD")
	}
	if rd.Environment["REDISCLI_AUTH"] != pass {
		t.Error("redis: REDISCLI_AUTH (the healthcheck's password) differs from --requirepass")
	}
	if rd.Healthcheck == nil || !strings.Contains(strings.Join(rd.Healthcheck.Test, " "), "ping") {
		t.Error("redis: the healthcheck does not ping")
	}

	// flowgate.
	gate := p.Services["flowgate"]
	if gate.User == "" || isRootUser(gate.User) || !gate.ReadOnly || !contains(gate.CapDrop, "ALL") {
		t.Errorf("flowgate: user %q, read_only %v, cap_drop %v; want non-root, read-only, ALL dropped", gate.User, gate.ReadOnly, gate.CapDrop)
	}
	if gate.Environment["FLOWGATE_REDIS_PASSWORD"] != pass {
		t.Error("flowgate: FLOWGATE_REDIS_PASSWORD is not Redis's password")
	}
	if gate.Healthcheck == nil || !strings.Contains(strings.Join(gate.Healthcheck.Test, " "), "flowgate healthcheck") {
		t.Error("flowgate: the healthcheck does not run `flowgate healthcheck`")
	}
	pub := map[string]composePort{}
	for _, cp := range gate.ports() {
		pub[cp.Published] = cp
	}
	if pub["80"].Target != "8080" || pub["443"].Target != "8443" {
		t.Errorf("flowgate publishes %v; want 80->8080 and 443->8443", gate.ports())
	}
	if m := pub[fmt.Sprint(metricsPort)]; m.Target != fmt.Sprint(metricsPort) || m.HostIP != "127.0.0.1" {
		t.Errorf("flowgate: metrics %+v, want 127.0.0.1:%d->%d", m, metricsPort, metricsPort)
	}
	for _, dir := range []string{"/var/lib/flowgate", "/tmp"} {
		if m, ok := gate.mountAt(dir); !ok || !m.Named || m.ReadOnly {
			t.Errorf("flowgate: %s is not a writable named volume (the root is read-only)", dir)
		}
	}

	for _, mode := range composeTLSModes {
		t.Run("tls="+mode, func(t *testing.T) {
			pm := p
			if mode != "acme" {
				pm = composeConfig(t, composeProd, prodEnv("FLOWGATE_TLS_MODE", mode))
			}
			checkComposeGateway(t, pm, mode)
		})
	}
}

// checkComposeGateway follows flowgate's mounted config in one TLS mode: it
// is flowgate.<mode>.yaml, passed with -config; its upstream and Redis are
// services flowgate waits for; its secrets are compose's; its listeners are
// the published ports; Docker waits longer than it drains.
func checkComposeGateway(t *testing.T, p *composeProject, mode string) {
	t.Helper()
	gate := p.Services["flowgate"]
	cfgPath, ok := arg(gate.Command, "-config")
	if !ok {
		t.Fatalf("flowgate: command %v passes no -config", gate.Command)
	}
	m, ok := gate.mountAt(cfgPath)
	want := absPath(t, filepath.Join(composeDir, "flowgate."+mode+".yaml"))
	if !ok || m.Source != want || !m.ReadOnly {
		t.Fatalf("flowgate: %s is mounted from %+v, want %s read-only", cfgPath, m, want)
	}
	data, err := os.ReadFile(m.Source)
	if err != nil {
		t.Fatal(err)
	}
	where := "flowgate." + mode + ".yaml"
	cfg := parseGateConfig(t, where, data)
	if cfg.TLS.Mode != mode {
		t.Errorf("%s: tls.mode %q, want %q", where, cfg.TLS.Mode, mode)
	}

	for _, u := range cfg.Upstreams {
		pu, err := url.Parse(u.URL)
		if err != nil {
			continue
		}
		if _, ok := gate.DependsOn[pu.Hostname()]; !ok {
			t.Errorf("%s: upstream %s is not a service flowgate waits for", where, u.URL)
		}
		if svc, ok := p.Services[pu.Hostname()]; !ok || !shareNetwork(gate, svc) {
			t.Errorf("%s: upstream %s is not a service on flowgate's networks", where, u.URL)
		}
	}
	host, _, err := net.SplitHostPort(cfg.Redis.Addr)
	if err != nil {
		t.Errorf("%s: redis.addr %q: %v", where, cfg.Redis.Addr, err)
	} else if _, ok := gate.DependsOn[host]; !ok || !shareNetwork(gate, p.Services[host]) {
		t.Errorf("%s: redis.addr %s is not a service flowgate waits for on its networks", where, cfg.Redis.Addr)
	}
	if cfg.Redis.Password != "" || cfg.Redis.PasswordFile != "" {
		t.Errorf("%s: the Redis password is set in the file; compose gives it as FLOWGATE_REDIS_PASSWORD", where)
	}

	secretOK := false
	for _, sec := range gate.Secrets {
		src := fmt.Sprint(sec)
		if sm, ok := sec.(map[string]any); ok {
			src = fmt.Sprint(sm["source"])
		}
		if d, declared := p.Secrets[src]; declared && d.File != "" && cfg.Admin.TokenFile == "/run/secrets/"+src {
			secretOK = true
		}
	}
	if !secretOK {
		t.Errorf("%s: admin.token_file %q is not a file-backed compose secret of flowgate", where, cfg.Admin.TokenFile)
	}

	// The listeners are what compose publishes.
	targets := map[string]string{}
	for _, cp := range gate.ports() {
		targets[cp.Target] = cp.Published
	}
	if _, ok := targets[portOf(cfg.Server.Listen, proxyPort)]; !ok {
		t.Errorf("%s: server.listen %q is not published", where, cfg.Server.Listen)
	}
	if mode != "off" {
		listen := cfg.TLS.Listen
		if listen == "" {
			listen = ":8443"
		}
		pubTLS, ok := targets[portOf(listen, 8443)]
		if !ok {
			t.Errorf("%s: tls.listen %q is not published", where, listen)
		}
		rp := cfg.TLS.RedirectPort
		if rp == 0 {
			rp = 443
		}
		if pubTLS != fmt.Sprint(rp) {
			t.Errorf("%s: tls.redirect_port %d, but tls.listen is published on %s: the redirects would miss", where, rp, pubTLS)
		}
		if cfg.TLS.RedirectHTTP != nil && !*cfg.TLS.RedirectHTTP {
			t.Errorf("%s: redirect_http is off: plain HTTP on port 80 would serve Flowise", where)
		}
		if cfg.TLS.HSTS == "" {
			t.Errorf("%s: no tls.hsts", where)
		}
	}
	switch mode {
	case "files":
		for key, f := range map[string]string{"cert_file": cfg.TLS.CertFile, "key_file": cfg.TLS.KeyFile} {
			if !filepath.IsAbs(f) {
				t.Errorf("%s: tls.%s %q is not an absolute path in the container", where, key, f)
				continue
			}
			if mt, ok := gate.mountOf(f); !ok || mt.Named || !mt.ReadOnly || mt.Target == "/" {
				t.Errorf("%s: tls.%s %s is not inside a read-only bind mount (FLOWGATE_TLS_DIR)", where, key, f)
			} else if mt.Target == filepath.Dir(cfgPath) {
				t.Errorf("%s: tls.%s shares the config's mount", where, key)
			}
		}
	case "acme":
		sd := cfg.TLS.StorageDir
		if sd == "" {
			sd = "/var/lib/flowgate/certs"
		}
		if mt, ok := gate.mountOf(sd); !ok || !mt.Named || mt.ReadOnly {
			t.Errorf("%s: tls.storage_dir %s is not on a writable named volume", where, sd)
		}
	}

	stop := 10 * time.Second // Docker's default
	if gate.StopGracePeriod != "" {
		if stop, err = time.ParseDuration(gate.StopGracePeriod); err != nil {
			t.Errorf("flowgate: stop_grace_period %q: %v", gate.StopGracePeriod, err)
		}
	}
	if sd := shutdownTimeout(t, where, cfg); stop <= sd {
		t.Errorf("flowgate: stop_grace_period %v does not exceed server.shutdown_timeout %v: Docker would SIGKILL draining streams", stop, sd)
	}
}

// portOf returns the port of a listen address, or def when it is empty.
func portOf(addr string, def int) string {
	if addr == "" {
		return fmt.Sprint(def)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return port
}

// Prometheus reads the config compose mounts, which scrapes flowgate on
// its metrics port and loads alerts.yml, mounted beside it; Grafana gets
// the provisioning and the dashboards where the provider looks.
func TestComposeProdMonitoring(t *testing.T) {
	p := composeConfig(t, composeProd, prodEnv())
	prom, graf, gate := p.Services["prometheus"], p.Services["grafana"], p.Services["flowgate"]

	cfgPath, ok := arg(prom.Command, "--config.file")
	if !ok {
		t.Fatalf("prometheus: command %v has no --config.file", prom.Command)
	}
	m, ok := prom.mountAt(cfgPath)
	if !ok || m.Source != absPath(t, prometheusConfig) || !m.ReadOnly {
		t.Fatalf("prometheus: %s is mounted from %+v, want %s read-only", cfgPath, m, prometheusConfig)
	}
	var cfg struct {
		RuleFiles     []string `json:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			MetricsPath   string `json:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	data, err := os.ReadFile(m.Source)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", m.Source, err)
	}
	scraped := false
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port, err := net.SplitHostPort(target)
				if err != nil || host != "flowgate" || port != fmt.Sprint(metricsPort) {
					continue
				}
				scraped = true
				if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
					t.Errorf("prometheus: job %s scrapes %s, want /metrics", sc.JobName, sc.MetricsPath)
				}
			}
		}
	}
	if !scraped {
		t.Errorf("prometheus: no scrape target flowgate:%d", metricsPort)
	}
	if _, ok := p.Services["flowgate"]; !ok || !shareNetwork(prom, gate) {
		t.Error("prometheus shares no network with the flowgate service it scrapes")
	}
	// flowgate's metrics listener, in the mounted config, is that port.
	if gm, ok := gate.mountAt("/etc/flowgate/flowgate.yaml"); ok {
		if data, err := os.ReadFile(gm.Source); err == nil {
			c := parseGateConfig(t, filepath.Base(gm.Source), data)
			if portOf(c.Server.MetricsListen, metricsPort) != fmt.Sprint(metricsPort) {
				t.Errorf("flowgate's metrics_listen %q is not the scraped port %d", c.Server.MetricsListen, metricsPort)
			}
		}
	}
	hasAlerts := false
	for _, rf := range cfg.RuleFiles {
		in := rf
		if !filepath.IsAbs(in) {
			in = filepath.Join(filepath.Dir(cfgPath), rf)
		}
		rm, ok := prom.mountAt(in)
		if !ok {
			t.Errorf("prometheus: rule file %s (%s in the container) is not mounted", rf, in)
			continue
		}
		if _, err := os.Stat(rm.Source); err != nil {
			t.Errorf("prometheus: rule file %s: %v", rf, err)
		}
		if rm.Source == absPath(t, prometheusAlerts) {
			hasAlerts = true
		}
	}
	if !hasAlerts || !contains(cfg.RuleFiles, "alerts.yml") {
		t.Errorf("prometheus: rule_files %v do not load deploy/prometheus/alerts.yml as mounted", cfg.RuleFiles)
	}
	if hc := prom.Healthcheck; hc == nil || !strings.Contains(strings.Join(hc.Test, " "), "/-/ready") {
		t.Error("prometheus: the healthcheck does not probe /-/ready")
	}

	for target, src := range map[string]string{
		"/etc/grafana/provisioning": grafanaDir,
		grafanaDashboards:           filepath.Join(repoRoot, "dashboards"),
	} {
		gm, ok := graf.mountAt(target)
		if !ok || gm.Source != absPath(t, src) || !gm.ReadOnly {
			t.Errorf("grafana: %s is mounted from %+v, want %s read-only", target, gm, src)
		}
	}
	if _, err := os.Stat(filepath.Join(repoRoot, "dashboards", "flowgate.json")); err != nil {
		t.Error(err)
	}
	if hc := graf.Healthcheck; hc == nil || !strings.Contains(strings.Join(hc.Test, " "), "/api/health") {
		t.Error("grafana: the healthcheck does not probe /api/health")
	}
	if graf.Environment["GF_SECURITY_ADMIN_PASSWORD"] != composeRequired["GRAFANA_ADMIN_PASSWORD"] {
		t.Error("grafana: GF_SECURITY_ADMIN_PASSWORD is not taken from GRAFANA_ADMIN_PASSWORD")
	}
	// The provisioned data source is http://prometheus:9090.
	if !shareNetwork(graf, prom) {
		t.Error("grafana shares no network with prometheus, its data source")
	}
	if _, ok := graf.DependsOn["prometheus"]; !ok {
		t.Error("grafana does not wait for prometheus")
	}
}

// ---- the demo ------------------------------------------------------------------

func TestComposeDemo(t *testing.T) {
	p := composeConfig(t, composeDemo, nil)
	checkComposeBasics(t, "demo", p)
	fake, ok := p.Services["fakeflow"]
	if !ok || fake.Build == nil || fake.Build.Target != "fakeflow" {
		t.Fatal("demo: no fakeflow service built from the Dockerfile's fakeflow target")
	}
	if l, _ := arg(fake.Command, "-listen"); l == "" || strings.HasPrefix(l, "127.") || strings.HasPrefix(l, "localhost") {
		t.Errorf("demo: fakeflow listens on %q: other containers cannot reach loopback", l)
	}
	var gate composeService
	n := 0
	for name, s := range p.Services {
		if s.Build != nil && s.Build.Target == "flowgate" {
			gate, n = s, n+1
			_ = name
		}
	}
	if n != 1 {
		t.Fatalf("demo: %d services built from the flowgate target, want 1", n)
	}
	if gate.User == "" || isRootUser(gate.User) || !gate.ReadOnly || !contains(gate.CapDrop, "ALL") {
		t.Errorf("demo flowgate: user %q, read_only %v, cap_drop %v", gate.User, gate.ReadOnly, gate.CapDrop)
	}
	if len(gate.Secrets) > 0 || len(p.Secrets) > 0 {
		t.Error("demo: uses compose secrets; it must run with nothing to prepare")
	}
	pubProxy := false
	for _, cp := range gate.ports() {
		if cp.Target == fmt.Sprint(proxyPort) && cp.Published != "" {
			pubProxy = true
		}
		if cp.Target == fmt.Sprint(metricsPort) && cp.HostIP != "127.0.0.1" {
			t.Errorf("demo: metrics published on %q, want 127.0.0.1", cp.HostIP)
		}
	}
	if !pubProxy {
		t.Errorf("demo: flowgate does not publish %d", proxyPort)
	}
	for _, dir := range []string{"/var/lib/flowgate", "/tmp"} {
		if m, ok := gate.mountAt(dir); !ok || !m.Named || m.ReadOnly {
			t.Errorf("demo: flowgate's %s is not a writable named volume (the root is read-only)", dir)
		}
	}
	cfgPath, _ := arg(gate.Command, "-config")
	m, ok := gate.mountAt(cfgPath)
	if cfgPath == "" || !ok || m.Source != absPath(t, filepath.Join(composeDir, "flowgate.demo.yaml")) {
		t.Fatalf("demo: flowgate's -config %q is not flowgate.demo.yaml as mounted (%+v)", cfgPath, m)
	}
	data, err := os.ReadFile(m.Source)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Server struct {
			Listen, MetricsListen, AdminListen, ShutdownTimeout string
		} `json:"server"`
		Upstreams []struct {
			URL string `json:"url"`
		} `json:"upstreams"`
		Admin struct {
			Token, TokenFile string
		} `json:"admin"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Upstreams) != 1 {
		t.Fatalf("flowgate.demo.yaml: %d upstreams, want fakeflow", len(c.Upstreams))
	}
	u, err := url.Parse(c.Upstreams[0].URL)
	if err != nil || u.Hostname() != "fakeflow" || u.Port() != portOf(mustArg(fake.Command, "-listen"), 0) {
		t.Errorf("flowgate.demo.yaml: upstream %q is not fakeflow's listener", c.Upstreams[0].URL)
	}
	if _, ok := gate.DependsOn["fakeflow"]; !ok {
		t.Error("demo: flowgate does not wait for fakeflow")
	}
	if c.Admin.Token != "" || c.Admin.TokenFile != "" {
		t.Error("flowgate.demo.yaml: sets an admin token; the demo takes FLOWGATE_ADMIN_TOKEN from the environment, if any")
	}
	stop, err := time.ParseDuration(gate.StopGracePeriod)
	sd, _ := time.ParseDuration(c.Server.ShutdownTimeout)
	if sd == 0 {
		sd = 30 * time.Second
	}
	if err != nil || stop <= sd {
		t.Errorf("demo: stop_grace_period %q does not exceed server.shutdown_timeout %v", gate.StopGracePeriod, sd)
	}
}

func mustArg(cmd []string, flag string) string {
	v, _ := arg(cmd, flag)
	return v
}

// ---- flowgate's configs for compose ------------------------------------------

// Every deploy/compose/flowgate.*.yaml passes `flowgate validate` (the
// secrets given by environment, so the container-only files are not
// read); the three production configs differ only in tls:, and the ACME one
// names only placeholder domains (each site writes its own).
func TestComposeFlowgateConfigs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(composeDir, "flowgate.*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no flowgate.*.yaml in %s: %v", composeDir, err)
	}
	want := []string{"flowgate.demo.yaml"}
	for _, m := range composeTLSModes {
		want = append(want, "flowgate."+m+".yaml")
	}
	var got []string
	for _, f := range files {
		got = append(got, filepath.Base(f))
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("flowgate configs %v, want %v (one per FLOWGATE_TLS_MODE, and the demo's)", got, want)
	}

	rest := map[string]string{}
	for _, mode := range composeTLSModes {
		f := filepath.Join(composeDir, "flowgate."+mode+".yaml")
		data, err := os.ReadFile(f)
		if err != nil {
			t.Error(err)
			continue
		}
		var doc map[string]any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		delete(doc, "tls")
		js, _ := json.Marshal(doc)
		rest[mode] = string(js)
		if mode == "acme" {
			var c gateConfig
			if err := yaml.Unmarshal(data, &c); err != nil {
				t.Fatal(err)
			}
			if len(c.TLS.ACME.Domains) == 0 {
				t.Errorf("%s: no tls.acme.domains to edit", f)
			}
			for _, d := range c.TLS.ACME.Domains {
				if !reservedDomain(d) {
					t.Errorf("%s: tls.acme.domains has %q; commit only placeholders (example.com), each site edits its own", f, d)
				}
			}
			if _, dom, _ := strings.Cut(c.TLS.ACME.Email, "@"); c.TLS.ACME.Email != "" && !reservedDomain(dom) {
				t.Errorf("%s: tls.acme.email %q is not a placeholder", f, c.TLS.ACME.Email)
			}
		}
	}
	for _, mode := range composeTLSModes[1:] {
		if rest[mode] != rest["acme"] {
			t.Errorf("flowgate.%s.yaml differs from flowgate.acme.yaml outside tls:; keep them in step", mode)
		}
	}

	mains, _ := filepath.Glob(filepath.Join(repoRoot, "cmd", "flowgate", "*.go"))
	if len(mains) == 0 {
		t.Skip("cmd/flowgate has no Go source")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "flowgate")
	run(t, absPath(t, repoRoot), goBin, "build", "-o", bin, "./cmd/flowgate")
	for _, f := range files {
		cmd := exec.Command(bin, "validate", "-config", f)
		cmd.Env = append(os.Environ(), "FLOWGATE_ADMIN_TOKEN=check-token", "FLOWGATE_REDIS_PASSWORD=check-password")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("flowgate validate -config %s: %v\n%s", f, err, out)
		}
	}
}

// reservedDomain reports whether d is under a name reserved for examples
// (RFC 2606), for which no CA issues.
func reservedDomain(d string) bool {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	for _, r := range []string{"example.com", "example.net", "example.org", "example", "test", "invalid", "localhost"} {
		if d == r || strings.HasSuffix(d, "."+r) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// Environment variables that carry secrets. They beat the *_file keys, which
// beat the inline keys, so a secret never has to sit in the YAML.
const (
	EnvAdminToken    = "FLOWGATE_ADMIN_TOKEN"
	EnvRedisPassword = "FLOWGATE_REDIS_PASSWORD"
)

// maxNodes bounds the work one document may cause. YAML aliases and merge
// keys can make a small file expand exponentially; a real config has a few
// hundred nodes.
const maxNodes = 100_000

// LoadOptions adjusts LoadWith and ParseWith. The zero value is what Load
// and Parse use.
type LoadOptions struct {
	// Getenv looks up the secret environment variables. Default os.Getenv;
	// tests pass a map lookup so they do not depend on the process
	// environment. An empty result counts as unset.
	Getenv func(string) string
	// Overrides are command-line values that replace keys from the file
	// before validation, so a file value that a flag replaces is not
	// validated, and a bad flag value is reported as coming from the flag
	// ("flag -listen: server.listen: ...") rather than from a file line.
	Overrides Overrides
}

// Overrides holds the command-line flags that replace config keys. A nil
// pointer or an empty slice leaves the key as the file (or default) has it.
type Overrides struct {
	Listen        *string  // -listen: server.listen
	MetricsListen *string  // -metrics-listen: server.metrics_listen ("" disables)
	AdminListen   *string  // -admin-listen: server.admin_listen ("" disables)
	Upstreams     []string // -upstream, repeatable: replaces the upstreams list
}

// Load reads the YAML file at path over Default(), applies the secret
// environment variables and files, and validates. An empty path means no
// file: defaults and environment only. On error the Config is the zero
// value; the error is an ErrorList naming every problem with its line,
// unless the file itself could not be read.
func Load(path string) (Config, error) { return LoadWith(path, LoadOptions{}) }

// LoadWith is Load with options. Relative token_file and password_file paths
// are resolved against the config file's directory, so a config and its
// secrets can move together.
func LoadWith(path string, opts LoadOptions) (Config, error) {
	if path == "" {
		return parse(nil, "", "", opts)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return parse(data, path, filepath.Dir(path), opts)
}

// Parse is Load for YAML already in memory; name labels errors
// ("flowgate.yaml:12: ...") and may be empty. Relative secret file paths are
// resolved against the working directory.
func Parse(data []byte, name string) (Config, error) {
	return ParseWith(data, name, LoadOptions{})
}

// ParseWith is Parse with options.
func ParseWith(data []byte, name string, opts LoadOptions) (Config, error) {
	return parse(data, name, "", opts)
}

func parse(data []byte, name, dir string, opts LoadOptions) (Config, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	c := Default()
	d := &decoder{src: &source{file: name, pos: map[string]position{}}, budget: maxNodes}
	root, yerr := parseYAML(data, name)
	if yerr != nil {
		return Config{}, ErrorList{*yerr}
	}
	if root != nil {
		d.value(root, reflect.ValueOf(&c).Elem(), "")
	}
	if d.budget < 0 {
		// The config is half-decoded; validating it would only add noise.
		return Config{}, d.errs.err()
	}
	d.mergeSecurityHeaders(&c)
	c.src = d.src
	c.applyOverrides(opts.Overrides)
	d.secrets(&c, getenv, dir)
	if sd := getenv(EnvStoreDir); sd != "" {
		c.Metering.StoreDir = sd
	}
	errs := d.errs
	for _, e := range c.validate() {
		if !d.failedAt(e.Key) || strings.HasPrefix(e.File, "flag ") {
			errs = append(errs, e)
		}
	}
	if err := errs.err(); err != nil {
		return Config{}, err
	}
	return c, nil
}

var yamlLineErr = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML returns the root node of the single document in data, nil for
// an empty or all-null document.
func parseYAML(data []byte, name string) (*yaml.Node, *Error) {
	syntax := func(err error) *Error {
		e := &Error{File: name, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		if m := yamlLineErr.FindStringSubmatch(err.Error()); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = "invalid YAML: " + m[2]
			lines := strings.Split(string(data), "\n")
			if e.Line >= 1 && e.Line <= len(lines) && strings.Contains(lines[e.Line-1], "\t") {
				e.Msg += " (YAML indents with spaces, not tabs)"
			}
		}
		return e
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, syntax(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntax(err)
	case !isNullDoc(&extra):
		return nil, &Error{File: name, Line: extra.Line, Msg: "a config file holds one YAML document; remove the second \"---\""}
	}
	if isNullDoc(&doc) {
		return nil, nil
	}
	return doc.Content[0], nil
}

func isNullDoc(doc *yaml.Node) bool {
	return doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].ShortTag() == "!!null"
}

// decoder overlays a YAML node tree onto a Config, one key at a time. It
// replaces yaml.v3's own decoding so that every error carries the full key
// path, decoding continues past errors to report them all, and null values
// keep their defaults.
type decoder struct {
	src    *source
	errs   ErrorList
	budget int
	merged map[mergeKey]bool
}

type mergeKey struct {
	node *yaml.Node
	key  string
}

func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) {
	if d.budget < 0 {
		return // the budget error says it all; the rest would be noise
	}
	d.errs = append(d.errs, Error{File: d.src.file, Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// failedAt reports whether decoding key or a key above it already failed,
// so validation does not pile a second message on the same mistake (a list
// item written as a plain value is not also "missing its url").
func (d *decoder) failedAt(key string) bool {
	for _, e := range d.errs {
		if e.Key != "" && (key == e.Key || strings.HasPrefix(key, e.Key+".") || strings.HasPrefix(key, e.Key+"[")) {
			return true
		}
	}
	return false
}

// spend charges one node against the budget and reports whether work may go on.
func (d *decoder) spend(n *yaml.Node) bool {
	if d.budget--; d.budget == -1 {
		d.errs = append(d.errs, Error{File: d.src.file, Line: n.Line,
			Msg: fmt.Sprintf("document too large or too deeply aliased (more than %d nodes)", maxNodes)})
	}
	return d.budget >= 0
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func joinKey(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

var yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()

// value decodes n into v. A null node (an empty value, "~" or "null")
// leaves v at its default.
func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) {
	if !d.spend(n) {
		return
	}
	n = deref(n)
	if n.ShortTag() == "!!null" {
		return
	}
	if v.Addr().Type().Implements(yamlUnmarshaler) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(n, key, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.mapping(n, v, key)
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		before := len(d.errs)
		d.value(n, nv.Elem(), key)
		if len(d.errs) == before {
			v.Set(nv)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, key, `must be a list ("- item" lines or [a, b]), not a %s`, kindName(n))
			return
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			ik := key + "[" + strconv.Itoa(i) + "]"
			d.src.pos[ik] = position{line: item.Line}
			d.value(item, out.Index(i), ik)
		}
		v.Set(out)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.fail(n, key, "must be a mapping of name: value lines, not a %s", kindName(n))
			return
		}
		out := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		d.pairs(n, key, func(kn, vn *yaml.Node) {
			ck := joinKey(key, kn.Value)
			d.src.pos[ck] = position{line: kn.Line}
			elem := reflect.New(v.Type().Elem()).Elem()
			d.value(vn, elem, ck)
			out.SetMapIndex(reflect.ValueOf(kn.Value).Convert(v.Type().Key()), elem)
		})
		v.Set(out)
	default:
		d.scalar(n, v, key)
	}
}

// mapping decodes a YAML mapping onto the struct v; keys not given keep
// their current (default) values.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		what := "the top level"
		switch {
		case strings.HasSuffix(key, "]"):
			what = "each item"
		case key != "":
			what = "this section"
		}
		d.fail(n, key, "%s must be a mapping of key: value lines, not a %s", what, kindName(n))
		return
	}
	fields := yamlFields(v.Type())
	d.pairs(n, key, func(kn, vn *yaml.Node) {
		ck := joinKey(key, kn.Value)
		i, ok := fields[kn.Value]
		if !ok {
			d.fail(kn, ck, "unknown key%s", suggest(v.Type(), key, kn.Value))
			return
		}
		d.src.pos[ck] = position{line: kn.Line}
		d.value(vn, v.Field(i), ck)
	})
}

// pairs calls fn for each key/value of a mapping. Merge keys ("<<: *base")
// are expanded first so explicit keys override merged ones, as YAML says.
func (d *decoder) pairs(n *yaml.Node, key string, fn func(k, v *yaml.Node)) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := deref(n.Content[i]), deref(n.Content[i+1])
		if !isMerge(kn) || !d.spend(kn) {
			continue
		}
		merged := []*yaml.Node{vn}
		if vn.Kind == yaml.SequenceNode {
			merged = vn.Content
		}
		for _, m := range merged {
			if m = deref(m); m.Kind == yaml.MappingNode {
				// Merging one mapping into one place twice changes nothing,
				// and skipping repeats keeps "<<: [*a, *a]" chains linear.
				mk := mergeKey{m, key}
				if d.merged[mk] {
					continue
				}
				if d.merged == nil {
					d.merged = map[mergeKey]bool{}
				}
				d.merged[mk] = true
				d.pairs(m, key, fn)
			} else {
				d.fail(m, key, "<< merges only mappings, not a %s", kindName(m))
			}
		}
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := deref(n.Content[i]), n.Content[i+1]
		if isMerge(kn) || !d.spend(kn) {
			continue
		}
		if kn.Kind != yaml.ScalarNode {
			d.fail(kn, key, "keys must be plain names, not a %s", kindName(kn))
			continue
		}
		if first, dup := seen[kn.Value]; dup {
			d.fail(kn, joinKey(key, kn.Value), "given twice (first at line %d)", first)
			continue
		}
		seen[kn.Value] = kn.Line
		fn(kn, vn)
	}
}

func isMerge(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && n.ShortTag() == "!!merge"
}

// scalar decodes the leaf kinds the schema uses: strings, ints and bools.
// It is stricter than yaml.v3, which would truncate 2.5 to 2 or accept a
// quoted "3" for an int.
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, key, "must be a single value, not a %s", kindName(n))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(n.Value)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.ShortTag() != "!!int" || n.Decode(&i) != nil {
			d.fail(n, key, "must be a whole number, not %q", n.Value)
			return
		}
		if v.OverflowInt(i) {
			d.fail(n, key, "%s is too large", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Bool:
		var b bool
		if err := n.Decode(&b); err != nil {
			d.fail(n, key, "must be true or false, not %q", n.Value)
			return
		}
		v.SetBool(b)
	default:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(n, key, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
	}
}

// yamlFields maps yaml tag names to field indexes. Fields without a tag
// (such as Config.src) are not part of the schema.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if tag != "" && tag != "-" {
			m[tag] = i
		}
	}
	return m
}

// mergeSecurityHeaders overlays the security_headers the file gave onto the
// defaults, in canonical header case, so Config shows what will be sent and
// "x-frame-options: DENY" replaces the default X-Frame-Options instead of
// sitting next to it.
func (d *decoder) mergeSecurityHeaders(c *Config) {
	const key = "proxy.security_headers"
	if _, given := d.src.pos[key]; !given {
		return
	}
	user := c.Proxy.SecurityHeaders
	names := make([]string, 0, len(user))
	for k := range user {
		names = append(names, k)
	}
	sort.Strings(names)
	out := defaultSecurityHeaders()
	first := map[string]string{}
	for _, k := range names {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if prev, dup := first[ck]; dup {
			p := d.src.pos[joinKey(key, k)]
			d.errs = append(d.errs, Error{File: d.src.file, Line: p.line, Key: joinKey(key, k),
				Msg: fmt.Sprintf("same header as %q (header names ignore case)", prev)})
			continue
		}
		first[ck] = k
		out[ck] = user[k]
		if ck != k {
			d.src.pos[joinKey(key, ck)] = d.src.pos[joinKey(key, k)]
		}
	}
	c.Proxy.SecurityHeaders = out
}

// applyOverrides puts command-line values in place and marks their keys as
// coming from the flag, so errors about them do not point into the file.
func (c *Config) applyOverrides(o Overrides) {
	set := func(key, flag string, dst, v *string) {
		if v == nil {
			return
		}
		*dst = *v
		c.src.forget(key)
		c.src.pos[key] = position{flag: flag}
	}
	set("server.listen", "-listen", &c.Server.Listen, o.Listen)
	set("server.metrics_listen", "-metrics-listen", &c.Server.MetricsListen, o.MetricsListen)
	set("server.admin_listen", "-admin-listen", &c.Server.AdminListen, o.AdminListen)
	if len(o.Upstreams) > 0 {
		c.Upstreams = make([]Upstream, len(o.Upstreams))
		for i, u := range o.Upstreams {
			c.Upstreams[i] = Upstream{URL: u}
		}
		c.src.forget("upstreams")
		c.src.pos["upstreams"] = position{flag: "-upstream"}
	}
}

// secrets resolves the admin token and redis password: environment, then
// file, then the inline key. A file is not read when the environment
// variable is set, so an env-configured deployment may leave a stale path.
func (d *decoder) secrets(c *Config, getenv func(string) string, dir string) {
	resolve := func(env, fileKey, file, inline string) string {
		if v := getenv(env); v != "" {
			return v
		}
		if file == "" {
			return inline
		}
		p := file
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		fileName, line := c.src.locate(fileKey)
		b, err := os.ReadFile(p)
		if err != nil {
			d.errs = append(d.errs, Error{File: fileName, Line: line, Key: fileKey, Msg: "cannot read secret: " + err.Error()})
			return ""
		}
		s := strings.TrimRightFunc(string(b), unicode.IsSpace)
		if s == "" {
			d.errs = append(d.errs, Error{File: fileName, Line: line, Key: fileKey, Msg: fmt.Sprintf("secret file %s is empty", p)})
		}
		return s
	}
	resolveTLSPaths(c, dir)
	if p := c.Proxy.UpstreamTLS.CAFile; p != "" && !filepath.IsAbs(p) && dir != "" {
		c.Proxy.UpstreamTLS.CAFile = filepath.Join(dir, p)
	}
	c.Admin.Token = resolve(EnvAdminToken, "admin.token_file", c.Admin.TokenFile, c.Admin.Token)
	c.Redis.Password = resolve(EnvRedisPassword, "redis.password_file", c.Redis.PasswordFile, c.Redis.Password)
}

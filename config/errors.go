package config

import (
	"sort"
	"strconv"
	"strings"
)

// Error is one problem in a configuration, located as precisely as known.
type Error struct {
	// File is the config file's name, or "flag -listen" and the like for a
	// value set by Overrides; "" for a config built in code.
	File string
	// Line is 1-based; 0 when the key is not written in the file (a default
	// or a value derived from one).
	Line int
	// Key is the dotted key path, e.g. "upstreams[1].url"; "" for problems
	// with the file as a whole (YAML syntax).
	Key string
	// Msg says what is wrong and, where it helps, what to write instead.
	Msg string
}

// Error formats as "flowgate.yaml:12: proxy.max_body_bytes: must be > 0",
// leaving out the parts that are unknown.
func (e Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		b.WriteString(e.File + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem found in one configuration. Load, Parse and
// Validate return it (as error) so one run shows everything to fix.
type ErrorList []Error

// Error puts one problem per line.
func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap exposes each problem to errors.As.
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// sortByLine orders problems as they appear in the file; problems with no
// line keep their relative order after those with one.
func (l ErrorList) sortByLine() {
	sort.SliceStable(l, func(i, j int) bool {
		li, lj := l[i].Line, l[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
}

// err sorts the list and drops exact repeats, which a mapping merged
// ("<<: *base") into several places would otherwise report once per use.
func (l ErrorList) err() error {
	if len(l) == 0 {
		return nil
	}
	seen := make(map[Error]bool, len(l))
	out := l[:0]
	for _, e := range l {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	out.sortByLine()
	return out
}

// source remembers where each key of a config came from, so that Validate,
// which runs on the decoded struct, can still point at file lines.
type source struct {
	file string
	pos  map[string]position
}

type position struct {
	line int
	flag string // set when an Override replaced the key, e.g. "-listen"
}

// locate finds the nearest recorded key at or above key: a derived value
// such as a defaulted upstreams[1].name points at its upstreams[1] item.
func (s *source) locate(key string) (file string, line int) {
	if s == nil {
		return "", 0
	}
	for k := key; k != ""; k = parentKey(k) {
		if p, ok := s.pos[k]; ok {
			if p.flag != "" {
				return "flag " + p.flag, 0
			}
			return s.file, p.line
		}
	}
	return s.file, 0
}

// forget drops key and everything below it, for keys replaced by a flag.
func (s *source) forget(key string) {
	for k := range s.pos {
		if k == key || strings.HasPrefix(k, key+".") || strings.HasPrefix(k, key+"[") {
			delete(s.pos, k)
		}
	}
}

// parentKey strips the last ".name" or "[i]": "a.b[1].c" -> "a.b[1]" -> "a.b".
func parentKey(k string) string {
	i := strings.LastIndexAny(k, ".[")
	if i < 0 {
		return ""
	}
	return k[:i]
}

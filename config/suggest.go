package config

import (
	"reflect"
	"sort"
	"strings"
	"sync"
)

// suggest returns "; did you mean X?" for an unknown key when one valid key
// is an obvious fix, else "". Obvious means, in order: the same words in
// another spelling (maxBodyBytes, max-body-bytes), a typo of at most two
// edits, a single swapped word (max_body_size -> max_body_bytes), a key cut
// short (max_body -> max_body_bytes), or the key one level off (listen at
// the top -> server.listen, proxy.upstreams -> upstreams). Anything less
// sure gets no suggestion, since a wrong hint costs more than none.
func suggest(t reflect.Type, parent, name string) string {
	var keys []string
	for k := range yamlFields(t) {
		keys = append(keys, k)
	}
	if k := closest(keys, name); k != "" {
		return "; did you mean " + joinKey(parent, k) + "?"
	}
	var elsewhere []string
	for _, p := range allKeys() {
		last := p[strings.LastIndexAny(p, ".]")+1:]
		// A key one level off is a likely slip (listen at the top for
		// server.listen, upstreams inside proxy); a leaf in an unrelated
		// section is not (proxy.timeout is not health.active.timeout).
		near := parent == "" || !strings.ContainsAny(p, ".[")
		if near && normKey(last) == normKey(name) && parentKey(p) != parent {
			elsewhere = append(elsewhere, p)
		}
	}
	switch len(elsewhere) {
	case 1:
		return "; did you mean " + elsewhere[0] + "?"
	case 2, 3:
		sort.Strings(elsewhere)
		return "; did you mean " + strings.Join(elsewhere[:len(elsewhere)-1], ", ") + " or " + elsewhere[len(elsewhere)-1] + "?"
	}
	return ""
}

// closest picks the key matching name by the rules of suggest, or "" when
// there is none or more than one equally good.
func closest(keys []string, name string) string {
	for _, k := range keys {
		if normKey(k) == normKey(name) {
			return k
		}
	}
	// Two edits catch most typos; short keys get fewer so "ab" does not
	// suggest "db".
	best, bestDist, tie := "", min(2, len(name)/3)+1, false
	for _, k := range keys {
		switch dist := editDistance(strings.ToLower(name), k); {
		case dist < bestDist:
			best, bestDist, tie = k, dist, false
		case dist == bestDist:
			tie = true
		}
	}
	if best != "" && !tie {
		return best
	}
	var swapped []string
	for _, k := range keys {
		if oneWordDiffers(snake(name), k) {
			swapped = append(swapped, k)
		}
	}
	if len(swapped) == 1 {
		return swapped[0]
	}
	var longer []string
	for _, k := range keys {
		if len(name) >= 3 && strings.HasPrefix(k, snake(name)+"_") {
			longer = append(longer, k)
		}
	}
	if len(longer) == 1 {
		return longer[0]
	}
	return ""
}

// normKey folds case and separators: "Max-Body_bytes" -> "maxbodybytes".
func normKey(s string) string {
	return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
}

// snake turns maxBodyBytes or max-body-bytes into max_body_bytes.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '-':
			b.WriteByte('_')
		case r >= 'A' && r <= 'Z':
			if i > 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r + ('a' - 'A'))
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func oneWordDiffers(a, b string) bool {
	wa, wb := strings.Split(a, "_"), strings.Split(b, "_")
	if len(wa) != len(wb) || len(wa) < 2 {
		return false
	}
	diff := 0
	for i := range wa {
		if wa[i] != wb[i] {
			diff++
		}
	}
	return diff == 1
}

// editDistance counts insertions, deletions, substitutions and swaps of
// neighbours (optimal string alignment), so "nmae" is one edit from "name".
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

var allKeys = sync.OnceValue(func() []string { return schemaKeys(reflect.TypeFor[Config](), "") })

// schemaKeys lists every key path of t, list items written as "[]":
// "server.listen", "upstreams[].url", "proxy.gzip".
func schemaKeys(t reflect.Type, prefix string) []string {
	var out []string
	for name, i := range yamlFields(t) {
		p := joinKey(prefix, name)
		out = append(out, p)
		ft := t.Field(i).Type
		if ft.Kind() == reflect.Slice {
			ft, p = ft.Elem(), p+"[]"
		}
		if ft.Kind() == reflect.Struct && ft.NumField() > 0 && !ft.Implements(yamlUnmarshaler) {
			out = append(out, schemaKeys(ft, p)...)
		}
	}
	return out
}

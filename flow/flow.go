// Package flow recognises the HTTP routes of flow servers (Flowise, Langflow)
// that run a workflow, so that the cache, quota and metrics layers can key on
// the workflow without each parsing paths again.
package flow

import (
	"net/url"
	"strings"
	"unicode/utf8"
)

// Kind names the flow server that owns a route.
type Kind uint8

const (
	// Unknown is any path that does not run a flow; it is proxied unchanged.
	Unknown Kind = iota
	Flowise
	Langflow
)

func (k Kind) String() string {
	switch k {
	case Flowise:
		return "flowise"
	case Langflow:
		return "langflow"
	}
	return "unknown"
}

// Route templates. They are the values of the metrics "route" label, so the
// set is closed: a path never becomes a label value.
const (
	RoutePrediction         = "/api/v1/prediction/{id}"
	RouteInternalPrediction = "/api/v1/internal-prediction/{id}"
	RouteVectorUpsert       = "/api/v1/vector/upsert/{id}"
	RouteWebhook            = "/api/v1/webhook/{id}"
	RouteMCP                = "/api/v1/mcp/{id}"
	RouteDocStoreUpsert     = "/api/v1/document-store/upsert/{id}"
	RouteLangflowRun        = "/api/v1/run/{id}"
	// RouteOther labels every path that runs no flow.
	RouteOther = "other"
)

// Info is what the gateway knows about a flow request from its path alone.
type Info struct {
	// WorkflowID is the flow id (or Flowise document store id, or Langflow
	// flow name) exactly as it appears in the path.
	WorkflowID string
	// Route is one of the Route* templates.
	Route string
	Kind  Kind
	// Runs reports whether the route executes a flow (and so spends tokens).
	// Document-store upserts spend embedding tokens but run no flow.
	Runs bool
}

// IsFlow reports whether the path was recognised as a flow route.
func (i Info) IsFlow() bool { return i.Kind != Unknown }

const apiPrefix = "/api/v1/"

// Identify matches an escaped URL path (r.URL.EscapedPath()) against the
// flow routes the way Express, Flowise's router, does: case-insensitively
// (Flowise runs /api/v1/Prediction/{id}; a gateway that did not see a flow
// there would skip its quotas and stream checks), on the path as sent, so
// an escaped slash stays inside the id, which is then decoded. The id keeps
// its case. It does not allocate unless the id is escaped: WorkflowID is
// then a substring of path.
func Identify(path string) Info {
	if len(path) < len(apiPrefix) || !strings.EqualFold(path[:len(apiPrefix)], apiPrefix) {
		return Info{Route: RouteOther}
	}
	rest := path[len(apiPrefix):]
	slash := strings.IndexByte(rest, '/')
	if slash <= 0 {
		return Info{Route: RouteOther}
	}
	head, tail := rest[:slash], rest[slash+1:]
	switch {
	case strings.EqualFold(head, "prediction"):
		return one(tail, RoutePrediction, Flowise, true)
	case strings.EqualFold(head, "internal-prediction"):
		return one(tail, RouteInternalPrediction, Flowise, true)
	case strings.EqualFold(head, "webhook"):
		return one(tail, RouteWebhook, Flowise, true)
	case strings.EqualFold(head, "mcp"):
		return one(tail, RouteMCP, Flowise, true)
	case strings.EqualFold(head, "run"):
		return one(tail, RouteLangflowRun, Langflow, true)
	case strings.EqualFold(head, "vector"):
		if id, ok := cutFold(tail, "upsert/"); ok {
			return one(id, RouteVectorUpsert, Flowise, true)
		}
	case strings.EqualFold(head, "document-store"):
		if id, ok := cutFold(tail, "upsert/"); ok {
			return one(id, RouteDocStoreUpsert, Flowise, false)
		}
	}
	return Info{Route: RouteOther}
}

func cutFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// one accepts a single id segment, with an optional trailing slash as
// Express does, and nothing after it. The id is decoded as Express decodes
// route parameters; one that does not decode is no route (Express answers
// 400 for it).
func one(seg, route string, kind Kind, runs bool) Info {
	seg = strings.TrimSuffix(seg, "/")
	if seg == "" || strings.IndexByte(seg, '/') >= 0 {
		return Info{Route: RouteOther}
	}
	if strings.IndexByte(seg, '%') >= 0 {
		id, err := url.PathUnescape(seg)
		if err != nil || id == "" || !utf8.ValidString(id) {
			return Info{Route: RouteOther}
		}
		seg = id
	}
	return Info{WorkflowID: seg, Route: route, Kind: kind, Runs: runs}
}

// CanonicalID returns a flow id as Flowise's database matches it: a UUID
// in lower case (Postgres and SQLite compare them case-insensitively), any
// other id (a Langflow flow name) as it is. The cache keys, policies and
// invalidations use it, so one flow has one set of entries.
func CanonicalID(id string) string {
	if len(id) != 36 {
		return otherUUIDForm(id)
	}
	lower := true
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return otherUUIDForm(id)
			}
		case c >= '0' && c <= '9' || c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			lower = false
		default:
			return id
		}
	}
	if lower {
		return id
	}
	return strings.ToLower(id)
}

// otherUUIDForm canonicalises the other spellings of a UUID that Postgres
// accepts for the same row (no hyphens, braces, a hyphen after any group
// of four digits): Flowise on Postgres runs the flow whichever is sent,
// so a policy or a cache entry must not be escaped by respelling its id.
// Anything else is returned as it is.
func otherUUIDForm(id string) string {
	s := id
	if len(s) >= 2 && s[0] == '{' && s[len(s)-1] == '}' {
		s = s[1 : len(s)-1]
	}
	if len(s) < 32 || len(s) > 39 {
		return id
	}
	var hex [32]byte
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '-':
			// Postgres: a hyphen may follow any group of four digits.
			if n == 0 || n%4 != 0 || i+1 == len(s) || s[i+1] == '-' {
				return id
			}
			continue
		case c >= '0' && c <= '9' || c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			c += 'a' - 'A'
		default:
			return id
		}
		if n == 32 {
			return id
		}
		hex[n] = c
		n++
	}
	if n != 32 {
		return id
	}
	return string(hex[:8]) + "-" + string(hex[8:12]) + "-" + string(hex[12:16]) + "-" + string(hex[16:20]) + "-" + string(hex[20:])
}

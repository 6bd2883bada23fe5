// Package flow recognises the HTTP routes of flow servers (Flowise, Langflow)
// that run a workflow, so that the cache, quota and metrics layers can key on
// the workflow without each parsing paths again.
package flow

import "strings"

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

// Identify matches path (the decoded URL path, case-sensitive as Flowise's
// router is) against the flow routes. It does not allocate: WorkflowID is a
// substring of path.
func Identify(path string) Info {
	if !strings.HasPrefix(path, apiPrefix) {
		return Info{Route: RouteOther}
	}
	rest := path[len(apiPrefix):]
	slash := strings.IndexByte(rest, '/')
	if slash <= 0 {
		return Info{Route: RouteOther}
	}
	head, tail := rest[:slash], rest[slash+1:]
	switch head {
	case "prediction":
		return one(tail, RoutePrediction, Flowise, true)
	case "internal-prediction":
		return one(tail, RouteInternalPrediction, Flowise, true)
	case "webhook":
		return one(tail, RouteWebhook, Flowise, true)
	case "mcp":
		return one(tail, RouteMCP, Flowise, true)
	case "run":
		return one(tail, RouteLangflowRun, Langflow, true)
	case "vector":
		if id, ok := strings.CutPrefix(tail, "upsert/"); ok {
			return one(id, RouteVectorUpsert, Flowise, true)
		}
	case "document-store":
		if id, ok := strings.CutPrefix(tail, "upsert/"); ok {
			return one(id, RouteDocStoreUpsert, Flowise, false)
		}
	}
	return Info{Route: RouteOther}
}

// one accepts a single id segment, with an optional trailing slash as
// Express (Flowise's router) does, and nothing after it.
func one(seg, route string, kind Kind, runs bool) Info {
	seg = strings.TrimSuffix(seg, "/")
	if seg == "" || strings.IndexByte(seg, '/') >= 0 {
		return Info{Route: RouteOther}
	}
	return Info{WorkflowID: seg, Route: route, Kind: kind, Runs: runs}
}

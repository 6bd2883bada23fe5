// Package cache is flowgate's response cache of flow predictions: the key
// derived from the flow input (key.go), stored answers that are replayed
// with fresh per-request ids (entry.go), and two levels behind one Store
// (store.go): a byte-bounded in-process level in front of Redis, shared by
// every replica when redis.addr is set.
//
// What is never cached, and why, is decided in key.go (from the request) and
// in the proxy's recorder (from the answer); README.md lists it for users.
package cache

import "github.com/flowgate/flowgate/flow"

// Key names one stored answer.
type Key struct {
	// Workflow is the flow id as identified from the path; invalidation
	// works per workflow.
	Workflow string
	// Stream is the variant: an answer to a request that asked to stream.
	// A stream and a JSON answer are different answers to Flowise's
	// clients, and one is never made up from the other, so each has its
	// own entry under the same input.
	Stream bool
	// Sum is the SHA-256 of the route, the canonical flow input and the
	// caller's vary-header values.
	Sum [32]byte
}

// Request is what a key and the cacheability verdict are derived from.
type Request struct {
	Info flow.Info
	// Body is the request body in memory; nil when there is none or it
	// was spilled to disk (too large to be worth caching).
	Body        []byte
	ContentType string
	// Vary holds the values of cache.vary_headers, in config order, ""
	// for an absent header.
	Vary []string
	// Stream: the request asked to stream (Flowise "streaming": true or
	// "true"; Langflow ?stream=true).
	Stream bool
	// Stateless: the workflow's policy allows chatId and sessionId.
	Stateless bool
}

// Package fakeflow is a Flowise-compatible upstream for tests, benchmarks and
// the demo. It speaks the wire formats of a real Flowise 3.1.2 as captured in
// shared/samples: the same JSON field names and order, the same SSE frame
// format (`message:\ndata:{"event":...,"data":...}\n\n`, flushed frame by
// frame, ending with {"event":"end","data":"[DONE]"}) and the same headers.
//
// # Routes
//
//	GET|HEAD /api/v1/ping                     200 "pong", text/plain; charset=utf-8
//	POST /api/v1/prediction/{id}              the public prediction API
//	POST /api/v1/internal-prediction/{id}     the UI's route, same behaviour
//	POST /api/v1/prediction[/]                412 "id not provided" (both routes)
//	GET /api/v1/chatflows-streaming/{id}      {"isStreaming":true}, asked by Flowise's JS SDK
//	GET|HEAD /  (and /index.html)             a small HTML page standing in for the UI
//	GET|HEAD /assets/...                      a JavaScript file (>2 KiB; .css gets CSS)
//	OPTIONS with Access-Control-Request-Method  CORS preflight, 204 like the cors package
//	anything else                             404 with Express's "Cannot METHOD /path" page
//
// A flow id must look like a UUID (8-4-4-4-12 hex digits, any version), else
// the answer is 400 with Flowise's error body
// {"statusCode":400,"success":false,"message":"...","stack":{}}. The body is
// JSON (also accepted with no Content-Type), multipart/form-data or
// urlencoded; it may carry question, streaming (true or "true"), chatId,
// overrideConfig.sessionId, form and history. Malformed JSON gets 400, a body
// over 50 MiB gets 413, both with Flowise's error body.
//
// chatId echoes the request's chatId, else overrideConfig.sessionId, else a
// random UUIDv4; sessionId echoes overrideConfig.sessionId, else chatId.
// chatMessageId (and executionId for agentflows) are random UUIDv4s.
//
// Every response carries Vary: Origin; a request with an Origin header gets
// it reflected in Access-Control-Allow-Origin. Non-streaming responses carry
// Connection: keep-alive and Keep-Alive: timeout=5 like Node, and an Instance
// closes idle keep-alive connections after 5 s like Node does.
//
// # Per-request override headers
//
// One instance can serve many test cases; these request headers override the
// instance's Options for one prediction request (they are ignored on other
// routes). A malformed value is answered 400 with Flowise's error body.
//
//	X-Fakeflow-Latency: <Go duration>      wait before answering (before headers), e.g. "150ms"
//	X-Fakeflow-Token-Delay: <Go duration>  wait between token frames of a stream
//	X-Fakeflow-Tokens: <int 0..100000>     tokens in the answer (0 is allowed here)
//	X-Fakeflow-Stamp: 1                    stamp each streamed token frame with its write
//	                                       time (an extra "fakeflowStamp" field, Unix ns;
//	                                       see HeaderStamp), for per-frame delay benchmarks
//	X-Fakeflow-Mode: <mode>                one of:
//	    hang         accept the request, never answer until the client goes away
//	    fail         answer 500 with Flowise's error body (streaming or not)
//	    agentflow    answer as an Agentflow V2 (no hang, no random failure)
//	    chatflow     answer as a classic chatflow (no hang, no random failure)
//	    stream-error streaming requests get 200, start, half the tokens, an
//	                 "error" frame and "end" (what Flowise does when a flow
//	                 fails after the stream started); others get 500 like fail
//
// Without X-Fakeflow-Mode the instance's Options decide: Hang, then
// FailureRate, then Agentflow.
//
// # Tokens
//
// The answer is made of Tokens tokens: "Hello", " from", " the", " fake",
// " OpenAI", " server.", then the same words again (" Hello", " from", ...).
// The JSON text is their concatenation. TokenDelay is waited between two
// consecutive answer tokens (not before the first, and not around the empty
// token frames an agentflow stream adds), so a stream lasts about
// (Tokens-1)*TokenDelay.
//
// Agentflow usage: input_tokens = 10 + ceil(len(question in runes)/4) (11 for
// "hi" as in the samples), output_tokens = Tokens, costs at gpt-4o-mini's
// prices (1.5e-7 and 6e-7 per token).
//
// # Counting
//
// Stats are atomic counters: Requests counts every request (ping, assets,
// 404s included); Predictions every request to a prediction route, rejected
// ones included; Streams every SSE response started; Failures every injected
// failure (fail, FailureRate, stream-error); InFlight the prediction handlers
// running now (hung ones included).
package fakeflow

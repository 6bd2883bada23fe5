// Package metering meters one flow execution (tokens in and out, model,
// cost) from its answer as the answer passes through the proxy, with
// bounded memory and without holding any byte back.
//
// # Where usage comes from
//
// Flowise reports token usage only for Agentflow V2: each LLM, Agent or
// Condition Agent node's data.output.usageMetadata in agentFlowExecutedData
// ({input_tokens, output_tokens, total_tokens, ...} plus input_cost,
// output_cost and total_cost in USD when Flowise knows the model's price).
// A stream resends the whole cumulative array after each node, so a Meter
// sums the nodes of the last array only; the stream's separate
// usageMetadata event repeats one node and is used only when no array
// carried usage. A JSON answer with an OpenAI-style top-level "usage" also
// counts as reported.
//
// Classic chatflows report nothing anywhere, so their usage is estimated
// with OpenAI's BPE vocabularies (o200k_base, cl100k_base; the files
// tiktoken-go-loader embeds, nothing downloaded): the request's question,
// history and form in, the answer's text out. The counting is our own
// (pretok.go splits as tiktoken's patterns do, bpecount.go counts merges,
// without allocating) and equals tiktoken-go's count, which the tests and
// a fuzz target check piece by piece. The estimate is exact for OpenAI
// models and close for others.
//
// # Cost
//
// Money is integers: prices in pico-dollars per token (so that every list
// price is exact), costs in nano-dollars. Flowise's own total_cost wins
// when present; it is read from the decimal text of the JSON number, not
// through a float64, so 0.0000016499999999999999 is 1650 nano-dollars.
// Otherwise cost is tokens × the model's price from a Prices table: the
// bundled prices.json or a file of the same format (Config.Prices).
//
// # Memory
//
// A Meter keeps at most 256 KiB of request text, 1 MiB of answer text and
// 8 MiB of a JSON answer, each growth taken first from a process-wide
// Budget. Past a bound, or when the Budget refuses, it keeps counting bytes
// and extrapolates: tokens of the kept part × total bytes / kept bytes, or
// one token per 4 bytes when nothing could be kept.
//
// # Use in the proxy
//
// One Meter per request, pooled; per SSE frame, Event(ev.Data) costs about
// 100-200 ns and no allocation. A frame the SSE parser cut at its
// MaxEventBytes (Event.Truncated) is not JSON and is skipped like any
// invalid frame: a last agentFlowExecutedData larger than the parser's
// bound is then lost, and the usageMetadata events stand in for it (same
// tokens, no Flowise cost, so priced from the table). Finish may tokenize
// for milliseconds: run it after the response is done, then Release.
package metering

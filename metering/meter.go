package metering

import (
	"encoding/json"
	"strings"

	"github.com/flowgate/flowgate/flow"
)

// maxParts bounds how many request pieces (question, each history message,
// form) are tokenized apart; later pieces join the last one.
const maxParts = 1024

// maxModels bounds the models one execution lists; the usage of further
// models is added to an entry named otherModel. Costs stay exact: each
// node is priced with its own model before it is added.
const (
	maxModels  = 32
	otherModel = "other"
)

// maxModelName bounds a model name read from an answer.
const maxModelName = 256

// maxCostNano caps a cost read from an answer at a billion dollars: more
// is an error or an attack, not usage.
const maxCostNano = 1_000_000_000 * 1_000_000_000

// Meter meters one flow execution from its answer as the answer passes
// through the proxy: the tokens in and out, the model and the cost. It
// holds bounded memory (see Budget) and never holds bytes back: it only
// reads them.
//
// The zero value must be Reset before use. A Meter is not safe for
// concurrent use. Reset reuses its buffers, so keep Meters in a pool:
//
//	m.Reset(cfg, budget, workflow)
//	m.Request(body)
//	... m.Event(frame.Data) for each SSE event, or m.Write(p) for a JSON answer
//	u := m.Finish() // off the response path: it may tokenize
//	m.Release()
type Meter struct {
	cfg      *Config
	bud      *Budget
	workflow string

	req   textBuf // question, history messages, form: for the input estimate
	parts []int32 // end offset in req.b of each piece, tokenized apart
	ans   textBuf // answer text: token events, or the JSON answer's text
	body  textBuf // the JSON answer, buffered for parsing at Finish

	events   bool // Event was called
	writes   bool // Write was called
	noAnswer bool // NoAnswer was called: estimate the request alone
	bodyOver bool // the JSON answer was too large, or the Budget refused: not parsed

	exec    tally     // the last agentFlowExecutedData
	nodes   []NodeRun // its nodes
	usageEv tally     // usageMetadata events, used when no agentFlowExecutedData reported usage
	openAI  tally     // a JSON answer's OpenAI-style usage object

	done   bool
	result Usage
}

// tally sums reported usage per model.
type tally struct {
	models []ModelUsage
	seen   bool // some usage was reported
}

func (t *tally) reset() {
	clear(t.models) // drop the name strings
	t.models, t.seen = t.models[:0], false
}

// Reset prepares m for a new execution of workflow (the canonical flow id),
// priced with c (nil: the bundled prices, no configured model) and holding
// memory from b (nil: unbounded). Anything held for an earlier execution
// is given back first.
func (m *Meter) Reset(c *Config, b *Budget, workflow string) {
	m.Release()
	m.cfg, m.bud, m.workflow = c, b, workflow
}

// Release gives back the memory m took from its Budget and drops large
// buffers. Call it after Finish, or instead of Finish when the execution is
// not metered; m must be Reset before it is used again.
func (m *Meter) Release() {
	bud := m.bud
	m.req.reset(bud)
	m.ans.reset(bud)
	m.body.reset(bud)
	m.parts = m.parts[:0]
	if cap(m.parts) > maxParts {
		m.parts = nil
	}
	m.exec.reset()
	clear(m.nodes)
	m.nodes = m.nodes[:0]
	m.usageEv.reset()
	m.openAI.reset()
	m.cfg, m.bud, m.workflow = nil, nil, ""
	m.events, m.writes, m.bodyOver, m.noAnswer = false, false, false, false
	m.done, m.result = false, Usage{}
}

// NoAnswer says the run's answer never came (the client or the upstream
// went away before it): Finish then estimates the request's input tokens,
// with no output, rather than reporting nothing.
func (m *Meter) NoAnswer() { m.noAnswer = true }

// Request takes the request body, a Flowise prediction JSON: its
// "question", the "content" (or "message") of each "history" entry and its
// "form" are kept for the input estimate, up to 256 KiB of text; beyond
// that they are counted and the estimate is extrapolated. A body that is
// not a JSON object (a multipart upload) adds no input tokens. body is only
// read during the call. A second call replaces the first.
func (m *Meter) Request(body []byte) {
	m.req.clear()
	m.parts = m.parts[:0]
	// One pass over the body, which may carry megabytes of uploads; the
	// last of duplicate keys wins, as in JavaScript.
	var question, history, form []byte
	eachMember(body, func(k []byte, esc bool, v []byte) {
		switch {
		case keyIs(k, esc, "question"):
			question = v
		case keyIs(k, esc, "history"):
			history = v
		case keyIs(k, esc, "form"):
			form = v
		}
	})
	if raw, _, ok := stringContent(question); ok {
		m.req.appendString(m.bud, raw, maxRequestText)
		m.endPart()
	}
	if hist, ok := arrayElems(history); ok {
		for msg, ok := hist.next(); ok; msg, ok = hist.next() {
			c := member(msg, "content")
			if c == nil {
				c = member(msg, "message")
			}
			m.addContent(c)
		}
	}
	if form := trimValue(form); len(form) > 0 && string(form) != "null" {
		m.req.appendJSON(m.bud, form, maxRequestText)
		m.endPart()
	}
}

// addContent adds a history message's content: a string, or OpenAI-style
// parts [{"type":"text","text":...}] whose texts count.
func (m *Meter) addContent(c []byte) {
	if raw, _, ok := stringContent(c); ok {
		m.req.appendString(m.bud, raw, maxRequestText)
		m.endPart()
		return
	}
	parts, ok := arrayElems(c)
	if !ok {
		return
	}
	for p, ok := parts.next(); ok; p, ok = parts.next() {
		if raw, _, ok := stringContent(member(p, "text")); ok {
			m.req.appendString(m.bud, raw, maxRequestText)
			m.endPart()
		}
	}
}

// endPart ends a piece of request text.
func (m *Meter) endPart() {
	end := int32(len(m.req.b))
	switch n := len(m.parts); {
	case n > 0 && m.parts[n-1] == end:
		// nothing kept since the last piece
	case n < maxParts:
		m.parts = append(m.parts, end)
	default:
		m.parts[n-1] = end
	}
}

// Event takes the data of one event of a Flowise stream,
// {"event":"<name>","data":<payload>}. data is only read during the call.
// A token event costs a scan of the frame and an append to the answer
// text; agentFlowExecutedData and usageMetadata are parsed at once (they
// are rare), so nothing of a frame is kept but the text and the sums.
func (m *Meter) Event(data []byte) {
	m.events = true
	name, ok := flow.FlowiseEvent(data)
	if !ok {
		return
	}
	switch string(name) {
	case "token":
		if raw, _, ok := stringContent(member(data, "data")); ok {
			m.ans.appendString(m.bud, raw, maxAnswerText)
		}
	case "agentFlowExecutedData":
		m.executedData(member(data, "data"))
	case "usageMetadata":
		if um := member(data, "data"); um != nil {
			m.addUsage(&m.usageEv, um, "")
		}
	}
}

// Write takes the bytes of a JSON (non-stream) answer, in order, as
// decoded (after any Content-Encoding); p is only read during the call.
// They are buffered for Finish up to 8 MiB, each growth taken from the
// Budget first; past that, or when the Budget refuses, buffering stops,
// the buffer is given back at once and the output is estimated from the
// byte count.
func (m *Meter) Write(p []byte) {
	m.writes = true
	if m.bodyOver {
		m.body.total += int64(len(p))
		return
	}
	if !m.body.appendRaw(m.bud, p, maxAnswerJSON) {
		total := m.body.total
		m.body.drop(m.bud)
		m.body.total = total
		m.bodyOver = true
	}
}

// Finish returns the execution's usage, once the answer has ended. It may
// run the tokenizer (about a millisecond for a few KB of text, a few
// hundred for the 1.25 MiB it keeps at most, and 70-300 ms more the first
// time an encoding loads), so call it off the response path. Calling it
// again returns the same Usage.
//
// Usage is reported when Flowise reported it: summed over the nodes of the
// last agentFlowExecutedData (stream event or JSON answer), never over
// several, as each repeats the ones before; else, when no
// agentFlowExecutedData carried usage (none came, or the last one was lost:
// cut by the SSE parser's bound, or the stream broke), summed over the
// usageMetadata events, each one streaming node's; else a JSON answer's
// OpenAI-style usage.
// Otherwise it is estimated with the tokenizer of the configured model:
// the input from the request's text, the output from the answer's text
// (the token events of a stream; "text", else "json", of a JSON answer).
// A JSON answer that could not be buffered or parsed is estimated at one
// token per 4 bytes. Source is "" when no answer bytes or events came.
func (m *Meter) Finish() Usage {
	if m.done {
		return m.result
	}
	m.done = true
	if !m.events && !m.writes && !m.noAnswer {
		return m.result
	}
	parsed := false
	if m.writes && !m.bodyOver {
		parsed = m.parseAnswer()
	}
	switch {
	case m.exec.seen:
		m.result = reported(&m.exec)
	case m.usageEv.seen:
		m.result = reported(&m.usageEv)
	case m.openAI.seen:
		m.result = reported(&m.openAI)
	default:
		m.result = m.estimate(m.writes && !parsed)
	}
	if len(m.nodes) > 0 {
		m.result.Nodes = append([]NodeRun(nil), m.nodes...)
	}
	return m.result
}

func reported(t *tally) Usage {
	return Usage{Source: SourceReported, Models: append([]ModelUsage(nil), t.models...)}
}

// parseAnswer reads the buffered JSON answer: its agentFlowExecutedData,
// its usage object, and its text for an estimate. false when it is not a
// JSON object.
func (m *Meter) parseAnswer() bool {
	body := m.body.b
	if !json.Valid(body) {
		return false
	}
	// One pass over the top level; the last of duplicate keys wins.
	var executed, usage, model, text, jsonv []byte
	if !eachMember(body, func(k []byte, esc bool, v []byte) {
		switch {
		case keyIs(k, esc, "agentFlowExecutedData"):
			executed = v
		case keyIs(k, esc, "usage"):
			usage = v
		case keyIs(k, esc, "model"):
			model = v
		case keyIs(k, esc, "text"):
			text = v
		case keyIs(k, esc, "json"):
			jsonv = v
		}
	}) {
		return false // not an object
	}
	if executed != nil {
		m.executedData(executed)
	}
	if usage != nil {
		m.addUsage(&m.openAI, usage, stringValue(model))
	}
	if m.exec.seen || m.openAI.seen {
		return true // reported: the text is not needed
	}
	m.ans.clear()
	if raw, _, ok := stringContent(text); ok {
		m.ans.appendString(m.bud, raw, maxAnswerText)
	} else if v := trimValue(jsonv); len(v) > 0 && string(v) != "null" {
		m.ans.appendJSON(m.bud, v, maxAnswerText)
	}
	return true
}

// executedData replaces the reported usage with that of v, the array of an
// agentFlowExecutedData: each event repeats all nodes so far, so only the
// last one counts.
func (m *Meter) executedData(v []byte) {
	nodes, ok := arrayElems(v)
	if !ok {
		return
	}
	m.exec.reset()
	clear(m.nodes)
	m.nodes = m.nodes[:0]
	for node, ok := nodes.next(); ok; node, ok = nodes.next() {
		data := member(node, "data")
		if len(m.nodes) < maxNodes {
			if typ := stringValue(member(data, "name")); typ != "" {
				m.nodes = append(m.nodes, NodeRun{Type: typ, Status: strings.ToLower(stringValue(member(node, "status")))})
			}
		}
		out := member(data, "output")
		if um := member(out, "usageMetadata"); um != nil {
			m.addUsage(&m.exec, um, nodeModel(data, out))
		}
	}
}

// nodeModel is the model an agentflow node ran: the one the provider
// answered with (responseMetadata), else the one the node was configured
// with (its LLM, Agent or Condition Agent model config); "" if neither.
func nodeModel(data, out []byte) string {
	rm := member(out, "responseMetadata")
	if s := stringValue(member(rm, "model_name")); s != "" {
		return s
	}
	if s := stringValue(member(rm, "model")); s != "" {
		return s
	}
	in := member(data, "input")
	for _, k := range [...]string{"llmModelConfig", "agentModelConfig", "conditionAgentModelConfig"} {
		if s := stringValue(member(member(in, k), "modelName")); s != "" {
			return s
		}
	}
	return ""
}

// addUsage adds a usage object to t: {input_tokens, output_tokens,
// total_cost?} as Flowise writes it, or {prompt_tokens,
// completion_tokens} as OpenAI does. An object with neither count is not
// usage.
func (m *Meter) addUsage(t *tally, um []byte, model string) {
	in, okIn := tokenCount(member(um, "input_tokens"))
	out, okOut := tokenCount(member(um, "output_tokens"))
	if !okIn && !okOut {
		in, okIn = tokenCount(member(um, "prompt_tokens"))
		out, okOut = tokenCount(member(um, "completion_tokens"))
		if !okIn && !okOut {
			return
		}
	}
	cost, hasCost := usdNano(member(um, "total_cost"))
	if !hasCost {
		ic, okI := usdNano(member(um, "input_cost"))
		oc, okO := usdNano(member(um, "output_cost"))
		cost, hasCost = min(addSat(ic, oc), maxCostNano), okI && okO
	}
	label, price, priced := m.price(model)
	mu := ModelUsage{Model: label, Input: in, Output: out}
	switch {
	case hasCost:
		mu.CostNano, mu.FlowiseCost, mu.Priced = cost, true, true
	case priced:
		mu.CostNano, mu.Priced = price.CostNano(in, out), true
	}
	t.add(mu)
}

// add adds one node's usage to the entry of its model.
func (t *tally) add(u ModelUsage) {
	t.seen = true
	i := 0
	for i < len(t.models) && t.models[i].Model != u.Model {
		i++
	}
	if i == len(t.models) && i >= maxModels {
		u.Model = otherModel
		for i = 0; i < len(t.models) && t.models[i].Model != otherModel; i++ {
		}
	}
	if i == len(t.models) {
		t.models = append(t.models, ModelUsage{Model: u.Model})
	}
	e := &t.models[i]
	e.Input = min(addSat(e.Input, u.Input), maxTokens)
	e.Output = min(addSat(e.Output, u.Output), maxTokens)
	e.CostNano = addSat(e.CostNano, u.CostNano)
	e.FlowiseCost = e.FlowiseCost || u.FlowiseCost
	e.Priced = e.Priced || u.Priced
}

// price returns the label and price of a model named by an answer ("" when
// it named none: the flow's configured model then stands in).
//
// A model the table does not price is priced as the flow's configured
// model (Config.Model) when that one is priced: the flow's owner said what
// the flow runs, and a priced guess serves quotas better than no cost. The
// label stays the answer's own name, so metrics and logs show which model
// lacks a price.
func (m *Meter) price(model string) (label string, p Price, priced bool) {
	prices := m.cfg.prices()
	conf := m.cfg.Model(m.workflow)
	if model == "" {
		model = conf
	}
	if p, name, ok := prices.Lookup(model); ok {
		return name, p, true
	}
	if conf != "" && conf != model {
		if p, _, ok := prices.Lookup(conf); ok {
			return model, p, true
		}
	}
	return model, Price{}, false
}

// estimate counts tokens with the tokenizer of the configured model.
// bytesOnly: the JSON answer was not parsed, so its output is its byte
// count / 4.
func (m *Meter) estimate(bytesOnly bool) Usage {
	label, price, priced := m.price("")
	enc := encodingFor(label)

	var in int64
	start := int32(0)
	for _, end := range m.parts {
		in += countTokens(enc, m.req.b[start:end])
		start = end
	}
	in = scaleTokens(in, m.req.total, int64(len(m.req.b)))

	var out int64
	if bytesOnly || m.bodyOver {
		out = min(m.body.total/bytesPerToken, maxTokens)
	} else {
		out = scaleTokens(countTokens(enc, m.ans.b), m.ans.total, int64(len(m.ans.b)))
	}
	mu := ModelUsage{Model: label, Input: in, Output: out, Priced: priced}
	if priced {
		mu.CostNano = price.CostNano(in, out)
	}
	return Usage{Source: SourceEstimated, Models: []ModelUsage{mu}}
}

// tokenCount reads a token count: a JSON number, or a string holding one,
// rounded to an integer; negative counts are 0, counts past maxTokens are
// maxTokens. ok is false when v is absent or not a number.
func tokenCount(v []byte) (n int64, ok bool) {
	d, ok := number(v)
	if !ok {
		return 0, false
	}
	if d.neg {
		return 0, true
	}
	n, _, overflow := d.scaled(0)
	if overflow {
		return maxTokens, true
	}
	return min(n, maxTokens), true
}

// usdNano reads a cost in USD (a JSON number or a string holding one) as
// nano-dollars, exactly from its decimal text, rounded half up at the nano
// digit; negative costs are 0, costs past maxCostNano are maxCostNano.
func usdNano(v []byte) (n int64, ok bool) {
	d, ok := number(v)
	if !ok {
		return 0, false
	}
	if d.neg {
		return 0, true
	}
	n, _, overflow := d.scaled(9)
	if overflow {
		return maxCostNano, true
	}
	return min(n, maxCostNano), true
}

// number reads a JSON number, or a JSON string holding one.
func number(v []byte) (decimal, bool) {
	v = trimValue(v)
	if raw, esc, ok := stringContent(v); ok {
		if esc {
			return decimal{}, false // no number is written with escapes
		}
		v = trimValue(raw)
	}
	if len(v) == 0 {
		return decimal{}, false
	}
	return parseDecimal(v)
}

// stringValue decodes a JSON string value (at most maxModelName bytes of
// it); "" if v is not a string.
func stringValue(v []byte) string {
	raw, _, ok := stringContent(v)
	if !ok {
		return ""
	}
	var buf [maxModelName]byte
	s, _ := appendUnquote(buf[:0], raw, len(buf))
	return string(s)
}

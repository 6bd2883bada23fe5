package fakeflow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/flowgate/flowgate/internal/jsonx"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Per-request override headers (see the package documentation).
const (
	HeaderLatency    = "X-Fakeflow-Latency"
	HeaderTokenDelay = "X-Fakeflow-Token-Delay"
	HeaderTokens     = "X-Fakeflow-Tokens"
	HeaderMode       = "X-Fakeflow-Mode"
)

// Values of HeaderMode.
const (
	ModeHang        = "hang"
	ModeFail        = "fail"
	ModeAgentflow   = "agentflow"
	ModeChatflow    = "chatflow"
	ModeStreamError = "stream-error"
)

const (
	maxTokens = 100000   // cap of Tokens and X-Fakeflow-Tokens
	maxBody   = 50 << 20 // Flowise's default FLOWISE_FILE_SIZE_LIMIT, 50mb
)

// Messages of Flowise's error bodies.
const (
	msgNoID        = "Error: predictionsController.createPrediction - id not provided!"
	msgBadID       = "Invalid chatflowId format - must be a valid UUID"
	msgFailure     = "Error: predictionsServices.buildChatflow - fakeflow: injected failure"
	msgTooLarge    = "request entity too large"
	msgUnexpectEnd = "Unexpected end of JSON input"
)

type mode uint8

const (
	modeDefault mode = iota
	modeHang
	modeFail
	modeAgentflow
	modeChatflow
	modeStreamError
)

// reqParams are the instance's options after the request's overrides.
type reqParams struct {
	latency, tokenDelay time.Duration
	tokens              int
	mode                mode
	stamp               bool // HeaderStamp: stamp token frames with their write time
}

// params applies the override headers; msg is non-empty for a bad value.
func (s *Server) params(r *http.Request) (p reqParams, msg string) {
	p = reqParams{latency: s.opts.Latency, tokenDelay: s.opts.TokenDelay, tokens: s.opts.Tokens}
	h := r.Header
	if v, ok := h[HeaderLatency]; ok && len(v) > 0 {
		d, err := time.ParseDuration(strings.TrimSpace(v[0]))
		if err != nil || d < 0 {
			return p, "fakeflow: bad " + HeaderLatency + " " + strconv.Quote(v[0]) + ": want a non-negative Go duration such as 150ms"
		}
		p.latency = d
	}
	if v, ok := h[HeaderTokenDelay]; ok && len(v) > 0 {
		d, err := time.ParseDuration(strings.TrimSpace(v[0]))
		if err != nil || d < 0 {
			return p, "fakeflow: bad " + HeaderTokenDelay + " " + strconv.Quote(v[0]) + ": want a non-negative Go duration such as 20ms"
		}
		p.tokenDelay = d
	}
	if v, ok := h[HeaderTokens]; ok && len(v) > 0 {
		n, err := strconv.Atoi(strings.TrimSpace(v[0]))
		if err != nil || n < 0 || n > maxTokens {
			return p, "fakeflow: bad " + HeaderTokens + " " + strconv.Quote(v[0]) + ": want an integer from 0 to " + strconv.Itoa(maxTokens)
		}
		p.tokens = n
	}
	if p.stamp, msg = stampParam(h[HeaderStamp]); msg != "" {
		return p, msg
	}
	if v, ok := h[HeaderMode]; ok && len(v) > 0 {
		switch strings.ToLower(strings.TrimSpace(v[0])) {
		case ModeHang:
			p.mode = modeHang
		case ModeFail:
			p.mode = modeFail
		case ModeAgentflow:
			p.mode = modeAgentflow
		case ModeChatflow:
			p.mode = modeChatflow
		case ModeStreamError:
			p.mode = modeStreamError
		default:
			return p, "fakeflow: bad " + HeaderMode + " " + strconv.Quote(v[0]) + ": want hang, fail, agentflow, chatflow or stream-error"
		}
	}
	return p, ""
}

// predictReq is what the fake uses of a prediction body.
type predictReq struct {
	question  string
	streaming bool
	chatID    string // "" if absent
	sessionID string // overrideConfig.sessionId, "" if absent
	form      []byte // compact JSON of form, nil if absent
}

type jsonBody struct {
	Question       json.RawMessage `json:"question"`
	Streaming      json.RawMessage `json:"streaming"`
	ChatID         json.RawMessage `json:"chatId"`
	OverrideConfig json.RawMessage `json:"overrideConfig"`
	Form           json.RawMessage `json:"form"`
}

type overrideBody struct {
	SessionID json.RawMessage `json:"sessionId"`
}

// jsText returns a JSON value as text: a string's contents, else the raw
// JSON; "" for absent or null.
func jsText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	return string(raw)
}

func isTrue(v string) bool { return v == "true" }

// readBody reads and parses the request body into req, using *bp as
// scratch. It always consumes the body to EOF, so the server's background
// read can notice a client that goes away. code is non-zero on error.
func readBody(w http.ResponseWriter, r *http.Request, bp *[]byte) (req predictReq, code int, msg string) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	ct := r.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.ToLower(strings.TrimSpace(ct))
	switch {
	case ct == "multipart/form-data" || ct == "application/x-www-form-urlencoded":
		var err error
		if ct == "multipart/form-data" {
			err = r.ParseMultipartForm(32 << 20)
		} else {
			err = r.ParseForm()
		}
		if err != nil {
			return req, bodyErrCode(err), bodyErrMsg(err)
		}
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return req, bodyErrCode(err), bodyErrMsg(err)
		}
		req.question = r.PostFormValue("question")
		req.streaming = isTrue(r.PostFormValue("streaming"))
		req.chatID = r.PostFormValue("chatId")
		if oc := r.PostFormValue("overrideConfig"); oc != "" {
			var o overrideBody
			if json.Unmarshal([]byte(oc), &o) == nil {
				req.sessionID = jsText(o.SessionID)
			}
		}
		if sid := r.PostFormValue("overrideConfig[sessionId]"); sid != "" {
			req.sessionID = sid
		}
		return req, 0, ""
	case ct == "" || strings.Contains(ct, "json"):
		b := (*bp)[:0]
		for {
			if len(b) == cap(b) {
				b = append(b, 0)[:len(b)]
			}
			n, err := r.Body.Read(b[len(b):cap(b)])
			b = b[:len(b)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				*bp = b
				return req, bodyErrCode(err), bodyErrMsg(err)
			}
		}
		*bp = b
		if len(bytes.TrimSpace(b)) == 0 {
			return req, 0, "" // Express leaves req.body = {}
		}
		var jb jsonBody
		if err := json.Unmarshal(b, &jb); err != nil {
			return req, http.StatusBadRequest, jsonErrMsg(b, err)
		}
		req.question = jsText(jb.Question)
		st := string(jb.Streaming)
		req.streaming = st == "true" || st == `"true"`
		req.chatID = jsText(jb.ChatID)
		if len(jb.OverrideConfig) > 0 && jb.OverrideConfig[0] == '{' {
			var o overrideBody
			if json.Unmarshal(jb.OverrideConfig, &o) == nil {
				req.sessionID = jsText(o.SessionID)
			}
		}
		if len(jb.Form) > 0 && string(jb.Form) != "null" {
			var c bytes.Buffer
			if json.Compact(&c, jb.Form) == nil {
				req.form = c.Bytes()
			}
		}
		return req, 0, ""
	default:
		// Express's parsers skip other types; req.body stays {}.
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return req, bodyErrCode(err), bodyErrMsg(err)
		}
		return req, 0, ""
	}
}

func bodyErrCode(err error) int {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

func bodyErrMsg(err error) string {
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return msgTooLarge
	}
	return err.Error()
}

// jsonErrMsg renders a JSON syntax error the way Node's JSON.parse did
// (Node 18 wording), which body-parser passes through.
func jsonErrMsg(b []byte, err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		if se.Offset >= int64(len(b)) {
			return msgUnexpectEnd
		}
		pos := se.Offset - 1
		if pos < 0 {
			pos = 0
		}
		r, _ := utf8.DecodeRune(b[pos:])
		return "Unexpected token " + string(r) + " in JSON at position " + strconv.FormatInt(pos, 10)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return msgUnexpectEnd
	}
	// A valid JSON value that is not an object.
	t := bytes.TrimSpace(b)
	r, _ := utf8.DecodeRune(t)
	return "Unexpected token " + string(r) + " in JSON at position 0"
}

// predict serves POST /api/v1/prediction/{id} and /internal-prediction/{id}.
func (s *Server) predict(w http.ResponseWriter, r *http.Request, id string) {
	s.predictions.Add(1)
	if s.hookPredictionDone != nil {
		defer s.hookPredictionDone()
	}
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	g, _ := r.Context().Value(genKey{}).(*generation)
	if g != nil {
		g.inflight.Add(1)
		defer g.inflight.Add(-1)
	}

	p, msg := s.params(r)
	if msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	if id == "" {
		writeError(w, http.StatusPreconditionFailed, msgNoID)
		return
	}
	if !isUUID(id) {
		writeError(w, http.StatusBadRequest, msgBadID)
		return
	}
	bp := getBuf()
	defer putBuf(bp)
	req, code, msg := readBody(w, r, bp)
	if code != 0 {
		writeError(w, code, msg)
		return
	}

	agent := s.opts.Agentflow
	var hang, fail, streamErr bool
	switch p.mode {
	case modeHang:
		hang = true
	case modeFail:
		fail = true
	case modeStreamError:
		streamErr = true
	case modeAgentflow:
		agent = true
	case modeChatflow:
		agent = false
	default:
		if s.opts.Hang {
			hang = true
		} else if s.opts.FailureRate > 0 && s.float64() < s.opts.FailureRate {
			fail = true
		}
	}
	if hang {
		s.hang(r, g)
		return
	}
	ctx := r.Context()
	if p.latency > 0 && !sleepCtx(ctx, p.latency) {
		return
	}
	if fail || streamErr && !req.streaming {
		s.failures.Add(1)
		writeError(w, http.StatusInternalServerError, msgFailure)
		return
	}

	a := answer{question: req.question, form: req.form, tokens: p.tokens, agent: agent, start: time.Now(), stamp: p.stamp}
	var chatID [16]byte
	s.uuids(&chatID, &a.msgID, &a.execID)
	a.chatID = req.chatID
	if a.chatID == "" {
		a.chatID = req.sessionID
	}
	if a.chatID == "" {
		a.chatID = string(appendUUID(make([]byte, 0, 36), &chatID))
	}
	a.sessionID = req.sessionID
	if a.sessionID == "" {
		a.sessionID = a.chatID
	}

	if req.streaming {
		s.streams.Add(1)
		if streamErr {
			s.failures.Add(1)
		}
		s.stream(w, r, bp, &a, p.tokenDelay, streamErr)
		return
	}
	b := (*bp)[:0]
	if agent {
		b = a.appendAgentJSON(b)
	} else {
		b = a.appendChatJSON(b)
	}
	*bp = b
	writeJSON(w, http.StatusOK, b)
}

// hang never answers: it returns when the client goes away, and aborts the
// connection when the Instance serving it is closed.
func (s *Server) hang(r *http.Request, g *generation) {
	if s.hookHang != nil {
		s.hookHang()
	}
	var closing <-chan struct{}
	if g != nil {
		closing = g.closing
	}
	select {
	case <-r.Context().Done():
	case <-closing:
		panic(http.ErrAbortHandler)
	}
}

// sleepCtx waits d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// answer is one prediction's variable parts.
type answer struct {
	question          string
	form              []byte
	chatID, sessionID string
	msgID, execID     [16]byte
	tokens            int
	agent             bool
	start             time.Time
	stamp             bool // token frames carry their write time (HeaderStamp)
}

func (a *answer) appendChatJSON(b []byte) []byte {
	b = append(b, `{"text":`...)
	b = appendText(b, a.tokens)
	b = append(b, `,"question":`...)
	b = jsonx.AppendString(b, a.question)
	b = append(b, `,"chatId":`...)
	b = jsonx.AppendString(b, a.chatID)
	b = append(b, `,"chatMessageId":"`...)
	b = appendUUID(b, &a.msgID)
	b = append(b, `","isStreamValid":false,"sessionId":`...)
	b = jsonx.AppendString(b, a.sessionID)
	return append(b, `,"memoryType":"Buffer Memory"}`...)
}

func (a *answer) appendAgentJSON(b []byte) []byte {
	b = append(b, `{"text":`...)
	b = appendText(b, a.tokens)
	b = append(b, `,"question":`...)
	b = jsonx.AppendString(b, a.question)
	b = append(b, `,"chatId":`...)
	b = jsonx.AppendString(b, a.chatID)
	b = append(b, `,"chatMessageId":"`...)
	b = appendUUID(b, &a.msgID)
	b = append(b, `","executionId":"`...)
	b = appendUUID(b, &a.execID)
	b = append(b, `","agentFlowExecutedData":[`...)
	b = a.appendStartNode(b)
	b = append(b, ',')
	b = a.appendLLMNode(b, false, time.Now())
	b = append(b, `],"sessionId":`...)
	b = jsonx.AppendString(b, a.sessionID)
	return append(b, '}')
}

// appendMetadata appends the data of the metadata event.
func (a *answer) appendMetadata(b []byte) []byte {
	b = append(b, `{"chatId":`...)
	b = jsonx.AppendString(b, a.chatID)
	b = append(b, `,"chatMessageId":"`...)
	b = appendUUID(b, &a.msgID)
	b = append(b, `","question":`...)
	b = jsonx.AppendString(b, a.question)
	b = append(b, `,"sessionId":`...)
	b = jsonx.AppendString(b, a.sessionID)
	if a.agent {
		return append(b, '}')
	}
	return append(b, `,"memoryType":"Buffer Memory"}`...)
}

// appendStartInput appends the Start node's input/output object.
func (a *answer) appendStartInput(b []byte) []byte {
	if a.form != nil && a.question == "" {
		b = append(b, `{"form":`...)
		b = append(b, a.form...)
		return append(b, '}')
	}
	b = append(b, `{"question":`...)
	b = jsonx.AppendString(b, a.question)
	return append(b, '}')
}

func (a *answer) appendStartNode(b []byte) []byte {
	b = append(b, `{"nodeId":"startAgentflow_0","nodeLabel":"Start","data":{"id":"startAgentflow_0","name":"startAgentflow","input":`...)
	b = a.appendStartInput(b)
	b = append(b, `,"output":`...)
	b = a.appendStartInput(b)
	return append(b, `,"state":{}},"previousNodeIds":[],"status":"FINISHED"}`...)
}

// Prices of gpt-4o-mini per token, as Flowise reported them.
const (
	baseInputCost  = 1.5e-7
	baseOutputCost = 6e-7
)

// usage returns the agentflow token counts: 10 + ceil(runes/4) prompt
// tokens (11 for "hi", as in the samples) and one completion token per token.
func (a *answer) usage() (in, out int) {
	return 10 + (utf8.RuneCountInString(a.question)+3)/4, a.tokens
}

func (a *answer) appendUsageCounts(b []byte, in, out int) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, int64(in), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, int64(out), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(in+out), 10)
	return append(b, `,"input_token_details":{},"output_token_details":{}`...)
}

// appendUsageEvent appends the data of the usageMetadata event (no costs).
func (a *answer) appendUsageEvent(b []byte) []byte {
	in, out := a.usage()
	return append(a.appendUsageCounts(b, in, out), '}')
}

func (a *answer) appendLLMNode(b []byte, stream bool, end time.Time) []byte {
	in, out := a.usage()
	b = append(b, `{"nodeId":"llmAgentflow_0","nodeLabel":"Translator","data":{"id":"llmAgentflow_0","name":"llmAgentflow","input":{"messages":[{"role":"user","content":`...)
	b = jsonx.AppendString(b, a.question)
	b = append(b, `}],"llmModel":"chatOpenAI","llmEnableMemory":false,"llmReturnResponseAs":"userMessage","llmModelConfig":{"credential":"",`...)
	if stream {
		// Flowise's streamed copy carries the resolved credential id.
		b = append(b, `"FLOWISE_CREDENTIAL_ID":"aabb681e-d855-4ed7-bd9d-04fa24148f4c",`...)
	}
	b = append(b, `"modelName":"gpt-4o-mini","temperature":0.7,"streaming":true,"basepath":"http://127.0.0.1:3312/v1","baseOptions":"","allowImageUploads":false,"llmModel":"chatOpenAI"}},"output":{"content":`...)
	b = appendText(b, a.tokens)
	startMS, endMS := a.start.UnixMilli(), end.UnixMilli()
	b = append(b, `,"timeMetadata":{"start":`...)
	b = strconv.AppendInt(b, startMS, 10)
	b = append(b, `,"end":`...)
	b = strconv.AppendInt(b, endMS, 10)
	b = append(b, `,"delta":`...)
	b = strconv.AppendInt(b, endMS-startMS, 10)
	b = append(b, `},"calledTools":[],"usageMetadata":`...)
	b = a.appendUsageCounts(b, in, out)
	inCost, outCost := float64(in)*baseInputCost, float64(out)*baseOutputCost
	b = append(b, `,"input_cost":`...)
	b = appendJSNumber(b, inCost)
	b = append(b, `,"output_cost":`...)
	b = appendJSNumber(b, outCost)
	b = append(b, `,"total_cost":`...)
	b = appendJSNumber(b, inCost+outCost)
	b = append(b, `,"base_input_cost":`...)
	b = appendJSNumber(b, baseInputCost)
	b = append(b, `,"base_output_cost":`...)
	b = appendJSNumber(b, baseOutputCost)
	b = append(b, `},"responseMetadata":{"prompt":0,"completion":0,"model_provider":"openai","usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(in), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(out), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(in+out), 10)
	b = append(b, `},"finish_reason":"stop","system_fingerprint":"fp_fake","model_name":"gpt-4o-mini"}},"state":{},"chatHistory":[{"role":"user","content":`...)
	b = jsonx.AppendString(b, a.question)
	b = append(b, `},{"role":"user","content":`...)
	b = appendText(b, a.tokens)
	return append(b, `,"name":"translator"}]},"previousNodeIds":["startAgentflow_0"],"status":"FINISHED"}`...)
}

var (
	hvContentTypeSSE = hvEventStream
	frameLLMNodeErr  = frame("nextAgentFlow", `{"nodeId":"llmAgentflow_0","nodeLabel":"Translator","status":"ERROR"}`)
	frameAgentError  = frame("agentFlowEvent", `"ERROR"`)
)

// sseWriter writes frames, flushing after each; it remembers the first
// error (the client went away).
type sseWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	err   error
	timer *time.Timer
	done  <-chan struct{}
}

func (s *sseWriter) write(b []byte) bool {
	if s.err != nil {
		return false
	}
	if _, s.err = s.w.Write(b); s.err != nil {
		return false
	}
	s.err = s.rc.Flush()
	return s.err == nil
}

// wait sleeps d between tokens; false if the client went away.
func (s *sseWriter) wait(d time.Duration) bool {
	if s.timer == nil {
		s.timer = time.NewTimer(d)
	} else {
		s.timer.Reset(d)
	}
	select {
	case <-s.timer.C:
		return true
	case <-s.done:
		s.timer.Stop()
		return false
	}
}

// stream writes the SSE answer: sample 11's events for a chatflow, sample
// 21's for an agentflow. With fail, it stops halfway through the tokens and
// sends an error frame, as Flowise does when a flow fails mid-stream.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, bp *[]byte, a *answer, delay time.Duration, fail bool) {
	h := w.Header()
	h["Content-Type"] = hvContentTypeSSE
	h["Cache-Control"] = hvNoCache
	h["Connection"] = hvKeepAlive
	h["X-Accel-Buffering"] = hvAccelNo
	w.WriteHeader(http.StatusOK)
	sw := sseWriter{w: w, rc: http.NewResponseController(w), done: r.Context().Done()}
	defer func() {
		if sw.timer != nil {
			sw.timer.Stop()
		}
	}()
	if sw.err = sw.rc.Flush(); sw.err != nil { // res.flushHeaders()
		return
	}
	b := *bp
	defer func() { *bp = b }()

	n := a.tokens
	if fail {
		n /= 2
	}
	tokens := func() bool {
		for i := 0; i < n; i++ {
			if i > 0 && delay > 0 && !sw.wait(delay) {
				return false
			}
			f := b
			if a.stamp {
				b = appendStampedTokenFrame(b[:0], i, time.Now().UnixNano())
				f = b
			} else if i < cachedTokens {
				f = tokenFrames[i]
			} else {
				b = appendTokenFrame(b[:0], i)
				f = b
			}
			if !sw.write(f) {
				return false
			}
		}
		return true
	}

	if a.agent {
		if !sw.write(frameAgentProgress) || !sw.write(frameStartNodeRun) || !sw.write(frameStartNodeDone) {
			return
		}
		b = appendFrameHead(b[:0], "agentFlowExecutedData")
		b = append(b, '[')
		b = a.appendStartNode(b)
		b = append(b, ']')
		b = appendFrameTail(b)
		if !sw.write(b) || !sw.write(frameLLMNodeRun) || !sw.write(frameEmptyToken) || !tokens() {
			return
		}
		if fail {
			b = appendFrameHead(b[:0], "error")
			b = jsonx.AppendString(b, msgFailure)
			b = appendFrameTail(b)
			_ = sw.write(frameLLMNodeErr) && sw.write(frameAgentError) && sw.write(b) && sw.write(frameEnd)
			return
		}
		if !sw.write(frameEmptyToken) || !sw.write(frameEmptyToken) || !sw.write(frameCalledTools) {
			return
		}
		b = appendFrameHead(b[:0], "usageMetadata")
		b = a.appendUsageEvent(b)
		b = appendFrameTail(b)
		if !sw.write(b) || !sw.write(frameLLMNodeDone) {
			return
		}
		b = appendFrameHead(b[:0], "agentFlowExecutedData")
		b = append(b, '[')
		b = a.appendStartNode(b)
		b = append(b, ',')
		b = a.appendLLMNode(b, true, time.Now())
		b = append(b, ']')
		b = appendFrameTail(b)
		if !sw.write(b) || !sw.write(frameAgentFinished) {
			return
		}
	} else {
		if !sw.write(frameStart) || !tokens() {
			return
		}
		if fail {
			b = appendFrameHead(b[:0], "error")
			b = jsonx.AppendString(b, msgFailure)
			b = appendFrameTail(b)
			_ = sw.write(b) && sw.write(frameEnd)
			return
		}
	}
	b = appendFrameHead(b[:0], "metadata")
	b = a.appendMetadata(b)
	b = appendFrameTail(b)
	_ = sw.write(b) && sw.write(frameEnd)
}

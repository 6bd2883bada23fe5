package fakeflow

import (
	"math"
	"strconv"
	"sync"
)

// baseWords are the answer's tokens, as Flowise streamed them in the samples.
var baseWords = [...]string{"Hello", " from", " the", " fake", " OpenAI", " server."}

// tokenText returns the i-th token (0-based) of the answer.
func tokenText(i int) string {
	w := baseWords[i%len(baseWords)]
	if i >= len(baseWords) && w[0] != ' ' {
		return " " + w
	}
	return w
}

// cachedTokens is how many token frames and text prefixes are precomputed.
const cachedTokens = 1024

var (
	// tokenFrames[i] is the whole SSE frame of token i.
	tokenFrames [cachedTokens][]byte
	// textAll is the concatenation of the first cachedTokens tokens; the text
	// of n tokens is textAll[:textEnd[n]]. Tokens need no JSON escaping.
	textAll string
	textEnd [cachedTokens + 1]int
)

// Fixed frames.
var (
	frameStart         = frame("start", `""`)
	frameEmptyToken    = frame("token", `""`)
	frameEnd           = frame("end", `"[DONE]"`)
	frameAgentProgress = frame("agentFlowEvent", `"INPROGRESS"`)
	frameAgentFinished = frame("agentFlowEvent", `"FINISHED"`)
	frameStartNodeRun  = frame("nextAgentFlow", `{"nodeId":"startAgentflow_0","nodeLabel":"Start","status":"INPROGRESS"}`)
	frameStartNodeDone = frame("nextAgentFlow", `{"nodeId":"startAgentflow_0","nodeLabel":"Start","status":"FINISHED"}`)
	frameLLMNodeRun    = frame("nextAgentFlow", `{"nodeId":"llmAgentflow_0","nodeLabel":"Translator","status":"INPROGRESS"}`)
	frameLLMNodeDone   = frame("nextAgentFlow", `{"nodeId":"llmAgentflow_0","nodeLabel":"Translator","status":"FINISHED"}`)
	frameCalledTools   = frame("calledTools", `[]`)
)

const (
	framePrefix = "message:\ndata:"
	frameSuffix = "\n\n"
)

func frame(event, data string) []byte {
	return []byte(framePrefix + `{"event":"` + event + `","data":` + data + `}` + frameSuffix)
}

func init() {
	var text []byte
	for i := 0; i < cachedTokens; i++ {
		t := tokenText(i)
		tokenFrames[i] = appendTokenFrame(nil, i)
		text = append(text, t...)
		textEnd[i+1] = len(text)
	}
	textAll = string(text)
}

// appendTokenFrame appends the SSE frame of token i (tokenFrames[i] holds it
// precomputed for i < cachedTokens).
func appendTokenFrame(b []byte, i int) []byte {
	b = append(b, framePrefix+`{"event":"token","data":"`...)
	b = append(b, tokenText(i)...)
	return append(b, `"}`+frameSuffix...)
}

// appendText appends the JSON string of the first n tokens' concatenation.
func appendText(b []byte, n int) []byte {
	b = append(b, '"')
	if n <= cachedTokens {
		b = append(b, textAll[:textEnd[n]]...)
	} else {
		b = append(b, textAll...)
		for i := cachedTokens; i < n; i++ {
			b = append(b, tokenText(i)...)
		}
	}
	return append(b, '"')
}

// appendFrameHead and appendFrameTail wrap a frame built in place.
func appendFrameHead(b []byte, event string) []byte {
	b = append(b, framePrefix+`{"event":"`...)
	b = append(b, event...)
	return append(b, `","data":`...)
}

func appendFrameTail(b []byte) []byte {
	return append(b, `}`+frameSuffix...)
}

const hexDigits = "0123456789abcdef"

// appendJSNumber appends f formatted like JavaScript's Number.prototype.toString
// (which JSON.stringify uses): 0.0000016499999999999999, 1.5e-7, 0.7, 17.
func appendJSNumber(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	if f == 0 {
		return append(b, '0')
	}
	if f < 0 {
		b = append(b, '-')
		f = -f
	}
	var tmp [32]byte
	e := strconv.AppendFloat(tmp[:0], f, 'e', -1, 64) // d.ddddde±XX
	var digits [24]byte
	k := 0
	i := 0
	for ; i < len(e) && e[i] != 'e'; i++ {
		if e[i] != '.' {
			digits[k] = e[i]
			k++
		}
	}
	exp, _ := strconv.Atoi(string(e[i+1:]))
	n := exp + 1
	d := digits[:k]
	switch {
	case k <= n && n <= 21:
		b = append(b, d...)
		for j := k; j < n; j++ {
			b = append(b, '0')
		}
	case 0 < n && n <= 21:
		b = append(b, d[:n]...)
		b = append(b, '.')
		b = append(b, d[n:]...)
	case -6 < n && n <= 0:
		b = append(b, '0', '.')
		for j := 0; j < -n; j++ {
			b = append(b, '0')
		}
		b = append(b, d...)
	default:
		b = append(b, d[0])
		if k > 1 {
			b = append(b, '.')
			b = append(b, d[1:]...)
		}
		b = append(b, 'e')
		if n-1 < 0 {
			b = append(b, '-')
			b = strconv.AppendInt(b, int64(1-n), 10)
		} else {
			b = append(b, '+')
			b = strconv.AppendInt(b, int64(n-1), 10)
		}
	}
	return b
}

// appendUUID appends the canonical text of the 16 bytes u.
func appendUUID(b []byte, u *[16]byte) []byte {
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}

// isUUID reports whether s has the 8-4-4-4-12 hex shape of a UUID (any
// version, either case).
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// bufPool recycles response buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

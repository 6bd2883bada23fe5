package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/flowgate/flowgate/flow"
)

const testFlow = "3f1c2a9e-1111-4222-8333-444455556666"

func predictionReq(body string) *Request {
	return &Request{
		Info:        flow.Identify("/api/v1/prediction/" + testFlow),
		Body:        []byte(body),
		ContentType: "application/json",
		Vary:        []string{"Bearer a", ""},
	}
}

func langflowReq(body string) *Request {
	r := predictionReq(body)
	r.Info = flow.Identify("/api/v1/run/" + testFlow)
	return r
}

func mustDerive(t *testing.T, r *Request) Key {
	t.Helper()
	k, bypass := Derive(r)
	if bypass != "" {
		t.Fatalf("Derive(%.200s) bypassed: %q", r.Body, bypass)
	}
	return k
}

func TestDeriveKeyFields(t *testing.T) {
	r := predictionReq(`{"question":"hi"}`)
	r.Stream = true
	k := mustDerive(t, r)
	if k.Workflow != testFlow || !k.Stream {
		t.Fatalf("key = %+v, want workflow %s, stream", k, testFlow)
	}
}

// Pairs of requests that are one input to the flow.
func TestDeriveSameKey(t *testing.T) {
	const base = `{"question":"What is the capital of France?","overrideConfig":{"temperature":0.2,"vars":{"a":1,"b":[1,2]}}}`
	tests := []struct {
		name string
		a, b string
	}{
		{"key order", base, `{"overrideConfig":{"vars":{"b":[1,2],"a":1},"temperature":0.2},"question":"What is the capital of France?"}`},
		{"whitespace", base, " {\n\t\"question\" : \"What is the capital of France?\",\r\n \"overrideConfig\":{ \"temperature\":0.2 , \"vars\":{\"a\":1,\"b\":[ 1 , 2 ]}} } \n"},
		{"streaming", base, `{"streaming":true,` + base[1:]},
		{"streaming string", base, `{"streaming":"true",` + base[1:]},
		{"lead email", base, `{"leadEmail":"a@b.c",` + base[1:]},
		{"unknown member", `{"question":"hi"}`, `{"question":"hi","evaluation":false}`},
		{"integer forms", `{"question":"q","overrideConfig":{"n":1}}`, `{"question":"q","overrideConfig":{"n":1.0}}`},
		{"exponent", `{"question":"q","overrideConfig":{"n":1}}`, `{"question":"q","overrideConfig":{"n":1e0}}`},
		{"scaled", `{"question":"q","overrideConfig":{"n":1}}`, `{"question":"q","overrideConfig":{"n":10E-1}}`},
		{"fraction", `{"question":"q","overrideConfig":{"n":0.25}}`, `{"question":"q","overrideConfig":{"n":2.50e-1}}`},
		{"big exponent", `{"question":"q","overrideConfig":{"n":1e400}}`, `{"question":"q","overrideConfig":{"n":10.0e+399}}`},
		{"negative zero", `{"question":"q","overrideConfig":{"n":0}}`, `{"question":"q","overrideConfig":{"n":-0.000e5}}`},
		{"escape", `{"question":"a"}`, `{"question":"\u0061"}`},
		{"escaped key", `{"question":"a"}`, `{"q\u0075estion":"a"}`},
		{"solidus", `{"question":"a/b"}`, `{"question":"a\/b"}`},
		{"surrogate pair", `{"question":"😀"}`, `{"question":"\ud83d\ude00"}`},
		{"non-ASCII", `{"question":"é"}`, `{"question":"\u00E9"}`},
		{"duplicate last wins", `{"question":"b"}`, `{"question":"a","question":"b"}`},
		{"nested duplicate", `{"question":"q","overrideConfig":{"t":2}}`, `{"question":"q","overrideConfig":{"t":1,"t":2}}`},
		{"duplicate by escape", `{"question":"q","overrideConfig":{"t":2}}`, `{"question":"q","overrideConfig":{"t":1,"\u0074":2}}`},
		{"empty containers", `{"question":"q","history":[],"overrideConfig":{}}`, `{"history":[ ],"overrideConfig":{ },"question":"q"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ka, kb := mustDerive(t, predictionReq(tt.a)), mustDerive(t, predictionReq(tt.b))
			if ka != kb {
				t.Errorf("keys differ:\n%s\n%s", tt.a, tt.b)
			}
		})
	}
}

// Each change of what the flow reads changes the key.
func TestDeriveDifferentKey(t *testing.T) {
	const base = `{"question":"hi","form":{"a":1},"overrideConfig":{"temperature":0.2},"history":[{"type":"userMessage","message":"x"}],"uploads":[{"data":"d","type":"file","name":"n","mime":"text/plain"}]}`
	tests := []struct {
		name string
		body string
	}{
		{"question", strings.Replace(base, `"hi"`, `"hi!"`, 1)},
		{"form", strings.Replace(base, `{"a":1}`, `{"a":2}`, 1)},
		{"overrideConfig", strings.Replace(base, `0.2`, `0.3`, 1)},
		{"history", strings.Replace(base, `"x"`, `"y"`, 1)},
		{"uploads", strings.Replace(base, `"d"`, `"e"`, 1)},
		{"absent", strings.Replace(base, `"form":{"a":1},`, ``, 1)},
		{"null", strings.Replace(base, `"form":{"a":1}`, `"form":null`, 1)},
		{"string number", strings.Replace(base, `0.2`, `"0.2"`, 1)},
		{"array not object", strings.Replace(base, `{"a":1}`, `[1]`, 1)},
		{"empty array not object", strings.Replace(base, `{"a":1}`, `[]`, 1)},
		{"true", strings.Replace(base, `{"a":1}`, `true`, 1)},
		{"false", strings.Replace(base, `{"a":1}`, `false`, 1)},
		{"key joined", strings.Replace(base, `{"a":1}`, `{"a1":""}`, 1)},
		{"nested key", strings.Replace(base, `"temperature"`, `"Temperature"`, 1)},
		{"more precise", strings.Replace(base, `0.2`, `0.20000000000000001`, 1)},
		{"negative", strings.Replace(base, `0.2`, `-0.2`, 1)},
		{"array order", strings.Replace(base, `[{"type"`, `[0,{"type"`, 1)},
	}
	kb := mustDerive(t, predictionReq(base))
	seen := map[[32]byte]string{kb.Sum: "base"}
	for _, tt := range tests {
		k := mustDerive(t, predictionReq(tt.body))
		if prev, ok := seen[k.Sum]; ok {
			t.Errorf("%s: same sum as %s: %s", tt.name, prev, tt.body)
		}
		seen[k.Sum] = tt.name
	}

	// Integers past float64's precision stay apart (Langflow's Python
	// keeps them exact).
	a := mustDerive(t, predictionReq(`{"question":"q","overrideConfig":{"n":12345678901234567890}}`))
	b := mustDerive(t, predictionReq(`{"question":"q","overrideConfig":{"n":12345678901234567891}}`))
	if a == b {
		t.Error("large integers share a key")
	}
}

func TestDeriveRouteAndVary(t *testing.T) {
	const body = `{"question":"hi"}`
	base := mustDerive(t, predictionReq(body))

	internal := predictionReq(body)
	internal.Info = flow.Identify("/api/v1/internal-prediction/" + testFlow)
	if k := mustDerive(t, internal); k.Sum == base.Sum {
		t.Error("internal-prediction shares the prediction key")
	}

	other := predictionReq(body)
	other.Vary = []string{"Bearer b", ""}
	if k := mustDerive(t, other); k.Sum == base.Sum {
		t.Error("another Authorization shares the key")
	}

	// Length prefixes keep values apart however they split.
	x, y := predictionReq(body), predictionReq(body)
	x.Vary, y.Vary = []string{"a", ""}, []string{"", "a"}
	if mustDerive(t, x).Sum == mustDerive(t, y).Sum {
		t.Error(`vary ("a","") == ("","a")`)
	}
	none := predictionReq(body)
	none.Vary = nil
	if mustDerive(t, none).Sum == base.Sum {
		t.Error("no vary headers == two vary headers")
	}

	stream := predictionReq(body)
	stream.Stream = true
	if k := mustDerive(t, stream); k.Sum != base.Sum || !k.Stream || base.Stream {
		t.Error("streaming must be the Stream variant of the same Sum")
	}
}

func TestDeriveLangflow(t *testing.T) {
	const base = `{"input_value":"hi","input_type":"chat","output_type":"chat","output_component":"","tweaks":{"OpenAI-1":{"temperature":0.2}}}`
	k := mustDerive(t, langflowReq(base))
	for _, repl := range [][2]string{
		{`"hi"`, `"ho"`},
		{`"input_type":"chat"`, `"input_type":"text"`},
		{`"output_type":"chat"`, `"output_type":"text"`},
		{`"output_component":""`, `"output_component":"x"`},
		{`0.2`, `0.5`},
	} {
		if mustDerive(t, langflowReq(strings.Replace(base, repl[0], repl[1], 1))) == k {
			t.Errorf("%s -> %s: same key", repl[0], repl[1])
		}
	}
	same := `{"tweaks":{"OpenAI-1":{"temperature":2e-1}},"output_component":"","output_type":"chat","input_type":"chat","input_value":"hi","stream":true,"question":"ignored"}`
	if mustDerive(t, langflowReq(same)) != k {
		t.Error("reordered Langflow body with ignored members: another key")
	}
	// The same body on a Flowise route is another input.
	if mustDerive(t, predictionReq(base)).Sum == k.Sum {
		t.Error("Langflow and Flowise routes share a key")
	}
}

func TestDeriveStateless(t *testing.T) {
	plain := predictionReq(`{"question":"hi","overrideConfig":{"temperature":0.2}}`)
	plain.Stateless = true
	k := mustDerive(t, plain)
	// Cached, but keyed by the session ids: another conversation is
	// another entry, so no replay carries another caller's chosen id.
	seen := map[Key]string{k: "no session"}
	for _, body := range []string{
		`{"question":"hi","chatId":"c1","overrideConfig":{"temperature":0.2}}`,
		`{"question":"hi","chatId":"c2","overrideConfig":{"temperature":0.2}}`,
		`{"question":"hi","sessionId":"s1","overrideConfig":{"temperature":0.2}}`,
		`{"question":"hi","overrideConfig":{"sessionId":"s2","temperature":0.2}}`,
		`{"question":"hi","overrideConfig":{"sessionId":"s3","temperature":0.2}}`,
	} {
		r := predictionReq(body)
		r.Stateless = true
		got := mustDerive(t, r)
		if prev, dup := seen[got]; dup {
			t.Errorf("stateless %s: same key as %s", body, prev)
		}
		seen[got] = body
		r2 := predictionReq(body)
		r2.Stateless = true
		if mustDerive(t, r2) != got {
			t.Errorf("stateless %s: the same conversation got another key", body)
		}
	}
	// Langflow echoes session_id in its answer: never cached, at the top
	// or in a component's tweaks.
	for _, body := range []string{
		`{"input_value":"hi","session_id":"abc"}`,
		`{"input_value":"hi","tweaks":{"ChatInput-1":{"session_id":"abc"}}}`,
		`{"input_value":"hi","tweaks":{"Memory-1":{"s\u0065ssion_id":"abc"}}}`,
	} {
		lf := langflowReq(body)
		lf.Stateless = true
		if _, bypass := Derive(lf); bypass != BypassSession {
			t.Errorf("stateless Langflow %s: bypass %q", body, bypass)
		}
	}
}

func TestDeriveBypass(t *testing.T) {
	deep := func(n int) string {
		return `{"question":"q","form":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`
	}
	tests := []struct {
		name   string
		path   string // default: a prediction
		ctype  string // default: application/json
		body   string
		nilB   bool
		stless bool
		want   string
	}{
		{name: "webhook", path: "/api/v1/webhook/x", body: `{"question":"q"}`, want: BypassRoute},
		{name: "mcp", path: "/api/v1/mcp/x", body: `{"question":"q"}`, want: BypassRoute},
		{name: "vector upsert", path: "/api/v1/vector/upsert/x", body: `{"question":"q"}`, want: BypassRoute},
		{name: "document store upsert", path: "/api/v1/document-store/upsert/x", body: `{}`, want: BypassRoute},
		{name: "other", path: "/api/v1/chatflows", body: `{}`, want: BypassRoute},
		{name: "nil body", nilB: true, want: BypassNoBody},
		{name: "empty body", body: ``, want: BypassNoBody},
		{name: "multipart", ctype: "multipart/form-data; boundary=x", body: `{"question":"q"}`, want: BypassNotJSON},
		{name: "form", ctype: "application/x-www-form-urlencoded", body: `question=q`, want: BypassNotJSON},
		{name: "no content type", ctype: "-", body: `{"question":"q"}`, want: BypassNotJSON},
		{name: "json suffix", ctype: "application/vnd.api+json", body: `{"question":"q"}`, want: BypassNotJSON},
		{name: "json with charset", ctype: "Application/JSON ; charset=utf-8", body: `{"question":"q"}`, want: ""},
		{name: "array", body: `[{"question":"q"}]`, want: BypassBadJSON},
		{name: "string", body: `"q"`, want: BypassBadJSON},
		{name: "truncated", body: `{"question":"q"`, want: BypassBadJSON},
		{name: "trailing", body: `{"question":"q"} {}`, want: BypassBadJSON},
		{name: "trailing comma", body: `{"question":"q",}`, want: BypassBadJSON},
		{name: "bad escape", body: `{"question":"\x"}`, want: BypassBadJSON},
		{name: "control character", body: "{\"question\":\"a\x01\"}", want: BypassBadJSON},
		{name: "invalid UTF-8", body: "{\"question\":\"\xff\"}", want: BypassBadJSON},
		{name: "invalid UTF-8 in a long string", body: "{\"question\":\"" + strings.Repeat("abcdefgh", 9) + "\xc3\"}", want: BypassBadJSON},
		{name: "control character in a long string", body: "{\"question\":\"" + strings.Repeat("abcdefgh", 9) + "\x1f\"}", want: BypassBadJSON},
		{name: "lone high surrogate", body: `{"question":"\ud800"}`, want: BypassBadJSON},
		{name: "lone low surrogate", body: `{"question":"\udc00x"}`, want: BypassBadJSON},
		{name: "reversed pair", body: `{"question":"\udc00\ud800"}`, want: BypassBadJSON},
		{name: "BOM", body: "\xef\xbb\xbf{\"question\":\"q\"}", want: BypassBadJSON},
		{name: "leading zero", body: `{"question":01}`, want: BypassBadJSON},
		{name: "huge exponent", body: `{"question":"q","form":1e1000000000}`, want: BypassBadJSON},
		{name: "long zero-padded exponent", body: `{"question":"q","form":1e0000000000001}`, want: ""},
		{name: "depth 10000", body: deep(10000), want: ""},
		{name: "depth 10001", body: deep(10001), want: BypassBadJSON},
		{name: "chatId", body: `{"question":"q","chatId":"c"}`, want: BypassSession},
		{name: "chatId null", body: `{"question":"q","chatId":null}`, want: BypassSession},
		{name: "chatId duplicate null", body: `{"question":"q","chatId":"x","chatId":null}`, want: BypassSession},
		{name: "chatId escaped", body: `{"question":"q","\u0063hatId":"c"}`, want: BypassSession},
		{name: "sessionId", body: `{"question":"q","sessionId":"s"}`, want: BypassSession},
		{name: "overrideConfig sessionId", body: `{"question":"q","overrideConfig":{"sessionId":"s"}}`, want: BypassSession},
		{name: "earlier overrideConfig sessionId", body: `{"question":"q","overrideConfig":{"sessionId":"s"},"overrideConfig":{}}`, want: BypassSession},
		{name: "stateless", body: `{"question":"q","chatId":"c","overrideConfig":{"sessionId":"s"}}`, stless: true, want: ""},
		{name: "nested sessionId is no session", body: `{"question":"q","overrideConfig":{"vars":{"sessionId":"s"}}}`, want: ""},
		{name: "chatid case", body: `{"question":"q","chatid":"c"}`, want: ""},
		{name: "humanInput", body: `{"question":"q","humanInput":{"type":"proceed"}}`, want: BypassResume},
		{name: "action", body: `{"question":"q","action":{"id":"a"}}`, want: BypassResume},
		{name: "action null", body: `{"question":"q","action":null}`, want: ""},
		{name: "action duplicate", body: `{"question":"q","action":{},"action":null}`, want: BypassResume},
		{name: "resume stateless", body: `{"question":"q","humanInput":{}}`, stless: true, want: BypassResume},
		{name: "resume with session", body: `{"chatId":"c","humanInput":{"type":"proceed"}}`, want: BypassResume},
		{name: "langflow session", path: "/api/v1/run/x", body: `{"input_value":"q","session_id":"s"}`, want: BypassSession},
		{name: "langflow session stateless", path: "/api/v1/run/x", body: `{"input_value":"q","session_id":null}`, stless: true, want: BypassSession},
		{name: "langflow ignores chatId", path: "/api/v1/run/x", body: `{"input_value":"q","chatId":"s"}`, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := predictionReq(tt.body)
			if tt.path != "" {
				r.Info = flow.Identify(tt.path)
			}
			switch tt.ctype {
			case "":
			case "-":
				r.ContentType = ""
			default:
				r.ContentType = tt.ctype
			}
			if tt.nilB {
				r.Body = nil
			}
			r.Stateless = tt.stless
			k, got := Derive(r)
			if got != tt.want {
				t.Fatalf("bypass = %q, want %q", got, tt.want)
			}
			if got != "" && k != (Key{}) {
				t.Errorf("bypassed with a non-zero key %+v", k)
			}
		})
	}
}

// TestDerivePooledScratch: a scratch reused after a large, deep or
// escaped body gives the same keys as a fresh one.
func TestDerivePooledScratch(t *testing.T) {
	const body = `{"question":"q","overrideConfig":{"b":1,"a":"\u0078"}}`
	want := mustDerive(t, predictionReq(body))
	for range 3 {
		mustDerive(t, predictionReq(`{"question":"`+strings.Repeat(`\u0041`, 100)+`","form":`+strings.Repeat("[", 500)+strings.Repeat("]", 500)+`}`))
		mustDerive(t, predictionReq(`{"question":"`+strings.Repeat("x", 3*flushAt)+`"}`))
		Derive(predictionReq(`{"question":"q","form":[1,`)) // fails midway
		if got := mustDerive(t, predictionReq(body)); got != want {
			t.Fatal("key changed after reuse of the scratch")
		}
	}
}

// Bodies larger than flushAt are hashed as they are written, in pieces;
// the sum must not depend on where the pieces fall.
func TestDeriveLargeMatchesReference(t *testing.T) {
	var many strings.Builder // more members than the insertion sort takes, with duplicates
	many.WriteString(`{`)
	for i := range 3000 {
		if i > 0 {
			many.WriteByte(',')
		}
		many.WriteString(`"k` + strconv.Itoa((i*7919)%1000) + `":` + strconv.Itoa(i))
	}
	many.WriteString(`}`)
	escaped := strings.Repeat(`a\/b\u00e9\ud83d\ude00\n\"`, 3000)
	bodies := map[string]string{
		"plain string":   `{"question":"` + strings.Repeat("iVBORw0KGgo+/AAA", 8<<10) + `"}`,
		"escaped string": `{"question":"` + escaped + `"}`,
		"escaped key":    `{"question":"q","form":{"` + escaped + `":1}}`,
		"numbers":        `{"question":"q","form":[` + strings.TrimSuffix(strings.Repeat(`1.50e3,-0,12345678901234567890,`, 3000), ",") + `]}`,
		"many members":   `{"question":"q","overrideConfig":` + many.String() + `}`,
		"nested":         `{"question":"q","form":` + strings.Repeat(`{"b":[1,"x"],"a":`, 2000) + `null` + strings.Repeat(`}`, 2000) + `}`,
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			for _, r := range []*Request{predictionReq(body), langflowReq(strings.Replace(body, `"question"`, `"input_value"`, 1))} {
				k, bypass := Derive(r)
				want, wantBypass, _ := refDerive(r)
				if bypass != wantBypass || bypass != "" {
					t.Fatalf("bypass %q, reference %q", bypass, wantBypass)
				}
				if k.Sum != sha256.Sum256(want) {
					t.Fatal("sum differs from the reference")
				}
			}
		})
	}
}

// The reference canonicaliser: encoding/json into any, sorted re-encode.

// refDerive returns the canonical stream Derive should hash for r, or the
// bypass reason it should give; lenient lists the internal errors that
// may make Derive stricter than encoding/json ("bad_json" where encoding/json
// decodes).
func refDerive(r *Request) (out []byte, reason string, lenient []error) {
	var fields []string
	langflow := false
	switch r.Info.Route {
	case flow.RoutePrediction, flow.RouteInternalPrediction:
		fields = []string{"question", "form", "overrideConfig", "history", "uploads"}
		if r.Stateless {
			fields = append(fields, "chatId", "sessionId")
		}
	case flow.RouteLangflowRun:
		fields, langflow = []string{"input_value", "input_type", "output_type", "output_component", "tweaks"}, true
	default:
		return nil, BypassRoute, nil
	}
	if len(r.Body) == 0 {
		return nil, BypassNoBody, nil
	}
	if !isJSONType(r.ContentType) {
		return nil, BypassNotJSON, nil
	}
	if !json.Valid(r.Body) {
		return nil, BypassBadJSON, nil
	}
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil, BypassBadJSON, nil
	}
	top, ok := v.(map[string]any)
	if !ok {
		return nil, BypassBadJSON, nil
	}
	if !utf8.Valid(r.Body) || surrogateEscape.Match(r.Body) {
		lenient = append(lenient, errUnicode)
	}
	if longExponent.Match(r.Body) {
		lenient = append(lenient, errExponent)
	}

	resume, session := refSessions(r.Body, langflow)
	if resume {
		return nil, BypassResume, lenient
	}
	if session && (!r.Stateless || langflow) {
		return nil, BypassSession, lenient
	}
	out = appendLenString(nil, keyVersion)
	out = appendLenString(out, r.Info.Route)
	for _, f := range fields {
		fv, ok := top[f]
		if !ok {
			out = append(out, 0)
			continue
		}
		out = refAppend(append(out, 1), fv)
	}
	out = binary.BigEndian.AppendUint32(out, uint32(len(r.Vary)))
	for _, v := range r.Vary {
		out = appendLenString(out, v)
	}
	return out, "", lenient
}

var (
	surrogateEscape = regexp.MustCompile(`\\u[dD][89a-fA-F]`)
	longExponent    = regexp.MustCompile(`[eE][+-]?0*[1-9][0-9]{9,}`)
)

// refSessions walks the top level with encoding/json's tokenizer, every
// duplicate included.
func refSessions(body []byte, langflow bool) (resume, session bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil {
		panic(err)
	}
	for dec.More() {
		kt, _ := dec.Token()
		k := kt.(string)
		var raw json.RawMessage
		switch {
		case langflow && k == "tweaks":
			if err := dec.Decode(&raw); err != nil {
				panic(err)
			}
			session = session || bytes.Contains(raw, []byte("session_id")) || bytes.Contains(raw, []byte(`\u`))
			continue
		case langflow:
			session = session || k == "session_id"
		case k == "chatId" || k == "sessionId":
			session = true
		case k == "humanInput" || k == "action":
			if err := dec.Decode(&raw); err != nil {
				panic(err)
			}
			resume = resume || string(raw) != "null"
			continue
		case k == "overrideConfig":
			if err := dec.Decode(&raw); err != nil {
				panic(err)
			}
			if len(raw) > 0 && raw[0] == '{' {
				inner := json.NewDecoder(bytes.NewReader(raw))
				inner.Token()
				for inner.More() {
					ik, _ := inner.Token()
					session = session || ik.(string) == "sessionId"
					var skip json.RawMessage
					inner.Decode(&skip)
				}
			}
			continue
		}
		if err := dec.Decode(&raw); err != nil {
			panic(err)
		}
	}
	return resume, session
}

func refAppend(out []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(out, 'n')
	case bool:
		if v {
			return append(out, 't')
		}
		return append(out, 'f')
	case string:
		out = append(out, 's')
		return appendLenString(out, v)
	case json.Number:
		return refNumber(out, string(v))
	case []any:
		out = append(out, '[')
		for _, x := range v {
			out = refAppend(out, x)
		}
		return append(out, '.')
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out = append(out, '{')
		for _, k := range keys {
			out = appendLenString(append(out, 's'), k)
			out = refAppend(out, v[k])
		}
		return append(out, '.')
	}
	panic("unexpected type")
}

// refNumber: digits × 10^e, written from the number's text with strings
// and strconv.
func refNumber(out []byte, s string) []byte {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	exp := int64(0)
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		var err error
		if exp, err = strconv.ParseInt(strings.TrimPrefix(s[i+1:], "+"), 10, 64); err != nil {
			panic(err)
		}
		s = s[:i]
	}
	intPart, frac, _ := strings.Cut(s, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	out = append(out, 'd')
	if digits == "" {
		out = append(out, '+')
		return append(out, make([]byte, 12)...)
	}
	trimmed := strings.TrimRight(digits, "0")
	e := exp - int64(len(frac)) + int64(len(digits)-len(trimmed))
	if neg {
		out = append(out, '-')
	} else {
		out = append(out, '+')
	}
	out = binary.BigEndian.AppendUint64(out, uint64(e))
	return appendLenString(out, trimmed)
}

// fuzzRequest makes a request for body; sel picks the route, the
// statelessness and the vary values.
func fuzzRequest(body []byte, sel uint8) *Request {
	paths := []string{"/api/v1/prediction/f", "/api/v1/internal-prediction/f", "/api/v1/run/f", "/api/v1/webhook/f"}
	r := &Request{
		Info:        flow.Identify(paths[sel&3]),
		Body:        body,
		ContentType: "application/json",
		Stateless:   sel&4 != 0,
		Stream:      sel&8 != 0,
	}
	if sel&16 != 0 {
		r.Vary = []string{string(body[:min(len(body), 3)]), ""}
	}
	return r
}

func FuzzDerive(f *testing.F) {
	for _, s := range []string{
		`{"question":"What is the capital of France?","overrideConfig":{"temperature":0.2}}`,
		`{"question":"hi","streaming":true,"chatId":"x","overrideConfig":{"sessionId":"s","vars":{"b":[1,2.50,-0,1e3],"a":null}}}`,
		`{"form":{"x":[true,false,{"\u0041":"\ud83d\ude00"}]},"history":[{"type":"userMessage","message":"é\n"}],"uploads":[]}`,
		`{"a":1,"a":2,"question":"q","question":"r"}`,
		`{"input_value":"hi","tweaks":{"a":{"b":1E+2}},"session_id":"s"}`,
		`{"action":null,"humanInput":{"type":"proceed"}}`,
		`{"question":"\ud800"}`,
		"{\"question\":\"\xff\"}",
		`{"question":1e1234567890}`,
		`[1,2]`,
		`{"question":"q"`,
		` { "question" : [ [ [ ] ] , { } ] } `,
		`{"question":"a long string with \"escapes\" \\ and more than eight bytes between them"}`,
	} {
		for sel := range uint8(32) {
			f.Add([]byte(s), sel)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, sel uint8) {
		r := fuzzRequest(body, sel)
		k, bypass := Derive(r)
		want, wantBypass, lenient := refDerive(r)

		if bypass == BypassBadJSON && wantBypass != BypassBadJSON {
			// Stricter than encoding/json only for the documented reasons.
			s := scratchPool.Get().(*scratch)
			_, err := s.canonical(r, flowiseFields, false)
			s.release()
			for _, l := range lenient {
				if errors.Is(err, l) {
					return
				}
			}
			t.Fatalf("bad_json (%v), reference says %q: %q", err, wantBypass, body)
		}
		if bypass != wantBypass {
			t.Fatalf("bypass %q, reference %q: %q", bypass, wantBypass, body)
		}
		if bypass != "" {
			return
		}
		if k.Sum != sha256.Sum256(want) {
			s := scratchPool.Get().(*scratch)
			s.canonical(r, fieldsOf(r), r.Info.Route == flow.RouteLangflowRun)
			t.Fatalf("canonical form differs for %q:\n got %q\nwant %q", body, s.out, want)
		}
		if k.Workflow != r.Info.WorkflowID || k.Stream != r.Stream {
			t.Fatalf("key %+v for %+v", k, r.Info)
		}
		// The same sum when the stream is hashed in the smallest pieces.
		tiny := &scratch{flushAt: 1}
		if reason, _ := tiny.canonical(r, fieldsOf(r), r.Info.Route == flow.RouteLangflowRun); reason != "" || tiny.sum() != k.Sum {
			t.Fatalf("hashed in pieces: %q, another sum", reason)
		}
	})
}

func fieldsOf(r *Request) []string {
	if r.Info.Route == flow.RouteLangflowRun {
		return langflowFields
	}
	if r.Stateless {
		return flowiseStatelessFields
	}
	return flowiseFields
}

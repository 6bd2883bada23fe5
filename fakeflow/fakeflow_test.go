package fakeflow

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const flowUUID = "4f2c6a10-7b1e-4c3d-9a8b-0123456789ab"

// ---------- helpers ----------

// startTest starts an Instance for s on a free port, closed at cleanup.
func startTest(t *testing.T, s *Server) *Instance {
	t.Helper()
	inst, err := startServer("127.0.0.1:0", s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill() })
	return inst
}

// newClient returns a client whose idle connections are closed at cleanup.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

type rawResponse struct {
	status int
	header http.Header
	te     []string
	body   []byte
}

// rawDo sends one request on a fresh TCP connection and reads the
// response with http.ReadResponse, which keeps hop-by-hop headers such as
// Connection and Keep-Alive visible.
func rawDo(t *testing.T, addr, method, path string, hdr map[string]string, body string) rawResponse {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var req strings.Builder
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, addr)
	for k, v := range hdr {
		fmt.Fprintf(&req, "%s: %s\r\n", k, v)
	}
	if body != "" || method == http.MethodPost {
		fmt.Fprintf(&req, "Content-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n")
	req.WriteString(body)
	if _, err := io.WriteString(c, req.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rawResponse{status: resp.StatusCode, header: resp.Header, te: resp.TransferEncoding, body: b}
}

var jsonCT = map[string]string{"Content-Type": "application/json"}

func withHeaders(extra ...string) map[string]string {
	h := map[string]string{"Content-Type": "application/json"}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

// sample is one capture from a real Flowise.
type sample struct {
	status string
	header http.Header
	body   string
}

var curlTrailer = regexp.MustCompile(`\n\[curl time_total=[^\]]*\]\n?$`)

// samplesDir finds the Flowise captures: the shared ones next to the repo
// (../../shared/samples), else the copy in testdata/samples that a clean
// clone carries; the test is skipped only when neither exists.
func samplesDir(t *testing.T) string {
	t.Helper()
	for _, dir := range []string{filepath.Join("..", "..", "shared", "samples"), filepath.Join("testdata", "samples")} {
		if _, err := os.Stat(filepath.Join(dir, "10-prediction-nonstream.txt")); err == nil {
			return dir
		}
	}
	t.Skip("Flowise samples not found in ../../shared/samples nor testdata/samples")
	return ""
}

func loadSample(t *testing.T, name string) sample {
	t.Helper()
	dir := samplesDir(t)
	raw, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	head, body, ok := strings.Cut(string(raw), "\r\n\r\n")
	if !ok {
		t.Fatalf("%s: no header/body separator", name)
	}
	lines := strings.Split(head, "\r\n")
	h := http.Header{}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ": ")
		h.Add(k, v)
	}
	return sample{status: lines[0], header: h, body: curlTrailer.ReplaceAllString(body, "")}
}

var (
	reUUID     = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	reTimeMeta = regexp.MustCompile(`"timeMetadata":\{"start":\d+,"end":\d+,"delta":\d+\}`)
)

// normalize blanks out what differs between runs: ids and timestamps.
func normalize(s string) string {
	s = reUUID.ReplaceAllString(s, "<uuid>")
	return reTimeMeta.ReplaceAllString(s, `"timeMetadata":<time>`)
}

// keyPaths lists every object key of a JSON document with its path, in
// document order.
func keyPaths(t *testing.T, doc string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	var out []string
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				p := path + "." + k.(string)
				out = append(out, p)
				if err := walk(p); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
			_, err = dec.Token()
			return err
		}
		return nil
	}
	if err := walk(""); err != nil {
		t.Fatalf("keyPaths: %v in %s", err, doc)
	}
	return out
}

var reFrame = regexp.MustCompile(`^message:\ndata:(\{.*\})$`)

type event struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// parseFrames splits an SSE body into frames and checks each one's format.
func parseFrames(t *testing.T, body string) ([]string, []event) {
	t.Helper()
	if !strings.HasSuffix(body, "\n\n") {
		t.Fatalf("stream does not end with a blank line: %q", body)
	}
	frames := strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n")
	evs := make([]event, len(frames))
	for i, f := range frames {
		m := reFrame.FindStringSubmatch(f)
		if m == nil {
			t.Fatalf("frame %d has a bad format: %q", i, f)
		}
		if err := json.Unmarshal([]byte(m[1]), &evs[i]); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	return frames, evs
}

func eventNames(evs []event) []string {
	n := make([]string, len(evs))
	for i, e := range evs {
		n[i] = e.Event
	}
	return n
}

// readFrame reads one SSE frame (up to a blank line).
func readFrame(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\n" {
			return b.String(), nil
		}
	}
}

// ---------- wire-format tests against the samples ----------

func TestSamples(t *testing.T) {
	cases := []struct {
		name   string
		sample string
		opts   Options
		hdr    map[string]string
		body   string
		stream bool
	}{
		{"chatflow json", "10-prediction-nonstream.txt", Options{}, jsonCT, `{"question":"hi"}`, false},
		{"chatflow stream", "11-prediction-stream.txt", Options{}, jsonCT, `{"question":"hi","streaming":true}`, true},
		{"chatflow stream string true", "11-prediction-stream.txt", Options{}, jsonCT, `{"question":"hi","streaming":"true"}`, true},
		{"agentflow json", "20-agentflow-nonstream.txt", Options{Agentflow: true}, jsonCT, `{"question":"hi"}`, false},
		{"agentflow stream", "21-agentflow-stream.txt", Options{Agentflow: true}, jsonCT, `{"question":"hi","streaming":true}`, true},
		{"agentflow json via header", "20-agentflow-nonstream.txt", Options{}, withHeaders(HeaderMode, "agentflow"), `{"question":"hi"}`, false},
		{"agentflow stream via header", "21-agentflow-stream.txt", Options{}, withHeaders(HeaderMode, "agentflow"), `{"question":"hi","streaming":true}`, true},
		{"chatflow via header on agentflow instance", "10-prediction-nonstream.txt", Options{Agentflow: true}, withHeaders(HeaderMode, "chatflow"), `{"question":"hi"}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := loadSample(t, tc.sample)
			inst := startTest(t, New(tc.opts))
			for _, route := range []string{"/api/v1/prediction/", "/api/v1/internal-prediction/"} {
				got := rawDo(t, inst.Addr(), http.MethodPost, route+flowUUID, tc.hdr, tc.body)
				if fmt.Sprintf("HTTP/1.1 %d OK", got.status) != want.status {
					t.Fatalf("%s: status %d, sample %q", route, got.status, want.status)
				}
				// Header set: every header of the sample, with its value
				// where the value is not per-response.
				for k := range want.header {
					switch k {
					case "Date":
						if got.header.Get(k) == "" {
							t.Errorf("%s: no Date header", route)
						}
					case "Transfer-Encoding":
						if strings.Join(got.te, ",") != want.header.Get(k) {
							t.Errorf("%s: Transfer-Encoding %v, sample %q", route, got.te, want.header.Get(k))
						}
					case "Content-Length":
						if got.header.Get(k) != fmt.Sprint(len(got.body)) {
							t.Errorf("%s: Content-Length %q for %d bytes", route, got.header.Get(k), len(got.body))
						}
					case "Etag":
						if got.header.Get(k) != etagOf(got.body) {
							t.Errorf("%s: ETag %q, want %q", route, got.header.Get(k), etagOf(got.body))
						}
					default:
						if got.header.Get(k) != want.header.Get(k) {
							t.Errorf("%s: %s = %q, sample %q", route, k, got.header.Get(k), want.header.Get(k))
						}
					}
				}
				for k := range got.header {
					if _, ok := want.header[k]; !ok {
						t.Errorf("%s: extra header %s: %q", route, k, got.header.Get(k))
					}
				}
				// Body: byte for byte once ids and timestamps are blanked.
				if g, w := normalize(string(got.body)), normalize(want.body); g != w {
					t.Errorf("%s: body differs from the sample\n got: %s\nwant: %s", route, g, w)
				}
				if !tc.stream {
					if g, w := keyPaths(t, string(got.body)), keyPaths(t, want.body); strings.Join(g, " ") != strings.Join(w, " ") {
						t.Errorf("%s: key order differs\n got: %v\nwant: %v", route, g, w)
					}
					continue
				}
				gotFrames, gotEvs := parseFrames(t, string(got.body))
				wantFrames, wantEvs := parseFrames(t, want.body)
				if g, w := eventNames(gotEvs), eventNames(wantEvs); strings.Join(g, ",") != strings.Join(w, ",") {
					t.Errorf("%s: event sequence\n got: %v\nwant: %v", route, g, w)
				}
				for i := range min(len(gotFrames), len(wantFrames)) {
					if ge, we := gotEvs[i].Data, wantEvs[i].Data; len(ge) > 0 && (ge[0] == '{' || ge[0] == '[') {
						if g, w := keyPaths(t, string(ge)), keyPaths(t, string(we)); strings.Join(g, " ") != strings.Join(w, " ") {
							t.Errorf("%s: frame %d (%s) key order differs\n got: %v\nwant: %v", route, i, gotEvs[i].Event, g, w)
						}
					}
				}
			}
		})
	}
}

// TestETagMatchesExpress checks etagOf against the ETags Flowise sent.
func TestETagMatchesExpress(t *testing.T) {
	for _, name := range []string{"10-prediction-nonstream.txt", "12-prediction-streamingfalse-nonstream.txt", "13-prediction-streamingfalse-streamreq.txt", "20-agentflow-nonstream.txt"} {
		s := loadSample(t, name)
		if got, want := etagOf([]byte(s.body)), s.header.Get("ETag"); got != want {
			t.Errorf("%s: etagOf = %s, Flowise sent %s", name, got, want)
		}
	}
}

// ---------- request handling ----------

func TestChatAndSessionIDs(t *testing.T) {
	inst := startTest(t, New(Options{}))
	cases := []struct {
		name, body            string
		wantChat, wantSession string // "" = random UUIDv4, equal to each other
	}{
		{"none", `{"question":"hi"}`, "", ""},
		{"chatId", `{"question":"hi","chatId":"chat-1"}`, "chat-1", "chat-1"},
		{"sessionId", `{"question":"hi","overrideConfig":{"sessionId":"sess-1"}}`, "sess-1", "sess-1"},
		{"both", `{"question":"hi","chatId":"chat-1","overrideConfig":{"sessionId":"sess-1"}}`, "chat-1", "sess-1"},
		{"escaping", `{"question":"<a href=\"x\">\u2028\n</a>","chatId":"c\"1"}`, `c"1`, `c"1`},
	}
	reV4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for _, tc := range cases {
		for _, streaming := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", tc.name, streaming), func(t *testing.T) {
				body := tc.body
				if streaming {
					body = strings.TrimSuffix(body, "}") + `,"streaming":true}`
				}
				got := rawDo(t, inst.Addr(), http.MethodPost, "/api/v1/prediction/"+flowUUID, jsonCT, body)
				var in struct{ Question string }
				_ = json.Unmarshal([]byte(tc.body), &in)
				var out struct {
					Question, ChatID, ChatMessageID, SessionID string
				}
				doc := got.body
				if streaming {
					_, evs := parseFrames(t, string(got.body))
					doc = evs[len(evs)-2].Data // metadata
				}
				if err := json.Unmarshal(doc, &out); err != nil {
					t.Fatalf("%v: %s", err, doc)
				}
				if out.Question != in.Question {
					t.Errorf("question %q, want %q", out.Question, in.Question)
				}
				if !reV4.MatchString(out.ChatMessageID) {
					t.Errorf("chatMessageId %q is not a UUIDv4", out.ChatMessageID)
				}
				if tc.wantChat == "" {
					if !reV4.MatchString(out.ChatID) || out.SessionID != out.ChatID {
						t.Errorf("chatId %q sessionId %q: want one random UUIDv4", out.ChatID, out.SessionID)
					}
					return
				}
				if out.ChatID != tc.wantChat || out.SessionID != tc.wantSession {
					t.Errorf("chatId %q sessionId %q, want %q %q", out.ChatID, out.SessionID, tc.wantChat, tc.wantSession)
				}
			})
		}
	}
}

func TestErrors(t *testing.T) {
	inst := startTest(t, New(Options{}))
	cases := []struct {
		name    string
		path    string
		hdr     map[string]string
		body    string
		status  int
		message string // substring
	}{
		{"non-UUID id", "/api/v1/prediction/not-a-uuid", jsonCT, `{"question":"hi"}`, 400, msgBadID},
		{"non-UUID id streaming", "/api/v1/prediction/not-a-uuid", jsonCT, `{"question":"hi","streaming":true}`, 400, msgBadID},
		{"non-UUID id internal", "/api/v1/internal-prediction/1234", jsonCT, `{"question":"hi"}`, 400, msgBadID},
		{"UUID with a bad digit", "/api/v1/prediction/4f2c6a10-7b1e-4c3d-9a8b-0123456789ag", jsonCT, `{}`, 400, msgBadID},
		{"no id", "/api/v1/prediction/", jsonCT, `{"question":"hi"}`, 412, msgNoID},
		{"no id no slash", "/api/v1/internal-prediction", jsonCT, `{"question":"hi"}`, 412, msgNoID},
		{"bad JSON", "/api/v1/prediction/" + flowUUID, jsonCT, `{"question":x}`, 400, "Unexpected token x in JSON at position 12"},
		{"truncated JSON", "/api/v1/prediction/" + flowUUID, jsonCT, `{"question":`, 400, "Unexpected end of JSON input"},
		{"JSON not an object", "/api/v1/prediction/" + flowUUID, jsonCT, `"hi"`, 400, "Unexpected token"},
		{"bad latency", "/api/v1/prediction/" + flowUUID, withHeaders(HeaderLatency, "soon"), `{}`, 400, HeaderLatency},
		{"negative latency", "/api/v1/prediction/" + flowUUID, withHeaders(HeaderLatency, "-1s"), `{}`, 400, HeaderLatency},
		{"bad token delay", "/api/v1/prediction/" + flowUUID, withHeaders(HeaderTokenDelay, "10"), `{}`, 400, HeaderTokenDelay},
		{"bad tokens", "/api/v1/prediction/" + flowUUID, withHeaders(HeaderTokens, "six"), `{}`, 400, HeaderTokens},
		{"negative tokens", "/api/v1/prediction/" + flowUUID, withHeaders(HeaderTokens, "-1"), `{}`, 400, HeaderTokens},
		{"too many tokens", "/api/v1/prediction/" + flowUUID, withHeaders(HeaderTokens, "100001"), `{}`, 400, HeaderTokens},
		{"bad mode", "/api/v1/prediction/" + flowUUID, withHeaders(HeaderMode, "explode"), `{}`, 400, HeaderMode},
		{"fail mode", "/api/v1/prediction/" + flowUUID, withHeaders(HeaderMode, "fail"), `{"question":"hi"}`, 500, msgFailure},
		{"fail mode streaming", "/api/v1/prediction/" + flowUUID, withHeaders(HeaderMode, "fail"), `{"question":"hi","streaming":true}`, 500, msgFailure},
		{"stream-error not streaming", "/api/v1/prediction/" + flowUUID, withHeaders(HeaderMode, "stream-error"), `{"question":"hi"}`, 500, msgFailure},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := rawDo(t, inst.Addr(), http.MethodPost, tc.path, tc.hdr, tc.body)
			if got.status != tc.status {
				t.Fatalf("status %d, want %d: %s", got.status, tc.status, got.body)
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if g, w := strings.Join(keyPaths(t, string(got.body)), " "), ".statusCode .success .message .stack"; g != w {
				t.Errorf("error keys %q, want %q", g, w)
			}
			var e struct {
				StatusCode int             `json:"statusCode"`
				Success    *bool           `json:"success"`
				Message    string          `json:"message"`
				Stack      json.RawMessage `json:"stack"`
			}
			if err := json.Unmarshal(got.body, &e); err != nil {
				t.Fatal(err)
			}
			if e.StatusCode != tc.status || e.Success == nil || *e.Success || string(e.Stack) != "{}" {
				t.Errorf("error body %s", got.body)
			}
			if !strings.Contains(e.Message, tc.message) {
				t.Errorf("message %q, want it to contain %q", e.Message, tc.message)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	inst := startTest(t, New(Options{}))
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
		ctype              string
		body               string // substring
		minLen             int
	}{
		{"ping", "GET", "/api/v1/ping", nil, 200, "text/plain; charset=utf-8", "pong", 4},
		{"ping HEAD", "HEAD", "/api/v1/ping", nil, 200, "", "", 0},
		{"ui", "GET", "/", nil, 200, "text/html; charset=UTF-8", "/assets/index-abc123.js", 100},
		{"js", "GET", "/assets/index-abc123.js", nil, 200, "application/javascript; charset=UTF-8", "Hello from the fake OpenAI server.", 2048},
		{"any js", "GET", "/assets/deep/other.js", nil, 200, "application/javascript; charset=UTF-8", "fakeflow", 2048},
		{"css", "GET", "/assets/index-abc123.css", nil, 200, "text/css; charset=UTF-8", "#root", 10},
		{"unknown", "GET", "/nope?x=<1>", nil, 404, "text/html; charset=utf-8", "<pre>Cannot GET /nope?x=%3C1%3E</pre>", 0},
		{"prediction GET", "GET", "/api/v1/prediction/" + flowUUID, nil, 404, "text/html; charset=utf-8", "Cannot GET /api/v1/prediction/" + flowUUID, 0},
		{"ping POST", "POST", "/api/v1/ping", nil, 404, "text/html; charset=utf-8", "Cannot POST /api/v1/ping", 0},
		{"prediction subpath", "POST", "/api/v1/prediction/" + flowUUID + "/x", nil, 404, "text/html; charset=utf-8", "Cannot POST", 0},
		{"prediction prefix only", "POST", "/api/v1/predictions/" + flowUUID, nil, 404, "text/html; charset=utf-8", "Cannot POST", 0},
		{"case sensitive", "GET", "/API/V1/PING", nil, 404, "text/html; charset=utf-8", "Cannot GET", 0},
		{"preflight", "OPTIONS", "/api/v1/prediction/" + flowUUID, map[string]string{"Origin": "http://a.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}, 204, "", "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := rawDo(t, inst.Addr(), tc.method, tc.path, tc.hdr, "")
			if got.status != tc.status {
				t.Fatalf("status %d, want %d", got.status, tc.status)
			}
			if ct := got.header.Get("Content-Type"); ct != tc.ctype {
				t.Errorf("Content-Type %q, want %q", ct, tc.ctype)
			}
			if got.header.Get("Vary") == "" {
				t.Error("no Vary header")
			}
			if !bytes.Contains(got.body, []byte(tc.body)) || len(got.body) < tc.minLen {
				t.Errorf("body (%d bytes) lacks %q or is shorter than %d", len(got.body), tc.body, tc.minLen)
			}
			if tc.method == "OPTIONS" {
				if got.header.Get("Access-Control-Allow-Origin") != "http://a.example" || !strings.Contains(got.header.Get("Access-Control-Allow-Methods"), "POST") {
					t.Errorf("preflight headers %v", got.header)
				}
			}
		})
	}
	if got := inst.Server().Stats().Requests; got != int64(len(cases)) {
		t.Errorf("Requests = %d, want %d", got, len(cases))
	}
}

func TestOverrideHeaders(t *testing.T) {
	for _, agent := range []bool{false, true} {
		inst := startTest(t, New(Options{Agentflow: agent, Tokens: 4}))
		cases := []struct {
			name     string
			hdr      map[string]string
			wantText string
		}{
			{"instance default", jsonCT, "Hello from the fake"},
			{"3 tokens", withHeaders(HeaderTokens, "3"), "Hello from the"},
			{"8 tokens", withHeaders(HeaderTokens, "8"), "Hello from the fake OpenAI server. Hello from"},
			{"0 tokens", withHeaders(HeaderTokens, "0"), ""},
			{"mode chatflow", withHeaders(HeaderMode, "chatflow", HeaderTokens, "1"), "Hello"},
			{"mode agentflow", withHeaders(HeaderMode, "AgentFlow", HeaderTokens, "2"), "Hello from"},
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("agentflow=%v/%s", agent, tc.name), func(t *testing.T) {
				wantAgent := agent
				switch strings.ToLower(tc.hdr[HeaderMode]) {
				case "chatflow":
					wantAgent = false
				case "agentflow":
					wantAgent = true
				}
				// JSON.
				got := rawDo(t, inst.Addr(), http.MethodPost, "/api/v1/prediction/"+flowUUID, tc.hdr, `{"question":"hi"}`)
				var out struct {
					Text        string
					ExecutionID *string
					MemoryType  *string
				}
				if err := json.Unmarshal(got.body, &out); err != nil {
					t.Fatal(err)
				}
				if out.Text != tc.wantText {
					t.Errorf("text %q, want %q", out.Text, tc.wantText)
				}
				if (out.ExecutionID != nil) != wantAgent || (out.MemoryType != nil) == wantAgent {
					t.Errorf("agentflow shape = %v, want %v: %s", out.ExecutionID != nil, wantAgent, got.body)
				}
				if wantAgent {
					var af struct {
						AgentFlowExecutedData []struct {
							Data struct {
								Output struct {
									Content       string
									UsageMetadata struct {
										OutputTokens int     `json:"output_tokens"`
										TotalCost    float64 `json:"total_cost"`
									}
								}
							}
						}
					}
					_ = json.Unmarshal(got.body, &af)
					llm := af.AgentFlowExecutedData[1].Data.Output
					if llm.Content != tc.wantText || llm.UsageMetadata.OutputTokens != strings.Count(tc.wantText, " ")+min(1, len(tc.wantText)) || llm.UsageMetadata.TotalCost <= 0 {
						t.Errorf("llm node output %+v", llm)
					}
				}
				// Stream: the tokens concatenate to the same text.
				got = rawDo(t, inst.Addr(), http.MethodPost, "/api/v1/prediction/"+flowUUID, tc.hdr, `{"question":"hi","streaming":true}`)
				_, evs := parseFrames(t, string(got.body))
				var text strings.Builder
				tokens := 0
				for _, e := range evs {
					if e.Event == "token" {
						var s string
						_ = json.Unmarshal(e.Data, &s)
						text.WriteString(s)
						if s != "" {
							tokens++
						}
					}
				}
				if text.String() != tc.wantText {
					t.Errorf("streamed text %q, want %q", text.String(), tc.wantText)
				}
				if evs[0].Event == "agentFlowEvent" != wantAgent {
					t.Errorf("stream starts with %s (agentflow %v)", evs[0].Event, wantAgent)
				}
				if last := evs[len(evs)-1]; last.Event != "end" || string(last.Data) != `"[DONE]"` {
					t.Errorf("last event %s %s", last.Event, last.Data)
				}
			})
		}
	}
}

func TestLatencyOverride(t *testing.T) {
	inst := startTest(t, New(Options{}))
	const d = 150 * time.Millisecond
	for _, body := range []string{`{"question":"hi"}`, `{"question":"hi","streaming":true}`} {
		start := time.Now()
		got := rawDo(t, inst.Addr(), http.MethodPost, "/api/v1/prediction/"+flowUUID, withHeaders(HeaderLatency, d.String()), body)
		if el := time.Since(start); el < d || got.status != 200 {
			t.Errorf("%s: status %d after %v, want 200 after >= %v", body, got.status, el, d)
		}
	}
}

func TestManyTokensBeyondCache(t *testing.T) {
	inst := startTest(t, New(Options{Tokens: cachedTokens + 7}))
	want := ""
	for i := 0; i < cachedTokens+7; i++ {
		want += tokenText(i)
	}
	got := rawDo(t, inst.Addr(), http.MethodPost, "/api/v1/prediction/"+flowUUID, jsonCT, `{"question":"hi","streaming":true}`)
	_, evs := parseFrames(t, string(got.body))
	var text strings.Builder
	for _, e := range evs {
		if e.Event == "token" {
			var s string
			_ = json.Unmarshal(e.Data, &s)
			text.WriteString(s)
		}
	}
	if text.String() != want {
		t.Errorf("streamed text differs (len %d, want %d)", text.Len(), len(want))
	}
	got = rawDo(t, inst.Addr(), http.MethodPost, "/api/v1/prediction/"+flowUUID, jsonCT, `{"question":"hi"}`)
	var out struct{ Text string }
	_ = json.Unmarshal(got.body, &out)
	if out.Text != want {
		t.Errorf("JSON text differs (len %d, want %d)", len(out.Text), len(want))
	}
}

func TestMultipartBody(t *testing.T) {
	inst := startTest(t, New(Options{}))
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("question", "from a form")
	_ = mw.WriteField("streaming", "true")
	_ = mw.WriteField("chatId", "form-chat")
	fw, _ := mw.CreateFormFile("files", "a.txt")
	_, _ = fw.Write([]byte("file contents"))
	_ = mw.Close()
	got := rawDo(t, inst.Addr(), http.MethodPost, "/api/v1/prediction/"+flowUUID, map[string]string{"Content-Type": mw.FormDataContentType()}, buf.String())
	if got.header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("not streamed: %s", got.body)
	}
	_, evs := parseFrames(t, string(got.body))
	md := string(evs[len(evs)-2].Data)
	if !strings.Contains(md, `"chatId":"form-chat"`) || !strings.Contains(md, `"question":"from a form"`) {
		t.Errorf("metadata %s", md)
	}
}

// ---------- failure injection ----------

func TestFailureRate(t *testing.T) {
	cases := []struct {
		name       string
		rate       float64
		n          int
		minF, maxF int
	}{
		{"never", 0, 50, 0, 0},
		{"always", 1, 50, 50, 50},
		{"half", 0.5, 400, 140, 260},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{FailureRate: tc.rate, Rand: rand.New(rand.NewPCG(1, 2))})
			inst := startTest(t, s)
			c := newClient(t)
			failed := 0
			for i := 0; i < tc.n; i++ {
				body := `{"question":"hi"}`
				if i%2 == 1 {
					body = `{"question":"hi","streaming":true}`
				}
				resp, err := c.Post(inst.URL()+"/api/v1/prediction/"+flowUUID, "application/json", strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 500:
					failed++
					if !bytes.HasPrefix(b, []byte(`{"statusCode":500,"success":false,"message":`)) {
						t.Fatalf("failure body %s", b)
					}
				case 200:
				default:
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
			if failed < tc.minF || failed > tc.maxF {
				t.Errorf("%d failures of %d, want %d..%d", failed, tc.n, tc.minF, tc.maxF)
			}
			st := s.Stats()
			if st.Failures != int64(failed) || st.Predictions != int64(tc.n) || st.Requests != int64(tc.n) || st.InFlight != 0 {
				t.Errorf("stats %+v, want %d failures of %d", st, failed, tc.n)
			}
			// Streams counts only the streams that started.
			if want := int64(tc.n/2) - int64(failed) + int64(failed/2); tc.rate != 0.5 && st.Streams != want {
				t.Errorf("Streams = %d, want %d", st.Streams, want)
			}
		})
	}
}

func TestStreamError(t *testing.T) {
	for _, agent := range []bool{false, true} {
		t.Run(fmt.Sprintf("agentflow=%v", agent), func(t *testing.T) {
			s := New(Options{Agentflow: agent})
			inst := startTest(t, s)
			got := rawDo(t, inst.Addr(), http.MethodPost, "/api/v1/prediction/"+flowUUID, withHeaders(HeaderMode, "stream-error"), `{"question":"hi","streaming":true}`)
			if got.status != 200 || got.header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d %q", got.status, got.header.Get("Content-Type"))
			}
			_, evs := parseFrames(t, string(got.body))
			names := strings.Join(eventNames(evs), ",")
			want := "start,token,token,token,error,end"
			if agent {
				want = "agentFlowEvent,nextAgentFlow,nextAgentFlow,agentFlowExecutedData,nextAgentFlow,token,token,token,token,nextAgentFlow,agentFlowEvent,error,end"
			}
			if names != want {
				t.Errorf("events %s\nwant   %s", names, want)
			}
			if st := s.Stats(); st.Failures != 1 || st.Streams != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// ---------- hang mode ----------

func TestHangReturnsOnClientCancel(t *testing.T) {
	cases := []struct {
		name   string
		opts   Options
		hdr    string
		stream bool
	}{
		{"option", Options{Hang: true}, "", false},
		{"option streaming", Options{Hang: true}, "", true},
		{"header", Options{}, "hang", false},
		{"header streaming", Options{Latency: time.Hour}, "hang", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.opts)
			hung := make(chan struct{}, 1)
			done := make(chan struct{}, 1)
			s.hookHang = func() { hung <- struct{}{} }
			s.hookPredictionDone = func() { done <- struct{}{} }
			inst := startTest(t, s)
			c := newClient(t)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			body := `{"question":"hi"}`
			if tc.stream {
				body = `{"question":"hi","streaming":true}`
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, inst.URL()+"/api/v1/prediction/"+flowUUID, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if tc.hdr != "" {
				req.Header.Set(HeaderMode, tc.hdr)
			}
			errc := make(chan error, 1)
			go func() {
				resp, err := c.Do(req)
				if err == nil {
					resp.Body.Close()
					err = fmt.Errorf("got an answer: %d", resp.StatusCode)
				}
				errc <- err
			}()
			select {
			case <-hung:
			case <-time.After(10 * time.Second):
				t.Fatal("handler never hung")
			}
			if st := s.Stats(); st.InFlight != 1 {
				t.Errorf("InFlight = %d while hanging", st.InFlight)
			}
			select {
			case err := <-errc:
				t.Fatalf("client returned while the server hangs: %v", err)
			default:
			}
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("client error %v, want context.Canceled", err)
			}
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("hung handler did not return after the client went away")
			}
			if st := s.Stats(); st.InFlight != 0 || st.Predictions != 1 || st.Streams != 0 {
				t.Errorf("stats after cancel %+v", st)
			}
		})
	}
}

// ---------- token delay and flushing ----------

func TestTokenDelayFlushesEachFrame(t *testing.T) {
	for _, agent := range []bool{false, true} {
		t.Run(fmt.Sprintf("agentflow=%v", agent), func(t *testing.T) {
			s := New(Options{Agentflow: agent})
			done := make(chan struct{}, 1)
			s.hookPredictionDone = func() { done <- struct{}{} }
			inst := startTest(t, s)
			c := newClient(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, inst.URL()+"/api/v1/prediction/"+flowUUID, strings.NewReader(`{"question":"hi","streaming":true}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(HeaderTokenDelay, "1h")
			start := time.Now()
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			// Every frame up to and including the first answer token arrives
			// at once; the second token is an hour away.
			for {
				f, err := readFrame(br)
				if err != nil {
					t.Fatalf("reading frames: %v (got %q)", err, f)
				}
				if strings.Contains(f, `"data":"Hello"`) {
					break
				}
			}
			if el := time.Since(start); el > 10*time.Second {
				t.Errorf("first token took %v", el)
			}
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("streaming handler did not stop after the client went away")
			}
			if st := s.Stats(); st.InFlight != 0 {
				t.Errorf("InFlight = %d", st.InFlight)
			}
		})
	}
}

func TestTokenDelaySpacing(t *testing.T) {
	const d = 100 * time.Millisecond
	inst := startTest(t, New(Options{TokenDelay: d, Tokens: 3}))
	c := newClient(t)
	resp, err := c.Post(inst.URL()+"/api/v1/prediction/"+flowUUID, "application/json", strings.NewReader(`{"question":"hi","streaming":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	var at []time.Time
	for {
		f, err := readFrame(br)
		if err != nil {
			t.Fatalf("%v after %q", err, f)
		}
		if strings.Contains(f, `"event":"token"`) {
			at = append(at, time.Now())
		}
		if strings.Contains(f, `"event":"end"`) {
			break
		}
	}
	if len(at) != 3 {
		t.Fatalf("%d tokens", len(at))
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < d*8/10 {
			t.Errorf("gap %d = %v, want about %v", i, gap, d)
		}
	}
}

// ---------- Instance: Kill, Restart, Close ----------

// openStream starts a stream with an hour between tokens and returns once
// its first token arrived.
func openStream(t *testing.T, addr string) (*bufio.Reader, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	body := `{"question":"hi","streaming":true}`
	fmt.Fprintf(c, "POST /api/v1/prediction/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s: 1h\r\nContent-Length: %d\r\n\r\n%s", flowUUID, HeaderTokenDelay, len(body), body)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	sr := bufio.NewReader(resp.Body)
	for {
		f, err := readFrame(sr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(f, `"data":"Hello"`) {
			return sr, c
		}
	}
}

func TestKillAndRestart(t *testing.T) {
	s := New(Options{})
	hung := make(chan struct{}, 4)
	s.hookHang = func() { hung <- struct{}{} }
	inst := startTest(t, s)
	url, addr := inst.URL(), inst.Addr()

	// Two streams mid-answer, one hung request, one idle keep-alive conn.
	s1, _ := openStream(t, addr)
	s2, _ := openStream(t, addr)
	hc := newClient(t)
	hangErr := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, url+"/api/v1/prediction/"+flowUUID, strings.NewReader(`{}`))
		req.Header.Set(HeaderMode, "hang")
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		hangErr <- err
	}()
	<-hung
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /api/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n")
	ibr := bufio.NewReader(idle)
	resp, err := http.ReadResponse(ibr, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	before := s.Stats().Requests
	if n := inst.Kill(); n != 3 {
		t.Errorf("Kill() = %d, want 3 in flight", n)
	}
	if st := s.Stats(); st.InFlight != 0 {
		t.Errorf("InFlight = %d after Kill", st.InFlight)
	}
	// Open connections fail.
	for i, sr := range []*bufio.Reader{s1, s2} {
		if _, err := io.ReadAll(sr); err == nil {
			t.Errorf("stream %d ended cleanly after Kill", i)
		}
	}
	if err := <-hangErr; err == nil {
		t.Error("hung request got an answer after Kill")
	}
	_ = idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := ibr.ReadByte(); err == nil {
		t.Error("idle connection still open after Kill")
	}
	// New dials are refused.
	if c, err := net.DialTimeout("tcp", addr, 5*time.Second); err == nil {
		c.Close()
		t.Fatal("dial succeeded after Kill")
	}
	if inst.Kill() != 0 {
		t.Error("second Kill found requests in flight")
	}

	// Restart serves again on the same address with the same Server.
	if err := inst.Restart(); err != nil {
		t.Fatal(err)
	}
	if inst.URL() != url || inst.Addr() != addr {
		t.Errorf("address changed: %s -> %s", url, inst.URL())
	}
	if err := inst.Restart(); err == nil {
		t.Error("Restart of a running instance succeeded")
	}
	got := rawDo(t, addr, http.MethodGet, "/api/v1/ping", nil, "")
	if got.status != 200 || string(got.body) != "pong" {
		t.Errorf("ping after restart: %d %q", got.status, got.body)
	}
	if st := s.Stats(); st.Requests != before+1 || inst.Server() != s {
		t.Errorf("stats not kept across Restart: %+v (before %d)", st, before)
	}
	// Kill after Restart works again, then Close of a killed instance is a no-op.
	if n := inst.Kill(); n != 0 {
		t.Errorf("Kill() = %d on an idle instance", n)
	}
	if err := inst.Close(); err != nil {
		t.Errorf("Close after Kill: %v", err)
	}
	if err := inst.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := rawDo(t, addr, http.MethodGet, "/api/v1/ping", nil, ""); got.status != 200 {
		t.Errorf("ping after second restart: %d", got.status)
	}
}

func TestCloseIsGraceful(t *testing.T) {
	s := New(Options{})
	hung := make(chan struct{}, 1)
	started := make(chan struct{}, 1)
	s.hookHang = func() { hung <- struct{}{} }
	s.opts.OnRequest = func(r *http.Request) {
		if r.Header.Get(HeaderLatency) != "" {
			started <- struct{}{}
		}
	}
	inst := startTest(t, s)
	c := newClient(t)

	// A slow request in flight completes; a hung one is cut off.
	slow := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, inst.URL()+"/api/v1/prediction/"+flowUUID, strings.NewReader(`{"question":"hi"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(HeaderLatency, "300ms")
		resp, err := c.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		slow <- err
	}()
	hangErr := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, inst.URL()+"/api/v1/prediction/"+flowUUID, strings.NewReader(`{}`))
		req.Header.Set(HeaderMode, "hang")
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		hangErr <- err
	}()
	<-started
	<-hung
	if err := inst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-slow; err != nil {
		t.Errorf("in-flight request during Close: %v", err)
	}
	if err := <-hangErr; err == nil {
		t.Error("hung request got an answer")
	}
	if st := s.Stats(); st.InFlight != 0 {
		t.Errorf("InFlight = %d after Close", st.InFlight)
	}
	if c, err := net.DialTimeout("tcp", inst.Addr(), 5*time.Second); err == nil {
		c.Close()
		t.Error("dial succeeded after Close")
	}
	if err := inst.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := inst.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := rawDo(t, inst.Addr(), http.MethodGet, "/api/v1/ping", nil, ""); got.status != 200 {
		t.Errorf("ping after restart: %d", got.status)
	}
}

// ---------- concurrency ----------

func TestConcurrentRequests(t *testing.T) {
	var seen sync.Map
	s := New(Options{Rand: rand.New(rand.NewPCG(7, 7)), FailureRate: 0.1, OnRequest: func(r *http.Request) { seen.Store(r.Header.Get("X-Req"), true) }})
	inst := startTest(t, s)
	c := newClient(t)
	const workers, per = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				body := `{"question":"hi"}`
				mode := "chatflow"
				if i%2 == 0 {
					body = `{"question":"hi","streaming":true}`
				}
				if i%3 == 0 {
					mode = "agentflow"
				}
				req, _ := http.NewRequest(http.MethodPost, inst.URL()+"/api/v1/prediction/"+flowUUID, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Req", fmt.Sprint(w, "-", i))
				if i%5 == 0 {
					req.Header.Set(HeaderMode, mode)
				}
				resp, err := c.Do(req)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || (resp.StatusCode != 200 && resp.StatusCode != 500) || len(b) == 0 {
					errs <- fmt.Errorf("status %d err %v body %q", resp.StatusCode, err, b)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := s.Stats()
	if st.Requests != workers*per || st.Predictions != workers*per || st.InFlight != 0 {
		t.Errorf("stats %+v", st)
	}
	n := 0
	seen.Range(func(any, any) bool { n++; return true })
	if n != workers*per {
		t.Errorf("OnRequest saw %d distinct requests, want %d", n, workers*per)
	}
}

// ---------- encoders ----------

func TestAppendJSNumber(t *testing.T) {
	cases := []struct {
		f    float64
		want string
	}{
		{0, "0"},
		{17, "17"},
		{0.7, "0.7"},
		{-2.5, "-2.5"},
		{1.5e-7, "1.5e-7"},
		{6e-7, "6e-7"},
		{1e-7, "1e-7"},
		{0.000001, "0.000001"},
		{11 * float64(int64(1)) * 1.5e-7, "0.0000016499999999999999"},
		{3.6e-6, "0.0000036"},
		{5.25e-6, "0.00000525"},
		{1e21, "1e+21"},
		{123456789012345680000, "123456789012345680000"},
		{1.5e300, "1.5e+300"},
	}
	for _, tc := range cases {
		if got := string(appendJSNumber(nil, tc.f)); got != tc.want {
			t.Errorf("appendJSNumber(%v) = %s, want %s", tc.f, got, tc.want)
		}
	}
}

func TestIsUUID(t *testing.T) {
	for s, want := range map[string]bool{
		flowUUID:                               true,
		strings.ToUpper(flowUUID):              true,
		"0192d8a4-7c4e-7b1e-9f3a-0123456789ab": true, // v7
		"":                                     false,
		"not-a-uuid":                           false,
		flowUUID + "0":                         false,
		strings.ReplaceAll(flowUUID, "-", "_"): false,
	} {
		if isUUID(s) != want {
			t.Errorf("isUUID(%q) = %v", s, !want)
		}
	}
}

// ---------- benchmarks ----------

// discardWriter is a minimal http.ResponseWriter + http.Flusher.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(code int)        { d.code = code }
func (d *discardWriter) Write(b []byte) (int, error) { d.n += len(b); return len(b), nil }
func (d *discardWriter) Flush()                      {}

func benchServe(b *testing.B, o Options, body string) {
	s := New(o)
	w := &discardWriter{h: http.Header{}}
	req, _ := http.NewRequest(http.MethodPost, "/api/v1/prediction/"+flowUUID, nil)
	req.Header.Set("Content-Type", "application/json")
	rd := strings.NewReader(body)
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		clear(w.h)
		s.ServeHTTP(w, req)
		if w.code != 200 {
			b.Fatalf("status %d", w.code)
		}
	}
}

func BenchmarkChatflowJSON(b *testing.B) { benchServe(b, Options{}, `{"question":"hi"}`) }
func BenchmarkChatflowStream(b *testing.B) {
	benchServe(b, Options{}, `{"question":"hi","streaming":true}`)
}
func BenchmarkAgentflowJSON(b *testing.B) {
	benchServe(b, Options{Agentflow: true}, `{"question":"hi"}`)
}
func BenchmarkAgentflowStream(b *testing.B) {
	benchServe(b, Options{Agentflow: true}, `{"question":"hi","streaming":true}`)
}

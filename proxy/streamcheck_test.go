package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/flowgate/flowgate/config"
)

// sseUpstream writes each piece of a stream and flushes it, then ends the
// answer cleanly (the final chunk), so only the stream's content can tell
// whether it was complete.
func sseUpstream(t *testing.T, pieces []string) string {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		for _, p := range pieces {
			io.WriteString(w, p)
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(up.Close)
	return up.URL
}

// The end of a Flowise stream is read as JSON, not matched as bytes: a
// complete stream passes through byte for byte whatever its key order,
// spacing and line ends, and a stream that stops before its end event is
// cut, even after a token whose text is "[DONE]".
func TestStreamEndIsParsedNotMatched(t *testing.T) {
	const (
		start = "message:\ndata:{\"event\":\"start\",\"data\":\"\"}\n\n"
		token = "message:\ndata:{\"event\":\"token\",\"data\":\"Hi\"}\n\n"
	)
	cases := []struct {
		name     string
		pieces   []string
		complete bool
	}{
		{"Flowise", []string{start, token, "message:\ndata:{\"event\":\"end\",\"data\":\"[DONE]\"}\n\n"}, true},
		{"Go map order", []string{start, token, "message:\ndata:{\"data\":\"[DONE]\",\"event\":\"end\"}\n\n"}, true},
		{"Python spacing, CRLF", []string{"data: {\"event\": \"token\", \"data\": \"Hi\"}\r\n\r\n", "data: {\"event\": \"end\", \"data\": \"[DONE]\"}\r\n\r\n"}, true},
		{"CR line ends", []string{"data:{\"event\":\"token\",\"data\":\"Hi\"}\r\r", "data:{\"event\":\"end\",\"data\":\"[DONE]\"}\r\r"}, true},
		{"end split across writes", []string{token, "message:\ndata:{\"event\":\"e", "nd\",\"data\":\"[DO", "NE]\"}\n", "\n"}, true},
		{"heartbeat after end", []string{token, "message:\ndata:{\"event\":\"end\",\"data\":\"[DONE]\"}\n\n", ":heartbeat\n\n"}, true},
		{"end data on two lines", []string{token, "data:{\"event\":\ndata:\"end\"}\n\n"}, true},
		{"token whose text is [DONE]", []string{start, "message:\ndata:{\"event\":\"token\",\"data\":\"[DONE]\"}\n\n"}, false},
		{"token ending in the end frame's bytes", []string{start, "message:\ndata:{\"event\":\"token\",\"data\":\"x\\\",\\\"data\\\":\\\"[DONE]\\\"}\"}\n\n"}, false},
		{"end frame never finished", []string{token, "message:\ndata:{\"event\":\"end\",\"data\":\"[DONE]\"}\n"}, false},
		{"end frame truncated JSON", []string{token, "message:\ndata:{\"event\":\"end\",\"data\":\"[DO\n\n"}, false},
		{"tokens after end", []string{"message:\ndata:{\"event\":\"end\",\"data\":\"[DONE]\"}\n\n", token}, false},
		{"event named end in an SSE field only", []string{token, "event:end\ndata:{\"event\":\"token\",\"data\":\"x\"}\n\n"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGW(t, []string{sseUpstream(t, tc.pieces)}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
			resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi","streaming":true}`, nil)
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			line := g.nextAccessLine(t)
			sent := strings.Join(tc.pieces, "")
			if tc.complete {
				if err != nil || string(got) != sent || line["cut"] != nil {
					t.Fatalf("complete stream altered: err=%v cut=%v\n got %q\nwant %q", err, line["cut"], got, sent)
				}
				return
			}
			if err == nil {
				t.Fatalf("incomplete stream ended cleanly: %q", got)
			}
			if !strings.HasPrefix(string(got), sent) || !strings.Contains(string(got[len(sent):]), `"event":"error"`) {
				t.Fatalf("want the upstream's bytes then an error frame, got %q", got)
			}
			if line["cut"] != "stream_incomplete" {
				t.Fatalf("access log cut %v", line["cut"])
			}
		})
	}
}

// Streams captured from a real Flowise 3.1.2 pass through byte for byte,
// frame by frame, with nothing added.
func TestRealFlowiseStreamsPassUnchanged(t *testing.T) {
	for _, file := range []string{"prediction-stream.txt", "agentflow-stream.txt"} {
		t.Run(file, func(t *testing.T) {
			b, err := os.ReadFile("../sse/testdata/" + file)
			if err != nil {
				t.Fatal(err)
			}
			var frames []string
			for _, f := range strings.SplitAfter(string(b), "\n\n") {
				if f != "" {
					frames = append(frames, f)
				}
			}
			g := newGW(t, []string{sseUpstream(t, frames)}, func(c *config.Config) { c.Health.Active.Enabled = ptr(false) })
			resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi","streaming":true}`, map[string]string{"Accept-Encoding": "gzip"})
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(got) != string(b) {
				t.Fatalf("err=%v; the stream changed on its way (%d bytes in, %d out)", err, len(b), len(got))
			}
			if resp.Header.Get("Content-Encoding") != "" {
				t.Fatal("an SSE stream was compressed")
			}
			if line := g.nextAccessLine(t); line["cut"] != nil {
				t.Fatalf("access log %v", line)
			}
		})
	}
}

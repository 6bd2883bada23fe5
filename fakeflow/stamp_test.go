package fakeflow

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// streamFrames posts a streaming prediction to s and returns the data
// lines of its frames.
func streamFrames(t *testing.T, s *Server, hdr map[string]string) []string {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11",
		strings.NewReader(`{"question":"hi","streaming":true}`))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var data []string
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
			data = append(data, d)
		}
	}
	return data
}

func TestStampOffKeepsFrames(t *testing.T) {
	s := New(Options{Tokens: 3})
	for _, v := range []string{"", "0", "false"} {
		hdr := map[string]string{}
		if v != "" {
			hdr[HeaderStamp] = v
		}
		for _, d := range streamFrames(t, s, hdr) {
			if strings.Contains(d, StampField) {
				t.Fatalf("%s=%q: frame carries a stamp: %s", HeaderStamp, v, d)
			}
		}
	}
}

func TestStampedTokenFrames(t *testing.T) {
	s := New(Options{Tokens: 3})
	before := time.Now().UnixNano()
	data := streamFrames(t, s, map[string]string{HeaderStamp: "1"})
	after := time.Now().UnixNano()
	var tokens []string
	for _, d := range data {
		var f struct {
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
			Stamp int64           `json:"fakeflowStamp"`
		}
		if err := json.Unmarshal([]byte(d), &f); err != nil {
			t.Fatalf("frame is not JSON: %v: %s", err, d)
		}
		if f.Event != "token" {
			if f.Stamp != 0 {
				t.Errorf("%s frame stamped: %s", f.Event, d)
			}
			continue
		}
		if f.Stamp < before || f.Stamp > after {
			t.Errorf("stamp %d outside [%d, %d]", f.Stamp, before, after)
		}
		var text string
		if err := json.Unmarshal(f.Data, &text); err != nil {
			t.Fatalf("token data: %v", err)
		}
		tokens = append(tokens, text)
	}
	if got := strings.Join(tokens, ""); got != "Hello from the" {
		t.Errorf("tokens %q, want %q", got, "Hello from the")
	}
}

func TestStampBadValue(t *testing.T) {
	s := New(Options{})
	req := httptest.NewRequest(http.MethodPost, "/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11",
		strings.NewReader(`{"question":"hi","streaming":true}`))
	req.Header.Set(HeaderStamp, "yes please")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), HeaderStamp) {
		t.Fatalf("got %d %s, want 400 naming %s", rec.Code, rec.Body, HeaderStamp)
	}
}

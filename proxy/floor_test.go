package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/proxy"
)

// The benchmark's floor forwards JSON and SSE answers whole.
func TestFloorForwards(t *testing.T) {
	ff := startFlow(t, fakeflow.Options{Tokens: 5})
	u, _ := url.Parse(ff.URL())
	srv := httptest.NewServer(proxy.Floor(u))
	t.Cleanup(srv.Close)
	for _, tc := range []struct{ body, want, ct string }{
		{`{"question":"hi"}`, `"text":`, "application/json"},
		{`{"question":"hi","streaming":true}`, `"event":"end"`, "text/event-stream"},
	} {
		res, err := http.Post(srv.URL+"/api/v1/prediction/11111111-0000-4000-8000-000000000001", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 || !bytes.Contains(b, []byte(tc.want)) || !strings.HasPrefix(res.Header.Get("Content-Type"), tc.ct) {
			t.Fatalf("%s: %d %v %q %s", tc.body, res.StatusCode, err, res.Header.Get("Content-Type"), b)
		}
	}
}

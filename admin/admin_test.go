package admin_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/flowgate/flowgate/admin"
	"github.com/flowgate/flowgate/cache"
	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/metrics"
	"github.com/flowgate/flowgate/proxy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func newGateway(t *testing.T) *proxy.Gateway {
	cfg := config.Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	g, err := proxy.New(cfg, proxy.Options{Logger: zap.NewNop(), Metrics: metrics.New(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestAdminNeverAnswersWithoutItsToken(t *testing.T) {
	g := newGateway(t)
	cases := []struct {
		name, token, auth string
		status            int
		code              string
	}{
		{"no token configured", "", "Bearer anything", 401, "admin_token_unset"},
		{"no token configured, empty bearer", "", "Bearer ", 401, "admin_token_unset"},
		{"missing header", "s3cret", "", 401, "unauthorized"},
		{"wrong token", "s3cret", "Bearer nope", 401, "unauthorized"},
		{"basic auth", "s3cret", "Basic czNjcmV0Og==", 401, "unauthorized"},
		{"right token", "s3cret", "Bearer s3cret", 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(admin.Handler(tc.token, g))
			defer srv.Close()
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/admin/v1/upstreams", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tc.status, body)
			}
			if tc.code != "" && body["code"] != tc.code {
				t.Fatalf("code %v, want %s", body["code"], tc.code)
			}
			if tc.status == 200 {
				ups, _ := body["upstreams"].([]any)
				if len(ups) != 1 {
					t.Fatalf("upstreams %v", body)
				}
			}
		})
	}
}

// Cache invalidation: guarded like every call, and counted. Memory only
// here; the Redis path across replicas is tested in proxy/.
func TestAdminCacheInvalidation(t *testing.T) {
	cfg := config.Default()
	cfg.Cache.Default.Enabled = ptr(true)
	store, err := cache.NewStore(cache.Options{MaxMemory: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	g, err := proxy.New(cfg, proxy.Options{Logger: zap.NewNop(), Metrics: metrics.New(prometheus.NewRegistry()), Cache: store})
	if err != nil {
		t.Fatal(err)
	}
	e, err := cache.NewJSON(200, "application/json", []byte(`{"text":"hi"}`), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, wf := range []string{"a", "a", "b"} {
		store.Set(cache.Key{Workflow: wf, Sum: [32]byte{byte(len(wf)), byte(time.Now().UnixNano())}}, e, time.Hour)
	}
	srv := httptest.NewServer(admin.Handler("s3cret", g))
	defer srv.Close()
	call := func(path, token string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodDelete, srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if status, _ := call("/admin/v1/cache", ""); status != http.StatusUnauthorized {
		t.Fatalf("without a token: %d", status)
	}
	if status, body := call("/admin/v1/cache/a", "s3cret"); status != 200 || body["removed"] != float64(2) || body["workflow"] != "a" {
		t.Fatalf("DELETE a: %d %v", status, body)
	}
	if status, body := call("/admin/v1/cache", "s3cret"); status != 200 || body["removed"] != float64(1) {
		t.Fatalf("DELETE all: %d %v", status, body)
	}
	// A gateway without a cache says so.
	srv2 := httptest.NewServer(admin.Handler("s3cret", newGateway(t)))
	defer srv2.Close()
	req, _ := http.NewRequest(http.MethodDelete, srv2.URL+"/admin/v1/cache", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("no cache: %d", resp.StatusCode)
	}
}

func ptr[T any](v T) *T { return &v }

package admin_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flowgate/flowgate/admin"
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

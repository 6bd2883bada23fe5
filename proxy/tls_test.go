package proxy_test

import (
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowgate/flowgate/config"
	"github.com/flowgate/flowgate/fakeflow"
)

// An https:// upstream signed by a private CA is reached once its CA is
// configured, and refused (502, never plain text) without it.
func TestHTTPSUpstreamWithPrivateCA(t *testing.T) {
	up := httptest.NewUnstartedServer(fakeflow.New(fakeflow.Options{}))
	up.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	up.StartTLS()
	defer up.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		tls    config.UpstreamTLS
		status int
	}{
		{"private CA configured", config.UpstreamTLS{CAFile: ca}, 200},
		{"system roots only", config.UpstreamTLS{}, 502},
		{"wrong server name", config.UpstreamTLS{CAFile: ca, ServerName: "flowise.internal"}, 502},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newGW(t, []string{up.URL}, func(c *config.Config) {
				c.Proxy.UpstreamTLS = tc.tls
				c.Health.Active.Enabled = ptr(false)
			})
			resp := predict(t, http.DefaultClient, g.URL, `{"question":"hi"}`, nil)
			body := readAll(t, resp)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status == 200 && !strings.Contains(body, `"text"`) {
				t.Fatalf("body %s", body)
			}
		})
	}
}

func TestUpstreamTLSBadCAFileIsAConfigError(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "not-a-ca.pem")
	os.WriteFile(bad, []byte("hello"), 0o600)
	_, err := config.ParseWith([]byte("proxy:\n  upstream_tls:\n    ca_file: "+bad+"\n"), "flowgate.yaml", config.LoadOptions{Getenv: func(string) string { return "" }})
	if err == nil || !strings.Contains(err.Error(), "flowgate.yaml:3: proxy.upstream_tls.ca_file") {
		t.Fatalf("error %v, want the key and its line", err)
	}
}

package flow

import "testing"

// BenchmarkIdentifyRoutes covers the other shapes a path takes on the hot
// path (BenchmarkIdentify in flow_test.go is the public prediction route):
// flow routes found deeper in the switch, and paths that are no flow at all,
// which are most of a UI's traffic.
func BenchmarkIdentifyRoutes(b *testing.B) {
	const id = "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11"
	for _, c := range []struct{ name, path string }{
		{"internal-prediction", "/api/v1/internal-prediction/" + id},
		{"document-store-upsert", "/api/v1/document-store/upsert/" + id},
		{"langflow-run", "/api/v1/run/my-flow"},
		{"api-not-flow", "/api/v1/chatflows/" + id},
		{"asset", "/assets/index-4f2a9c1b.js"},
		{"root", "/"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = Identify(c.path)
			}
		})
	}
}

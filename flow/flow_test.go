package flow

import "testing"

func TestIdentify(t *testing.T) {
	const id = "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11"
	tests := []struct {
		path  string
		route string
		kind  Kind
		id    string
		runs  bool
	}{
		{"/api/v1/prediction/" + id, RoutePrediction, Flowise, id, true},
		{"/api/v1/prediction/" + id + "/", RoutePrediction, Flowise, id, true},
		{"/api/v1/internal-prediction/" + id, RouteInternalPrediction, Flowise, id, true},
		{"/api/v1/vector/upsert/" + id, RouteVectorUpsert, Flowise, id, true},
		{"/api/v1/webhook/" + id, RouteWebhook, Flowise, id, true},
		{"/api/v1/mcp/" + id, RouteMCP, Flowise, id, true},
		{"/api/v1/document-store/upsert/" + id, RouteDocStoreUpsert, Flowise, id, false},
		{"/api/v1/run/my-flow", RouteLangflowRun, Langflow, "my-flow", true},
		// Not flow routes: proxied unchanged.
		{"/api/v1/ping", RouteOther, Unknown, "", false},
		{"/api/v1/prediction/", RouteOther, Unknown, "", false},
		{"/api/v1/prediction", RouteOther, Unknown, "", false},
		{"/api/v1/prediction/" + id + "/extra", RouteOther, Unknown, "", false},
		// Express matches routes case-insensitively; the id keeps its case.
		{"/API/V1/prediction/" + id, RoutePrediction, Flowise, id, true},
		{"/api/v1/Prediction/" + id, RoutePrediction, Flowise, id, true},
		{"/api/v1/PREDICTION/ABC-Def", RoutePrediction, Flowise, "ABC-Def", true},
		{"/api/v1/Vector/UPSERT/" + id, RouteVectorUpsert, Flowise, id, true},
		{"/api/v1/Document-Store/Upsert/" + id, RouteDocStoreUpsert, Flowise, id, false},
		{"/Api/V1/Run/My-Flow", RouteLangflowRun, Langflow, "My-Flow", true},
		// Matched on the path as sent: an escaped slash stays in the id,
		// which is decoded as Express decodes route parameters.
		{"/api/v1/run/my%2Fflow", RouteLangflowRun, Langflow, "my/flow", true},
		{"/api/v1/prediction/%36d0a", RoutePrediction, Flowise, "6d0a", true},
		{"/api/v1/prediction/%zz", RouteOther, Unknown, "", false},
		{"/api/v1/prediction/%FF", RouteOther, Unknown, "", false}, // decodeURIComponent throws
		{"/api/v1/predict%69on/" + id, RouteOther, Unknown, "", false},
		{"/api/v1/vector/" + id, RouteOther, Unknown, "", false},
		{"/api/v1/document-store/store/" + id, RouteOther, Unknown, "", false},
		{"/", RouteOther, Unknown, "", false},
		{"/assets/index.js", RouteOther, Unknown, "", false},
		{"", RouteOther, Unknown, "", false},
	}
	for _, tt := range tests {
		got := Identify(tt.path)
		if got.Route != tt.route || got.Kind != tt.kind || got.WorkflowID != tt.id || got.Runs != tt.runs {
			t.Errorf("Identify(%q) = %+v, want route=%s kind=%v id=%q runs=%v", tt.path, got, tt.route, tt.kind, tt.id, tt.runs)
		}
		if got.IsFlow() != (tt.kind != Unknown) {
			t.Errorf("Identify(%q).IsFlow() = %v", tt.path, got.IsFlow())
		}
	}
}

func TestCanonicalID(t *testing.T) {
	for in, want := range map[string]string{
		"6D0A2B7E-6C1F-4B0E-9A43-2F1F0C3F9B11": "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11",
		"6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11": "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11",
		"My-Flow":                              "My-Flow",
		"6D0A2B7E-6C1F-4B0E-9A43-2F1F0C3F9B1G": "6D0A2B7E-6C1F-4B0E-9A43-2F1F0C3F9B1G",
		// Postgres's other spellings of the same UUID.
		"6D0A2B7E6C1F4B0E9A432F1F0C3F9B11":        "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11",
		"{6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11}":  "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11",
		"6d0a-2b7e-6c1f-4b0e-9a43-2f1f-0c3f-9b11": "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11",
		"{6D0A2B7E6C1F4B0E9A432F1F0C3F9B11}":      "6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11",
		// Not UUIDs: left alone.
		"6d0a2b7e6c1f4b0e9a432f1f0c3f9b1":    "6d0a2b7e6c1f4b0e9a432f1f0c3f9b1",
		"6d0a2b7e6c1f4b0e9a432f1f0c3f9b111":  "6d0a2b7e6c1f4b0e9a432f1f0c3f9b111",
		"-6d0a2b7e6c1f4b0e9a432f1f0c3f9b11":  "-6d0a2b7e6c1f4b0e9a432f1f0c3f9b11",
		"6d0a2b7e6c1f4b0e9a432f1f0c3f9b11-":  "6d0a2b7e6c1f4b0e9a432f1f0c3f9b11-",
		"6d0a2-b7e6c1f4b0e9a432f1f0c3f9b11":  "6d0a2-b7e6c1f4b0e9a432f1f0c3f9b11",
		"6d0a--2b7e6c1f4b0e9a432f1f0c3f9b11": "6d0a--2b7e6c1f4b0e9a432f1f0c3f9b11",
	} {
		if got := CanonicalID(in); got != want {
			t.Errorf("CanonicalID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIdentifyAllocs(t *testing.T) {
	p := "/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11"
	if n := testing.AllocsPerRun(100, func() { _ = Identify(p) }); n != 0 {
		t.Fatalf("Identify allocates %v times per call, want 0", n)
	}
}

func BenchmarkIdentify(b *testing.B) {
	p := "/api/v1/prediction/6d0a2b7e-6c1f-4b0e-9a43-2f1f0c3f9b11"
	for b.Loop() {
		_ = Identify(p)
	}
}

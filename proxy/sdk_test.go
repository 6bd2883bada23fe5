package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/flowgate/flowgate/fakeflow"
)

// flowiseSDKVersion is the flowise-sdk npm package the replay is checked with.
const flowiseSDKVersion = "1.0.9"

// flowiseSDK installs Flowise's JS SDK into a temp dir and returns it. It
// needs node and npm (scripts/test installs them); under CI their absence
// fails the test instead of skipping it.
func flowiseSDK(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("installs flowise-sdk from npm")
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing: scripts/test installs it", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--prefix", dir, "flowise-sdk@"+flowiseSDKVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install flowise-sdk: %v\n%s", err, out)
	}
	return filepath.Join(dir, "node_modules")
}

// sdkStream streams one prediction through the SDK and returns its events.
func sdkStream(t *testing.T, sdk, base, question string) []map[string]any {
	t.Helper()
	cmd := exec.Command("node", "testdata/sdk-stream.mjs", base, flowID, question)
	cmd.Env = append(os.Environ(), "SDK_DIR="+sdk)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the SDK failed: %v\n%s", err, stderr.String())
	}
	var evs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("SDK output line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// Flowise's own JS SDK reads a replayed stream exactly as it read the
// original: same events, same order, same tokens, fresh ids.
func TestFlowiseSDKReadsReplayedStreams(t *testing.T) {
	sdk := flowiseSDK(t)
	for _, agent := range []bool{false, true} {
		ff := startFlow(t, fakeflow.Options{Agentflow: agent, Tokens: 8})
		g := cachedGW(t, ff.URL(), nil)
		miss := sdkStream(t, sdk, g.URL, "sdk question")
		hit := sdkStream(t, sdk, g.URL, "sdk question")
		if p := ff.Server().Stats().Predictions; p != 1 {
			t.Fatalf("agentflow=%v: %d predictions, want 1 (the second a hit)", agent, p)
		}
		if len(miss) == 0 || len(miss) != len(hit) {
			t.Fatalf("agentflow=%v: %d events, then %d", agent, len(miss), len(hit))
		}
		for i := range miss {
			if miss[i]["event"] != hit[i]["event"] {
				t.Fatalf("agentflow=%v: event %d %v then %v", agent, i, miss[i]["event"], hit[i]["event"])
			}
			if miss[i]["event"] == "token" && miss[i]["data"] != hit[i]["data"] {
				t.Fatalf("agentflow=%v: token %d %q then %q", agent, i, miss[i]["data"], hit[i]["data"])
			}
			if miss[i]["event"] == "metadata" {
				m1, m2 := miss[i]["data"].(map[string]any), hit[i]["data"].(map[string]any)
				if m1["chatId"] == m2["chatId"] {
					t.Fatalf("agentflow=%v: the hit carries the miss's chatId", agent)
				}
			}
		}
		if last := hit[len(hit)-1]["event"]; last != "end" {
			t.Fatalf("agentflow=%v: the replay ends with %v", agent, last)
		}
	}
}

package proxy

import (
	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/sse"

	"net/url"
	"testing"
	"time"
)

func testUpstreams(n int) []*Upstream {
	ups := make([]*Upstream, n)
	for i := range ups {
		ups[i] = newUpstream(string(rune('a'+i)), &url.URL{Scheme: "http", Host: "127.0.0.1:1"})
	}
	return ups
}

func TestLeastConnPicksFewestInFlight(t *testing.T) {
	ups := testUpstreams(3)
	ups[0].inflight.Store(5)
	ups[1].inflight.Store(2)
	ups[2].inflight.Store(7)
	lb := newLeastConn(ups, func(int) int { t.Fatal("no tie, no randomness"); return 0 })
	if u, i := lb.pick(time.Now(), 0); u != ups[1] || i != 1 {
		t.Fatalf("picked %v (%d), want b", u.Name, i)
	}
	// Already tried: skipped even though least loaded.
	if u, _ := lb.pick(time.Now(), 1<<1); u != ups[0] {
		t.Fatalf("picked %v, want a once b was tried", u.Name)
	}
}

func TestLeastConnTiesUseInjectedRandomness(t *testing.T) {
	ups := testUpstreams(3)
	// intN always 0: every later tie replaces the earlier choice, so the
	// last tied upstream wins; always n-1 keeps the first.
	last := newLeastConn(ups, func(int) int { return 0 })
	if u, _ := last.pick(time.Now(), 0); u != ups[2] {
		t.Fatalf("intN=0 picked %s, want c", u.Name)
	}
	first := newLeastConn(ups, func(n int) int { return n - 1 })
	if u, _ := first.pick(time.Now(), 0); u != ups[0] {
		t.Fatalf("intN=n-1 picked %s, want a", u.Name)
	}
}

func TestLeastConnTiesAreFair(t *testing.T) {
	ups := testUpstreams(4)
	lb := newLeastConn(ups, nil)
	counts := map[string]int{}
	for range 4000 {
		u, _ := lb.pick(time.Now(), 0)
		counts[u.Name]++
	}
	for name, c := range counts {
		if c < 800 || c > 1200 {
			t.Fatalf("upstream %s got %d of 4000 tied picks, want about 1000: %v", name, c, counts)
		}
	}
}

func TestLeastConnSkipsUnhealthy(t *testing.T) {
	ups := testUpstreams(2)
	now := time.Now()
	ups[0].activeUp.Store(false)
	ups[1].coolUntil.Store(now.Add(time.Second).UnixNano())
	lb := newLeastConn(ups, nil)
	if u, _ := lb.pick(now, 0); u != nil {
		t.Fatalf("picked %s with every upstream down", u.Name)
	}
	if u, _ := lb.pick(now.Add(2*time.Second), 0); u != ups[1] {
		t.Fatalf("cool-down over: want b, got %v", u)
	}
}

func TestPassiveFailWindow(t *testing.T) {
	u := testUpstreams(1)[0]
	t0 := time.Now()
	if u.passiveFail(t0, 3, time.Second, 5*time.Second, true) || u.passiveFail(t0.Add(800*time.Millisecond), 3, time.Second, 5*time.Second, true) {
		t.Fatal("taken out before max_fails")
	}
	// The first failure has left the window: still two inside.
	if u.passiveFail(t0.Add(1500*time.Millisecond), 3, time.Second, 5*time.Second, true) {
		t.Fatal("a failure outside the window counted")
	}
	if u.passiveFail(t0.Add(1600*time.Millisecond), 3, time.Second, 5*time.Second, false) {
		t.Fatal("the last healthy upstream was taken out")
	}
	if !u.passiveFail(t0.Add(1700*time.Millisecond), 3, time.Second, 5*time.Second, true) {
		t.Fatal("three failures inside the window did not take it out")
	}
	if u.Healthy(t0.Add(2 * time.Second)) {
		t.Fatal("healthy during cool-down")
	}
	if !u.Healthy(t0.Add(7 * time.Second)) {
		t.Fatal("still out after the cool-down")
	}
}

func TestActiveThresholds(t *testing.T) {
	u := testUpstreams(1)[0]
	for i := 1; i <= 2; i++ {
		if changed, _ := u.activeResult(false, 2, 3); changed {
			t.Fatalf("down after %d failures, threshold 3", i)
		}
	}
	if changed, up := u.activeResult(false, 2, 3); !changed || up {
		t.Fatal("not down after 3 failures")
	}
	if changed, _ := u.activeResult(true, 2, 3); changed {
		t.Fatal("up after 1 pass, threshold 2")
	}
	if changed, up := u.activeResult(true, 2, 3); !changed || !up {
		t.Fatal("not up after 2 passes")
	}
}

func TestAcceptsGzip(t *testing.T) {
	for ae, want := range map[string]bool{
		"gzip": true, "gzip, deflate, br": true, "br;q=1, gzip;q=0.5": true,
		"gzip;q=0": false, "identity": false, "": false, "deflate, gzip;q=0": false,
	} {
		if got := acceptsGzip(ae); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", ae, got, want)
		}
	}
}

// The error frame is parsed as an event of its own wherever the upstream
// stopped: after a whole frame, mid-line, mid-event, after a CR (which
// would swallow an LF), after a comment.
func TestErrorFrame(t *testing.T) {
	const tok = `{"event":"token","data":"a"}`
	cases := []struct {
		name, upstream string
		prefix         string // what errorFrame must put before the frame
	}{
		{"whole LF frame", "message:\ndata:" + tok + "\n\n", ""},
		{"whole CRLF frame", "message:\r\ndata:" + tok + "\r\n\r\n", ""},
		{"whole CR frame", "message:\rdata:" + tok + "\r\r", "\n"},
		{"mid line", "message:\ndata:{\"ev", "\n\n"},
		{"mid event", "message:\ndata:" + tok + "\n", "\n\n"},
		{"mid event after CR", "message:\rdata:" + tok + "\r", "\n\n\n"},
		{"after a comment", ":heartbeat\n\n", ""},
		{"nothing yet", "", ""},
	}
	for _, tc := range cases {
		var p sse.Parser
		p.Feed([]byte(tc.upstream), nil)
		f := errorFrame(&p, "cut")
		want := tc.prefix + "message:\ndata:{\"event\":\"error\",\"data\":\"cut\"}\n\n"
		if string(f) != want {
			t.Errorf("%s: frame %q, want %q", tc.name, f, want)
		}
		// What a client parses: the error is the last event, and whole.
		var last []byte
		var q sse.Parser
		q.Feed([]byte(tc.upstream+string(f)), func(ev *sse.Event) { last = append(last[:0], ev.Data...) })
		if name, ok := flow.FlowiseEvent(last); !ok || string(name) != "error" {
			t.Errorf("%s: last event a client parses is %q", tc.name, last)
		}
	}
}

func TestAsksToStream(t *testing.T) {
	for body, want := range map[string]bool{
		`{"question":"hi","streaming":true}`:   true,
		`{"question":"hi","streaming":"true"}`: true,
		`{"question":"hi","streaming":false}`:  false,
		`{"question":"hi"}`:                    false,
		`{"question":"say \"streaming\""}`:     false,
		`not json "streaming"`:                 false,
		// As JSON.parse reads it: exact keys after unescaping, the last
		// duplicate winning.
		`{"stre\u0061ming":true}`:                true,
		`{"streaming":false,"Streaming":true}`:   false,
		`{"streaming":true,"streaming":false}`:   false,
		`{"streaming":false,"streaming":"true"}`: true,
		`{"Streaming":true}`:                     false,
		`{"question":"caf\u00e9","streaming":1}`: false,
	} {
		if got := asksToStream([]byte(body)); got != want {
			t.Errorf("asksToStream(%s) = %v, want %v", body, got, want)
		}
	}
}

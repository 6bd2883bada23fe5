package proxy

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// A request that cannot be written for reasons of its own (here its body,
// as a spooled body whose file fails) fails before a byte reaches the
// upstream: a 400, and no penalty for the upstream.
func TestUnwritableRequestIsNotTheUpstreamsFault(t *testing.T) {
	srv, opened, _ := connServer(t, func(w http.ResponseWriter, r *http.Request) {})
	c := newUpstreamClient(time.Second, 4, time.Minute, nil)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", io.NopCloser(iotest.ErrReader(errors.New("spool file unreadable"))))
	req.ContentLength = 10
	_, err := c.RoundTrip(req)
	var re *requestError
	var ue *upstreamError
	if !errors.As(err, &re) || errors.As(err, &ue) {
		t.Fatalf("error %v (%T): want a requestError, not an upstreamError", err, err)
	}
	f := classify(err, context.Background(), context.Background())
	if f.status != http.StatusBadRequest || f.penalize || f.retry {
		t.Fatalf("classified %+v: want 400, no penalty, no retry", f)
	}
	if n := opened.Load(); n > 1 {
		t.Fatalf("%d connections opened", n)
	}
}

// A body read again after it failed or was closed early never says EOF:
// a cut must not look like an end to whoever reads next.
func TestCutBodyNeverReadsAsEnded(t *testing.T) {
	srv, _, _ := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: a\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	resp := getFresh(t, srv.URL)
	buf := make([]byte, 64)
	if n, err := resp.Body.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "data: a") {
		t.Fatalf("first read %q, %v", buf[:n], err)
	}
	resp.Body.Close()
	if _, err := resp.Body.Read(buf); err == nil || err == io.EOF {
		t.Fatalf("read after an early Close: %v, want an error other than EOF", err)
	}
}

// wait blocks until the upstream sends, without reading the body's bytes
// away from the next Read, and lets a failure through to it.
func TestPooledBodyWaitKeepsBytesAndErrors(t *testing.T) {
	next := make(chan struct{})
	srv, _, _ := connServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: a\n\n")
		w.(http.Flusher).Flush()
		<-next
		io.WriteString(w, "data: b\n\n")
		w.(http.Flusher).Flush()
		// Hijacked and closed without the final chunk: a cut.
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.Close()
	})
	resp := getFresh(t, srv.URL)
	defer resp.Body.Close()
	pb := resp.Body.(*pooledBody)
	buf := make([]byte, 64)
	pb.wait()
	if n, err := pb.Read(buf); err != nil || string(buf[:n]) != "data: a\n\n" {
		t.Fatalf("first event %q, %v", buf[:n], err)
	}
	waited := make(chan struct{})
	go func() { pb.wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("wait returned before the upstream sent anything")
	case <-time.After(50 * time.Millisecond): // a bound on a wrong answer, not a synchronisation
	}
	close(next)
	<-waited
	if n, err := pb.Read(buf); err != nil || string(buf[:n]) != "data: b\n\n" {
		t.Fatalf("second event %q, %v", buf[:n], err)
	}
	pb.wait()
	var all []byte
	for {
		n, err := pb.Read(buf)
		all = append(all, buf[:n]...)
		if err == io.EOF {
			t.Fatalf("a body cut before its last chunk ended with EOF (%q)", all)
		}
		if err != nil {
			break
		}
	}
}

// getFresh GETs url through a client of its own, closed with the test.
func getFresh(t *testing.T, url string) *http.Response {
	t.Helper()
	c := newUpstreamClient(time.Second, 4, time.Minute, nil)
	t.Cleanup(c.CloseIdleConnections)
	req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// A compressed answer gets its gzip trailer only when it was complete: a
// cut one must not end as a well-formed stream, which over HTTP/1.0 (the
// connection's close is the end) would be the only sign of completeness.
func TestCompressedAnswerEndsWellFormedOnlyWhenComplete(t *testing.T) {
	for _, complete := range []bool{true, false} {
		rec := httptest.NewRecorder()
		var rw responseWriter
		rw.reset(rec, httptest.NewRequest(http.MethodGet, "/", nil), 0)
		rw.compress = true
		rw.WriteHeader(http.StatusOK)
		if _, err := rw.Write([]byte(strings.Repeat("flowgate ", 1000))); err != nil {
			t.Fatal(err)
		}
		rw.finish(complete)
		var err error
		if zr, zerr := gzip.NewReader(rec.Body); zerr != nil {
			err = zerr
		} else {
			_, err = io.ReadAll(zr)
		}
		if (err == nil) != complete {
			t.Errorf("complete %v: reading the gzip stream gave %v", complete, err)
		}
	}
}

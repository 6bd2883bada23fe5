package proxy

import (
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Floor is the measuring stick under the gateway (issue 12): net/http's
// server and flowgate's own upstream client with nothing else, no header
// rewriting, stream check, metrics, log or balancer. What flowgate costs
// beyond it is flowgate's; what it costs itself is net/http's and the
// client's. It is for benchmarks only: it forwards to one upstream
// without any of the gateway's limits.
func Floor(upstream *url.URL) http.Handler {
	f := &floor{up: upstream, client: newUpstreamClient(5*time.Second, 256, 4*time.Second, nil)}
	f.bufs.New = func() any { b := make([]byte, 32<<10); return &b }
	return f
}

type floor struct {
	up     *url.URL
	client *upstreamClient
	bufs   sync.Pool
}

func (f *floor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The outbound request reuses the inbound one's header and URL, as
	// the gateway's forward avoids clones: nothing else reads them.
	u := *r.URL
	u.Scheme, u.Host = f.up.Scheme, f.up.Host
	for _, h := range hopHeaders {
		delete(r.Header, h)
	}
	out := &http.Request{Method: r.Method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: r.Header, Host: r.Host, ContentLength: r.ContentLength}
	if r.ContentLength != 0 {
		out.Body = r.Body
	}
	res, err := f.client.do(r.Context(), out, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer res.Body.Close()
	h := w.Header()
	for k, v := range res.Header {
		h[k] = v
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	w.WriteHeader(res.StatusCode)
	var fl http.Flusher
	pb, _ := res.Body.(*pooledBody)
	if isEventStream(res.Header) {
		fl, _ = w.(http.Flusher) // frame by frame, as through the gateway
	}
	bp := f.bufs.Get().(*[]byte)
	defer func() { f.bufs.Put(bp) }()
	for {
		if fl != nil && pb != nil {
			// As the gateway's copyBody: a stream waits for its next
			// event holding no copy buffer.
			f.bufs.Put(bp)
			pb.wait()
			bp = f.bufs.Get().(*[]byte)
		}
		n, err := res.Body.Read(*bp)
		if n > 0 {
			if _, werr := w.Write((*bp)[:n]); werr != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			panic(http.ErrAbortHandler) // the client must not take a cut answer for whole
		}
	}
}

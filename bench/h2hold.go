package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flowgate/flowgate/fakeflow"
)

// flowgateH2Target is a row of the open-streams sweep: flowgate-tls
// holding the streams as HTTP/2 streams over a few TLS connections (Go's
// client opens one more whenever the server's concurrent-stream limit is
// reached), as browsers reach a gateway that terminates TLS. Over
// HTTP/1.1 every stream is a client connection and an upstream one in the
// proxy, 2 file descriptors each: 10,000 streams need more than a hard
// open-files limit of 20,000 allows one process, and without
// CAP_SYS_RESOURCE it cannot be raised. Over HTTP/2 the upstream side
// still has one connection per stream.
const flowgateH2Target = "flowgate-h2"

// holdStreamsH2 opens n streams over HTTP/2 (TLS) that stay open (one token
// every tokenDelay) and returns once each has delivered its first token.
// close ends them.
func holdStreamsH2(url string, n int, tokenDelay time.Duration) (close func(), opened int, err error) {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // the run's own certificate, on loopback
		ForceAttemptHTTP2: true,
		MaxIdleConns:      0,
	}
	c := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	bodies := make([]*http.Response, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 100) // requests in flight before their first token
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+predictPath, strings.NewReader(streamBody))
			if err != nil {
				errs[i] = err
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(fakeflow.HeaderTokens, strconv.Itoa(1000))
			req.Header.Set(fakeflow.HeaderTokenDelay, tokenDelay.String())
			resp, err := c.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			bodies[i] = resp
			if resp.StatusCode != http.StatusOK {
				errs[i] = fmt.Errorf("status %d", resp.StatusCode)
				return
			}
			if resp.ProtoMajor != 2 {
				errs[i] = fmt.Errorf("%s, not HTTP/2", resp.Proto)
				return
			}
			t := time.AfterFunc(15*time.Second, func() { resp.Body.Close() })
			defer t.Stop()
			errs[i] = untilFirstToken(resp.Body)
		}()
	}
	wg.Wait()
	closeAll := func() {
		cancel()
		for _, r := range bodies {
			if r != nil {
				r.Body.Close()
			}
		}
		tr.CloseIdleConnections()
	}
	opened, err = tally(errs)
	return closeAll, opened, err
}

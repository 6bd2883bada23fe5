package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flowgate/flowgate/fakeflow"
	"github.com/flowgate/flowgate/flow"
	"github.com/flowgate/flowgate/sse"
)

// Streaming: fakeflow stamps every token frame with its write time
// (fakeflow.HeaderStamp); the client notes when it read the frame. The
// difference is the delay per frame, the same clock on both ends.

type streamOut struct {
	Delay    []time.Duration // per token frame: read time minus write stamp
	TTFT     []time.Duration // request written to first token frame read
	Streams  int             // completed, every token seen
	Errors   int
	FirstErr string
}

const streamBody = `{"question":"hi","streaming":true}`

func streamRequest(host string, tokens int, delay time.Duration, stamp bool) []byte {
	hdr := []string{
		fakeflow.HeaderTokens + ": " + strconv.Itoa(tokens),
		fakeflow.HeaderTokenDelay + ": " + delay.String(),
	}
	if stamp {
		hdr = append(hdr, fakeflow.HeaderStamp+": 1")
	}
	return withBody(rawRequest(host, hdr...), streamBody)
}

var stampKey = []byte(`"` + fakeflow.StampField + `":`)

// runStreams runs conc workers, each streaming perWorker answers of tokens
// tokens, one after another on one keep-alive connection.
func runStreams(url string, conc, perWorker, tokens int, delay time.Duration) streamOut {
	host := strings.TrimPrefix(url, "http://")
	req := streamRequest(host, tokens, delay, true)
	var (
		mu  sync.Mutex
		out streamOut
		wg  sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		out.Errors++
		if out.FirstErr == "" {
			out.FirstErr = err.Error()
		}
		mu.Unlock()
	}
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c net.Conn
			var br *bufio.Reader
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			delays := make([]time.Duration, 0, perWorker*tokens)
			var ttfts []time.Duration
			done := 0
			for k := 0; k < perWorker; k++ {
				if c == nil {
					var err error
					if c, err = net.Dial("tcp", host); err != nil {
						fail(err)
						return
					}
					br = bufio.NewReaderSize(c, 16<<10)
				}
				t0 := time.Now()
				if _, err := c.Write(req); err != nil {
					fail(err)
					c.Close()
					c = nil
					continue
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					fail(err)
					c.Close()
					c = nil
					continue
				}
				if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
					resp.Body.Close()
					fail(fmt.Errorf("status %d, content-type %q", resp.StatusCode, resp.Header.Get("Content-Type")))
					c.Close()
					c = nil
					continue
				}
				rd := bufio.NewReaderSize(resp.Body, 4096)
				seen := 0
				for {
					line, err := rd.ReadSlice('\n')
					now := time.Now()
					if i := bytes.Index(line, stampKey); i >= 0 {
						digits := line[i+len(stampKey):]
						j := 0
						for j < len(digits) && digits[j] >= '0' && digits[j] <= '9' {
							j++
						}
						ns, perr := strconv.ParseInt(string(digits[:j]), 10, 64)
						if perr == nil {
							delays = append(delays, time.Duration(now.UnixNano()-ns))
							if seen == 0 {
								ttfts = append(ttfts, now.Sub(t0))
							}
							seen++
						}
					}
					if err != nil {
						break // io.EOF at the end of the answer
					}
				}
				resp.Body.Close()
				if seen == tokens {
					done++
				} else {
					fail(fmt.Errorf("stream ended after %d of %d tokens", seen, tokens))
				}
				if resp.Close {
					c.Close()
					c = nil
				}
			}
			mu.Lock()
			out.Delay = append(out.Delay, delays...)
			out.TTFT = append(out.TTFT, ttfts...)
			out.Streams += done
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// holdStreams opens n streams that stay open (one token every tokenDelay)
// and returns once each has delivered its first token. close ends them.
func holdStreams(url string, n int, tokenDelay time.Duration) (close func(), opened int, err error) {
	host := strings.TrimPrefix(url, "http://")
	req := streamRequest(host, 1000, tokenDelay, false)
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 100) // dials in flight
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", host, 10*time.Second)
			if err != nil {
				errs[i] = err
				return
			}
			conns[i] = c
			_ = c.SetDeadline(time.Now().Add(15 * time.Second))
			if _, err := c.Write(req); err != nil {
				errs[i] = err
				return
			}
			br := bufio.NewReaderSize(c, 1024)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				errs[i] = err
				return
			}
			if resp.StatusCode != http.StatusOK {
				errs[i] = fmt.Errorf("status %d", resp.StatusCode)
				return
			}
			if errs[i] = untilFirstToken(resp.Body); errs[i] == nil {
				_ = c.SetDeadline(time.Time{}) // open: the next token is tokenDelay away
			}
		}()
	}
	wg.Wait()
	closeAll := func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
	opened, err = tally(errs)
	return closeAll, opened, err
}

// untilFirstToken reads a Flowise SSE answer until its first token event,
// read as events and their JSON (any line ending, key order or spacing), so
// that a held stream is known to be open past its start.
func untilFirstToken(body io.Reader) error {
	var p sse.Parser
	p.MaxEventBytes = 64 << 10
	buf := make([]byte, 512)
	found := false
	onEvent := func(ev *sse.Event) {
		if name, ok := flow.FlowiseEvent(ev.Data); ok && string(name) == "token" {
			found = true
		}
	}
	for {
		n, err := body.Read(buf)
		p.Feed(buf[:n], onEvent)
		if found {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream ended before its first token: %v", err)
		}
	}
}

// tally counts the held streams that opened (no error) and returns the
// first failure of the others.
func tally(errs []error) (opened int, err error) {
	for _, e := range errs {
		if e == nil {
			opened++
		} else if err == nil {
			err = e
		}
	}
	return opened, err
}

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Open-loop load at a fixed rate, like wrk2: requests are scheduled on a
// clock whatever the answers do, spread over a pool of keep-alive
// connections. Latency is measured from the moment a request is written to
// the moment its whole answer is read. A request that found no free
// connection when it was due is counted as late (a sign the rate is not
// "moderate" for that target).

type rateOut struct {
	Sent, OK, Errors, Late int64
	Lat                    []time.Duration
	Elapsed                time.Duration
}

func rawRequest(host string, extra ...string) []byte {
	var b strings.Builder
	b.WriteString("POST " + predictPath + " HTTP/1.1\r\nHost: " + host + "\r\n")
	b.WriteString("Content-Type: application/json\r\nAccept-Encoding: gzip\r\n")
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	return []byte(b.String())
}

func withBody(head []byte, body string) []byte {
	return append(append(append([]byte(nil), head...), fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))...), body...)
}

func runRate(url string, rate int, d time.Duration, conns int) (rateOut, error) {
	host := strings.TrimPrefix(url, "http://")
	req := withBody(rawRequest(host), jsonBody)
	jobs := make(chan struct{}, conns)
	var (
		mu  sync.Mutex
		out rateOut
		wg  sync.WaitGroup
	)
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", host)
		if err != nil {
			close(jobs)
			wg.Wait()
			return out, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			br := bufio.NewReaderSize(c, 16<<10)
			lat := make([]time.Duration, 0, 1024)
			var ok, errs int64
			for range jobs {
				t0 := time.Now()
				closeAfter, err := roundTrip(c, br, req)
				if err == nil && closeAfter {
					// The server ends keep-alive here (nginx after
					// keepalive_requests): reconnect, as a client would.
					lat = append(lat, time.Since(t0))
					ok++
					c.Close()
					if c, err = net.Dial("tcp", host); err != nil {
						errs++
						break
					}
					br.Reset(c)
					continue
				}
				if err != nil {
					errs++
					// Reconnect: the connection is unusable after an error.
					c.Close()
					if c, err = net.Dial("tcp", host); err != nil {
						break
					}
					br.Reset(c)
					continue
				}
				lat = append(lat, time.Since(t0))
				ok++
			}
			mu.Lock()
			out.OK += ok
			out.Errors += errs
			out.Lat = append(out.Lat, lat...)
			mu.Unlock()
		}()
	}
	// The pacer: every request has its due time start+i/rate; whatever is
	// due is dispatched at once, so the mean rate is exact even when the
	// pacer's sleep overshoots.
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	end := start.Add(d)
	var sent, late int64
	for {
		now := time.Now()
		if !now.Before(end) {
			break
		}
		due := int64(now.Sub(start)/interval) + 1
		for ; sent < due; sent++ {
			select {
			case jobs <- struct{}{}:
			default:
				late++
				jobs <- struct{}{}
			}
		}
		next := start.Add(time.Duration(sent) * interval)
		if w := time.Until(next); w > 0 {
			time.Sleep(w)
		}
	}
	close(jobs)
	wg.Wait()
	out.Sent, out.Late = sent, late
	out.Elapsed = time.Since(start)
	return out, nil
}

// roundTrip writes one request and reads its whole answer; closeAfter
// reports that the server closes the connection after it.
func roundTrip(c net.Conn, br *bufio.Reader, req []byte) (closeAfter bool, err error) {
	if _, err := c.Write(req); err != nil {
		return false, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.Close, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Close, nil
}

// Command fakeflow runs a Flowise-compatible fake upstream (package
// fakeflow) for tests, benchmarks and the demo.
//
//	fakeflow -listen 127.0.0.1:3000 -tokens 20 -token-delay 30ms -agentflow
//
// It prints its URL on stdout once listening and exits cleanly on SIGINT or
// SIGTERM (a second signal exits at once). Per-request behaviour can be
// changed with the X-Fakeflow-* request headers documented in package fakeflow.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flowgate/flowgate/fakeflow"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("fakeflow", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:3000", "address to listen on")
	latency := fs.Duration("latency", 0, "wait before answering a prediction (before headers)")
	tokenDelay := fs.Duration("token-delay", 0, "wait between streamed token frames")
	tokens := fs.Int("tokens", 6, "tokens in each answer")
	failureRate := fs.Float64("failure-rate", 0, "fraction of predictions answered 500 (0..1)")
	hang := fs.Bool("hang", false, "accept predictions and never answer until the client goes away")
	agentflow := fs.Bool("agentflow", false, "answer as an Agentflow V2 (executionId, agentFlowExecutedData, usage)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "fakeflow: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	if *failureRate < 0 || *failureRate > 1 {
		fmt.Fprintln(os.Stderr, "fakeflow: -failure-rate must be between 0 and 1")
		return 2
	}
	if *tokens < 0 || *latency < 0 || *tokenDelay < 0 {
		fmt.Fprintln(os.Stderr, "fakeflow: -tokens, -latency and -token-delay must not be negative")
		return 2
	}

	inst, err := fakeflow.Start(*listen, fakeflow.Options{
		Latency:     *latency,
		TokenDelay:  *tokenDelay,
		Tokens:      *tokens,
		FailureRate: *failureRate,
		Hang:        *hang,
		Agentflow:   *agentflow,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fakeflow: %v\n", err)
		return 1
	}
	fmt.Println(inst.URL())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	<-ctx.Done()
	stop() // a second signal now kills the process the default way

	done := make(chan error, 1)
	go func() { done <- inst.Close() }()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintf(os.Stderr, "fakeflow: close: %v\n", err)
			return 1
		}
	case <-time.After(10 * time.Second):
		fmt.Fprintln(os.Stderr, "fakeflow: in-flight requests did not finish in 10s; killing them")
		inst.Kill()
	}
	st := inst.Server().Stats()
	fmt.Fprintf(os.Stderr, "fakeflow: stopped after %d requests (%d predictions, %d streams, %d failures)\n",
		st.Requests, st.Predictions, st.Streams, st.Failures)
	return 0
}

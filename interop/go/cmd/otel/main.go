// Command otel is the Go side of the OpenTelemetry interop tests: rpcx-plugins'
// OpenTelemetry server and client plugins (github.com/rpcxio/rpcx-plugins) with an
// in-memory span recorder (go.opentelemetry.io/otel/sdk/trace/tracetest). The global
// propagator is set to W3C TraceContext + Baggage (Go's default is a no-op, and the
// plugins use the global one when given nil).
//
//	otel server [-addr 127.0.0.1:0]
//	    Serves the interop services (services.Register) with the server plugin and
//	    prints "LISTENING <addr>". When stdin closes it shuts the server down (which
//	    waits for requests in flight, so every request span has ended), prints each
//	    recorded span as "SPAN <json>", then "DONE", and exits 0.
//
//	otel client -addr tcp@HOST:PORT [-a 6] [-b 7]
//	    Through a Peer2Peer XClient with the client plugin: calls Arith.Mul {A,B}
//	    (expects C = A*B) and then Arith.Error {A} (expects the error text of the
//	    contract). Prints each recorded span as "SPAN <json>", then "OK", and exits 0;
//	    exits 1 with the reason on any unexpected outcome.
//
// A span line's JSON: {"name", "kind", "trace_id", "span_id", "parent_span_id"
// ("" for a root), "parent_remote", "sampled", "attributes" (string values),
// "events" (names), "status_code" ("Unset", "Error", "Ok"), "status_description"}.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"os"
	"time"

	otelclient "github.com/rpcxio/rpcx-plugins/client/otel"
	otelserver "github.com/rpcxio/rpcx-plugins/server/otel"
	"github.com/smallnest/rpcx/client"
	rpcxlog "github.com/smallnest/rpcx/log"
	"github.com/smallnest/rpcx/server"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"rpcxinterop/services"
)

// span is the JSON form of one recorded span.
type span struct {
	Name              string            `json:"name"`
	Kind              string            `json:"kind"`
	TraceID           string            `json:"trace_id"`
	SpanID            string            `json:"span_id"`
	ParentSpanID      string            `json:"parent_span_id"`
	ParentRemote      bool              `json:"parent_remote"`
	Sampled           bool              `json:"sampled"`
	Attributes        map[string]string `json:"attributes"`
	Events            []string          `json:"events"`
	StatusCode        string            `json:"status_code"`
	StatusDescription string            `json:"status_description"`
}

func main() {
	if len(os.Args) < 2 {
		fatalf("usage: otel server [-addr A] | otel client -addr tcp@HOST:PORT [-a N] [-b N]")
	}
	// rpcx's default logger writes to stdout; keep stdout for our lines.
	rpcxlog.SetLogger(rpcxlog.NewDefaultLogger(os.Stderr, "", stdlog.LstdFlags|stdlog.Lmicroseconds, rpcxlog.LvError))
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	recorder := tracetest.NewSpanRecorder()
	// The default sampler (ParentBased(AlwaysSample)): a remote parent that is not
	// sampled yields no recorded span, so the tests also see the sampled flag travel.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(recorder))
	tracer := tp.Tracer("rpcxinterop/otel")
	switch os.Args[1] {
	case "server":
		runServer(os.Args[2:], tracer, recorder)
	case "client":
		runClient(os.Args[2:], tracer, recorder)
	default:
		fatalf("unknown mode %q", os.Args[1])
	}
}

func runServer(args []string, tracer trace.Tracer, recorder *tracetest.SpanRecorder) {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	_ = fs.Parse(args)

	s := server.NewServer()
	// Before Register, so the plugin's rpcx.Register spans are recorded too.
	s.Plugins.Add(otelserver.NewOpenTelemetryPlugin(tracer, nil))
	if err := services.Register(s, ""); err != nil {
		fatalf("%v", err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve("tcp", *addr) }()
	select {
	case <-s.Started:
	case err := <-serveErr:
		fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		fatalf("listener did not start within 10s")
	}
	fmt.Printf("LISTENING %s\n", s.Address().String())

	// Serve until stdin closes (or the watchdog fires).
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(stdinClosed)
	}()
	select {
	case <-stdinClosed:
	case err := <-serveErr:
		fatalf("serve: %v", err)
	case <-time.After(5 * time.Minute):
		fatalf("watchdog: stdin still open after 5 minutes")
	}
	// Shutdown waits for the requests in flight; their spans end in PostWriteResponse.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		fatalf("shutdown: %v", err)
	}
	printSpans(recorder)
	fmt.Println("DONE")
}

func runClient(args []string, tracer trace.Tracer, recorder *tracetest.SpanRecorder) {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	addr := fs.String("addr", "", "the server (tcp@HOST:PORT)")
	a := fs.Int("a", 6, "A")
	b := fs.Int("b", 7, "B")
	_ = fs.Parse(args)
	if *addr == "" {
		fatalf("-addr is required")
	}
	d, err := client.NewPeer2PeerDiscovery(*addr, "")
	if err != nil {
		fatalf("discovery: %v", err)
	}
	xc := client.NewXClient("Arith", client.Failfast, client.RandomSelect, d, client.DefaultOption)
	defer xc.Close()
	pc := client.NewPluginContainer()
	pc.Add(otelclient.NewOpenTelemetryPlugin(tracer, nil))
	xc.SetPlugins(pc)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply := &services.Reply{}
	if err := xc.Call(ctx, "Mul", &services.Args{A: *a, B: *b}, reply); err != nil {
		fatalf("Arith.Mul: %v", err)
	}
	if reply.C != *a**b {
		fatalf("Arith.Mul: got C=%d, want %d", reply.C, *a**b)
	}
	err = xc.Call(ctx, "Error", &services.Args{A: *a}, &services.Reply{})
	if err == nil || err.Error() != services.ErrorText(*a) {
		fatalf("Arith.Error: got %v, want %q", err, services.ErrorText(*a))
	}
	printSpans(recorder)
	fmt.Println("OK")
}

// printSpans prints every ended span as "SPAN <json>".
func printSpans(recorder *tracetest.SpanRecorder) {
	for _, s := range recorder.Ended() {
		out := span{
			Name:              s.Name(),
			Kind:              s.SpanKind().String(),
			TraceID:           s.SpanContext().TraceID().String(),
			SpanID:            s.SpanContext().SpanID().String(),
			ParentRemote:      s.Parent().IsRemote(),
			Sampled:           s.SpanContext().IsSampled(),
			Attributes:        map[string]string{},
			Events:            []string{},
			StatusCode:        s.Status().Code.String(),
			StatusDescription: s.Status().Description,
		}
		if s.Parent().IsValid() {
			out.ParentSpanID = s.Parent().SpanID().String()
		}
		for _, kv := range s.Attributes() {
			out.Attributes[string(kv.Key)] = kv.Value.Emit()
		}
		for _, e := range s.Events() {
			out.Events = append(out.Events, e.Name)
		}
		line, err := json.Marshal(out)
		if err != nil {
			fatalf("encode span: %v", err)
		}
		fmt.Printf("SPAN %s\n", line)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "otel: "+format+"\n", args...)
	os.Exit(1)
}

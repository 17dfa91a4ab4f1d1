// Command server is the Go rpcx server of the interop harness.
//
//	server [-addr 127.0.0.1:0] [-network tcp|http|ws|wss|unix] [-auth TOKEN]
//	       [-cert PEM -key PEM]   (TLS; required for -network wss)
//
// After the listener is up it prints exactly one line to stdout,
// "LISTENING <addr>", and then serves until killed. All rpcx logging goes to
// stderr (level from RPCX_LOG_LEVEL, default errors only).
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	stdlog "log"
	"os"
	"os/signal"
	"syscall"
	"time"

	rpcxlog "github.com/smallnest/rpcx/log"
	"github.com/smallnest/rpcx/server"

	"rpcxinterop/services"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (host:port, or socket path for -network unix)")
	network := flag.String("network", "tcp", "listen network: tcp, tcp4, tcp6, http (CONNECT tunnels only), ws (WebSocket only), wss (WebSocket in TLS, needs -cert/-key) or unix")
	auth := flag.String("auth", "", "if non-empty, only accept requests whose __AUTH metadata equals this token")
	certFile := flag.String("cert", "", "TLS certificate (PEM); with -key, the listener is TLS")
	keyFile := flag.String("key", "", "TLS private key (PEM)")
	flag.Parse()

	// rpcx's default logger writes to stdout; keep stdout for the LISTENING line.
	rpcxlog.SetLogger(rpcxlog.NewDefaultLogger(os.Stderr, "", stdlog.LstdFlags|stdlog.Lmicroseconds|stdlog.Lshortfile, rpcxlog.LvError))

	switch *network {
	case "tcp", "tcp4", "tcp6", "http", "ws", "wss":
	case "unix":
		_ = os.Remove(*addr) // stale socket from an earlier run
	default:
		fatalf("unsupported -network %q", *network)
	}

	var opts []server.OptionFn
	if *certFile != "" || *keyFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			fatalf("load -cert/-key: %v", err)
		}
		opts = append(opts, server.WithTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}))
	}
	s := server.NewServer(opts...)
	if err := services.Register(s, *auth); err != nil {
		fatalf("%v", err)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve(*network, *addr) }()

	// Serve("http"), Serve("ws") and Serve("wss") (rpcx over HTTP CONNECT or
	// WebSocket only) never close Started: wait for the listener instead.
	started := s.Started
	if *network == "http" || *network == "ws" || *network == "wss" {
		ch := make(chan struct{})
		go func() {
			for s.Address() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			close(ch)
		}()
		started = ch
	}
	select {
	case <-started:
	case err := <-serveErr:
		fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		fatalf("listener did not start within 10s")
	}
	a := s.Address()
	if a == nil {
		fatalf("server started without an address")
	}
	// os.Stdout is unbuffered in Go: the line is flushed by this write.
	if _, err := fmt.Fprintf(os.Stdout, "LISTENING %s\n", a.String()); err != nil {
		fatalf("write stdout: %v", err)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
		_ = s.Close()
		if *network == "unix" {
			_ = os.Remove(*addr)
		}
		os.Exit(0)
	case err := <-serveErr:
		if errors.Is(err, server.ErrServerClosed) {
			os.Exit(0)
		}
		fatalf("serve: %v", err)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "server: "+format+"\n", args...)
	os.Exit(1)
}

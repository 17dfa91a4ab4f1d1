// Command consul is the Go side of the Consul registry interop tests, through Go's own
// rpcx-consul plugin and discovery (github.com/rpcxio/rpcx-consul, libkv's Consul store
// and hashicorp/consul/api). The tests run it against the in-repo Consul stand-in
// (rpcx_registry::consul::testing::ConsulStandIn), as no Consul server is installable.
//
//	consul server -consul HOST:PORT [-base /rpcx_test] [-meta "group=a&weight=3"] [-update 10s]
//	    Serves Arith (services.Arith) on 127.0.0.1:<free port>, registered through
//	    serverplugin.ConsulRegisterPlugin; prints "REGISTERED tcp@127.0.0.1:<port>"
//	    once registered and serves until killed or stdin closes (then Shutdown, which
//	    unregisters, and exits). libkv's session TTL is (update + update) / 2, which
//	    Consul requires to be at least 10 s.
//	consul client -consul HOST:PORT [-base /rpcx_test] [-service Arith] [-calls 10] [-want 1]
//	    Finds the servers with client.NewConsulDiscovery, waits (up to 20 s) until it
//	    lists -want of them, and calls Arith.Mul {A:i,B:7} through an XClient; prints
//	    "LISTED <n>" after the first listing, "SERVERS <n>", "META <key> <metadata>"
//	    per server, then "OK <calls>" and exits 0, or exits 1 with the error.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"os"
	"time"

	consulclient "github.com/rpcxio/rpcx-consul/client"
	"github.com/rpcxio/rpcx-consul/serverplugin"
	"github.com/smallnest/rpcx/client"
	rpcxlog "github.com/smallnest/rpcx/log"
	"github.com/smallnest/rpcx/server"

	"rpcxinterop/services"
)

func main() {
	if len(os.Args) < 2 {
		fatalf("usage: consul server|client [flags]")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	addr := fs.String("consul", "", "Consul HTTP address (host:port)")
	base := fs.String("base", "/rpcx_test", "BasePath")
	meta := fs.String("meta", "", "service metadata (server)")
	update := fs.Duration("update", 10*time.Second, "UpdateInterval (server)")
	service := fs.String("service", "Arith", "service path (client)")
	calls := fs.Int("calls", 10, "calls to make (client)")
	want := fs.Int("want", 1, "servers to wait for (client)")
	_ = fs.Parse(os.Args[2:])
	if *addr == "" {
		fatalf("-consul is required")
	}
	rpcxlog.SetLogger(rpcxlog.NewDefaultLogger(os.Stderr, "", stdlog.LstdFlags|stdlog.Lmicroseconds, rpcxlog.LvError))
	switch mode {
	case "server":
		runServer(*addr, *base, *meta, *update)
	case "client":
		runClient(*addr, *base, *service, *calls, *want)
	default:
		fatalf("unknown mode %q", mode)
	}
}

func runServer(consul, base, meta string, update time.Duration) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("pick a port: %v", err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	s := server.NewServer()
	r := &serverplugin.ConsulRegisterPlugin{
		ServiceAddress: "tcp@" + addr,
		ConsulServers:  []string{consul},
		BasePath:       base,
		UpdateInterval: update,
	}
	if err := r.Start(); err != nil {
		fatalf("consul plugin start: %v", err)
	}
	s.Plugins.Add(r)
	if err := s.RegisterName("Arith", new(services.Arith), meta); err != nil {
		fatalf("register: %v", err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve("tcp", addr) }()
	select {
	case <-s.Started:
	case err := <-serveErr:
		fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		fatalf("listener did not start within 10s")
	}
	fmt.Printf("REGISTERED tcp@%s\n", addr)
	// Serve until stdin closes (the test dropped us) or the process is killed.
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
}

func runClient(consul, base, service string, calls, want int) {
	d, err := consulclient.NewConsulDiscovery(base, service, []string{consul}, nil)
	if err != nil {
		fatalf("discovery: %v", err)
	}
	fmt.Printf("LISTED %d\n", len(d.GetServices()))
	deadline := time.Now().Add(20 * time.Second)
	for len(d.GetServices()) < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	pairs := d.GetServices()
	fmt.Printf("SERVERS %d\n", len(pairs))
	for _, p := range pairs {
		fmt.Printf("META %s %s\n", p.Key, p.Value)
	}
	xc := client.NewXClient(service, client.Failtry, client.RoundRobin, d, client.DefaultOption)
	defer xc.Close()
	for i := 0; i < calls; i++ {
		reply := &services.Reply{}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := xc.Call(ctx, "Mul", &services.Args{A: i, B: 7}, reply)
		cancel()
		if err != nil {
			fatalf("call %d: %v", i, err)
		}
		if reply.C != i*7 {
			fatalf("call %d: got C=%d, want %d", i, reply.C, i*7)
		}
	}
	fmt.Printf("OK %d\n", calls)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "consul: "+format+"\n", args...)
	os.Exit(1)
}

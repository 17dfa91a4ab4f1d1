// Command mdns is the Go side of the mDNS registry interop tests, through rpcx's own
// serverplugin.NewMDNSRegisterPlugin and client.NewMDNSDiscovery (grandcat/zeroconf).
// Run it only inside a network namespace (the tests do): it multicasts.
//
//	mdns server [-meta "group=a&weight=3"] [-update 1s]
//	    Serves Arith (services.Arith) on 127.0.0.1:<free port>, registered through
//	    NewMDNSRegisterPlugin (domain local.); prints "REGISTERED tcp@127.0.0.1:<port>"
//	    once registered and serves until killed or stdin closes (then Shutdown, and the
//	    plugin's Stop, which says goodbye, and exits).
//	mdns client [-service Arith] [-servers 1] [-calls 10] [-wait 20s]
//	    Browses with NewMDNSDiscovery until at least -servers servers are listed (at
//	    most -wait), then calls Arith.Mul {A:i,B:7} through an XClient; prints
//	    "SERVERS <n>" and "OK <calls>" and exits 0, or exits 1 with the error.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/smallnest/rpcx/client"
	rpcxlog "github.com/smallnest/rpcx/log"
	"github.com/smallnest/rpcx/server"
	"github.com/smallnest/rpcx/serverplugin"

	"rpcxinterop/services"
)

func main() {
	if len(os.Args) < 2 {
		fatalf("usage: mdns server|client [flags]")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	meta := fs.String("meta", "", "service metadata (server)")
	update := fs.Duration("update", time.Second, "UpdateInterval (server)")
	service := fs.String("service", "Arith", "service path (client)")
	servers := fs.Int("servers", 1, "servers to wait for (client)")
	calls := fs.Int("calls", 10, "calls to make (client)")
	wait := fs.Duration("wait", 20*time.Second, "how long to wait for the servers (client)")
	_ = fs.Parse(os.Args[2:])
	rpcxlog.SetLogger(rpcxlog.NewDefaultLogger(os.Stderr, "", stdlog.LstdFlags|stdlog.Lmicroseconds, rpcxlog.LvError))
	switch mode {
	case "server":
		runServer(*meta, *update)
	case "client":
		runClient(*service, *servers, *calls, *wait)
	default:
		fatalf("unknown mode %q", mode)
	}
}

func runServer(meta string, update time.Duration) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("pick a port: %v", err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	s := server.NewServer()
	r := serverplugin.NewMDNSRegisterPlugin("tcp@"+addr, port, nil, update, "")
	s.Plugins.Add(r)
	// Register before Start: Start with no service defers Shutdown on a nil server.
	if err := s.RegisterName("Arith", new(services.Arith), meta); err != nil {
		fatalf("register: %v", err)
	}
	if err := r.Start(); err != nil {
		fatalf("mdns plugin start: %v", err)
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
	_ = r.Stop()
}

func runClient(service string, servers, calls int, wait time.Duration) {
	d, err := client.NewMDNSDiscovery(service, time.Second, time.Second, "")
	if err != nil {
		fatalf("discovery: %v", err)
	}
	deadline := time.Now().Add(wait)
	var keys []string
	for {
		keys = keys[:0]
		for _, p := range d.GetServices() {
			keys = append(keys, p.Key+" "+p.Value)
		}
		if len(keys) >= servers {
			break
		}
		if time.Now().After(deadline) {
			fatalf("found %d servers within %v, want %d: %v", len(keys), wait, servers, keys)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sort.Strings(keys)
	fmt.Printf("SERVERS %d\n", len(keys))
	fmt.Printf("KEYS %s\n", strings.Join(keys, ","))
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
	fmt.Fprintf(os.Stderr, "mdns: "+format+"\n", args...)
	os.Exit(1)
}

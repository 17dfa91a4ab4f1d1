// Package regcmd is what the registry interop commands (cmd/etcd, cmd/redis,
// cmd/zookeeper, cmd/consul) share: the flags, the server mode (Arith registered
// through Go's plugin) and the client mode (Go's discovery and an XClient). Each
// command only says how to build its plugin and its discovery.
//
//	NAME server -ADDR A [-base /rpcx_test] [-meta "group=a&weight=3"] [-update D]
//	    Serves Arith (services.Arith) on 127.0.0.1:<free port>, registered through the
//	    plugin; prints "REGISTERED tcp@127.0.0.1:<port>" once registered and serves
//	    until killed or stdin closes (then Shutdown, which unregisters, and exits).
//	NAME client -ADDR A [-base /rpcx_test] [-service Arith] [-calls 10] [-want 1]
//	    Finds the servers with the discovery; prints "LISTED <n>" after the first
//	    listing, waits (up to 20 s) until it lists -want of them, prints "SERVERS <n>"
//	    and "META <key> <metadata>" per server, calls Arith.Mul {A:i,B:7} through a
//	    Failtry XClient, prints "OK <calls>" and exits 0, or exits 1 with the error.
package regcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"os"
	"time"

	"github.com/smallnest/rpcx/client"
	rpcxlog "github.com/smallnest/rpcx/log"
	"github.com/smallnest/rpcx/server"

	"rpcxinterop/services"
)

// Starter is a register plugin: started before the server registers its services.
type Starter interface{ Start() error }

// Registry describes one registry command.
type Registry struct {
	// Name of the command ("etcd").
	Name string
	// AddrFlag names the flag giving the registry's address ("etcd"), AddrHelp says
	// what it takes.
	AddrFlag, AddrHelp string
	// DefaultUpdate is the server's UpdateInterval unless -update is given.
	DefaultUpdate time.Duration
	// Plugin builds the register plugin of the server at serviceAddress
	// ("tcp@127.0.0.1:<port>").
	Plugin func(addr, base, serviceAddress string, update time.Duration) Starter
	// Discovery builds the discovery of service.
	Discovery func(addr, base, service string) (client.ServiceDiscovery, error)
}

// Main runs the command with os.Args.
func Main(r Registry) {
	if len(os.Args) < 2 {
		r.fatalf("usage: %s server|client [flags]", r.Name)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	addr := fs.String(r.AddrFlag, "", r.AddrHelp)
	base := fs.String("base", "/rpcx_test", "BasePath")
	meta := fs.String("meta", "", "service metadata (server)")
	update := fs.Duration("update", r.DefaultUpdate, "UpdateInterval (server)")
	service := fs.String("service", "Arith", "service path (client)")
	calls := fs.Int("calls", 10, "calls to make (client)")
	want := fs.Int("want", 1, "servers to wait for (client)")
	_ = fs.Parse(os.Args[2:])
	if *addr == "" {
		r.fatalf("-%s is required", r.AddrFlag)
	}
	rpcxlog.SetLogger(rpcxlog.NewDefaultLogger(os.Stderr, "", stdlog.LstdFlags|stdlog.Lmicroseconds, rpcxlog.LvError))
	switch mode {
	case "server":
		r.serve(*addr, *base, *meta, *update)
	case "client":
		r.call(*addr, *base, *service, *calls, *want)
	default:
		r.fatalf("unknown mode %q", mode)
	}
}

func (r Registry) serve(addr, base, meta string, update time.Duration) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.fatalf("pick a port: %v", err)
	}
	listen := l.Addr().String()
	_ = l.Close()

	s := server.NewServer()
	p := r.Plugin(addr, base, "tcp@"+listen, update)
	if err := p.Start(); err != nil {
		r.fatalf("%s plugin start: %v", r.Name, err)
	}
	s.Plugins.Add(p)
	if err := s.RegisterName("Arith", new(services.Arith), meta); err != nil {
		r.fatalf("register: %v", err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve("tcp", listen) }()
	select {
	case <-s.Started:
	case err := <-serveErr:
		r.fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		r.fatalf("listener did not start within 10s")
	}
	fmt.Printf("REGISTERED tcp@%s\n", listen)
	// Serve until stdin closes (the test dropped us) or the process is killed.
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
}

func (r Registry) call(addr, base, service string, calls, want int) {
	d, err := r.Discovery(addr, base, service)
	if err != nil {
		r.fatalf("discovery: %v", err)
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
			r.fatalf("call %d: %v", i, err)
		}
		if reply.C != i*7 {
			r.fatalf("call %d: got C=%d, want %d", i, reply.C, i*7)
		}
	}
	fmt.Printf("OK %d\n", calls)
}

func (r Registry) fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, r.Name+": "+format+"\n", args...)
	os.Exit(1)
}

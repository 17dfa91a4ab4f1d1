// Command zookeeper is the Go side of the ZooKeeper registry interop tests, through
// Go's own rpcx-zookeeper plugin and discovery (github.com/rpcxio/rpcx-zookeeper).
//
//	zookeeper server -zk 127.0.0.1:2181 [-base /rpcx_test] [-meta "group=a"] [-update 1s]
//	    Serves Arith (services.Arith) on 127.0.0.1:<free port>, registered through
//	    serverplugin.ZooKeeperRegisterPlugin; prints "REGISTERED tcp@127.0.0.1:<port>"
//	    once registered and serves until killed or stdin closes (then Shutdown, which
//	    unregisters, and exits).
//	zookeeper client -zk 127.0.0.1:2181 [-base /rpcx_test] [-service Arith] [-calls 10]
//	    Finds the servers with client.NewZookeeperDiscovery and calls Arith.Mul {A:i,B:7}
//	    through an XClient; prints "SERVERS <n>" and then "OK <calls>" and exits 0,
//	    or exits 1 with the error.
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

	zkclient "github.com/rpcxio/rpcx-zookeeper/client"
	"github.com/rpcxio/rpcx-zookeeper/serverplugin"
	"github.com/smallnest/rpcx/client"
	rpcxlog "github.com/smallnest/rpcx/log"
	"github.com/smallnest/rpcx/server"

	"rpcxinterop/services"
)

func main() {
	if len(os.Args) < 2 {
		fatalf("usage: zookeeper server|client [flags]")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	zk := fs.String("zk", "", "ZooKeeper address host:port")
	base := fs.String("base", "/rpcx_test", "BasePath")
	meta := fs.String("meta", "", "service metadata (server)")
	update := fs.Duration("update", time.Second, "UpdateInterval (server)")
	service := fs.String("service", "Arith", "service path (client)")
	calls := fs.Int("calls", 10, "calls to make (client)")
	_ = fs.Parse(os.Args[2:])
	if *zk == "" {
		fatalf("-zk is required")
	}
	rpcxlog.SetLogger(rpcxlog.NewDefaultLogger(os.Stderr, "", stdlog.LstdFlags|stdlog.Lmicroseconds, rpcxlog.LvError))
	switch mode {
	case "server":
		runServer(*zk, *base, *meta, *update)
	case "client":
		runClient(*zk, *base, *service, *calls)
	default:
		fatalf("unknown mode %q", mode)
	}
}

func runServer(zk, base, meta string, update time.Duration) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("pick a port: %v", err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	s := server.NewServer()
	r := &serverplugin.ZooKeeperRegisterPlugin{
		ServiceAddress:   "tcp@" + addr,
		ZooKeeperServers: []string{zk},
		BasePath:         base,
		UpdateInterval:   update,
	}
	if err := r.Start(); err != nil {
		fatalf("zookeeper plugin start: %v", err)
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

func runClient(zk, base, service string, calls int) {
	d, err := zkclient.NewZookeeperDiscovery(base, service, []string{zk}, nil)
	if err != nil {
		fatalf("discovery: %v", err)
	}
	fmt.Printf("SERVERS %d\n", len(d.GetServices()))
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
	fmt.Fprintf(os.Stderr, "zookeeper: "+format+"\n", args...)
	os.Exit(1)
}

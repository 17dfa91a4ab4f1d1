// Command dns is the Go side of the DNS discovery interop tests: Go's in-tree
// client.NewDNSDiscovery (A/AAAA lookups of one name, one port) and an XClient.
//
//	dns client -name NAME -port PORT [-network tcp] [-calls 10]
//	    Looks NAME up with client.NewDNSDiscovery, prints "SERVERS <key> <key>...",
//	    calls Arith.Mul {A:i,B:7} through a Failover XClient (a name may resolve to
//	    an address nobody serves, e.g. ::1, whose key Go does not bracket), prints
//	    "OK <calls>" and exits 0, or exits 1 with the error.
package main

import (
	"context"
	"flag"
	"fmt"
	stdlog "log"
	"os"
	"strings"
	"time"

	"github.com/smallnest/rpcx/client"
	rpcxlog "github.com/smallnest/rpcx/log"

	"rpcxinterop/services"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "client" {
		fatalf("usage: dns client -name NAME -port PORT [-network tcp] [-calls N]")
	}
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	name := fs.String("name", "", "the name to look up")
	port := fs.Int("port", 0, "the servers' port")
	network := fs.String("network", "tcp", "the network in the keys")
	calls := fs.Int("calls", 10, "calls to make")
	_ = fs.Parse(os.Args[2:])
	if *name == "" || *port == 0 {
		fatalf("-name and -port are required")
	}
	rpcxlog.SetLogger(rpcxlog.NewDefaultLogger(os.Stderr, "", stdlog.LstdFlags|stdlog.Lmicroseconds, rpcxlog.LvError))
	d, err := client.NewDNSDiscovery(*name, *network, *port, time.Minute)
	if err != nil {
		fatalf("discovery: %v", err)
	}
	var keys []string
	for _, kv := range d.GetServices() {
		keys = append(keys, kv.Key)
	}
	fmt.Printf("SERVERS %s\n", strings.Join(keys, " "))
	if len(keys) == 0 {
		fatalf("%s resolved to no server", *name)
	}
	xc := client.NewXClient("Arith", client.Failover, client.RoundRobin, d, client.DefaultOption)
	defer xc.Close()
	for i := 0; i < *calls; i++ {
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
	fmt.Printf("OK %d\n", *calls)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "dns: "+format+"\n", args...)
	os.Exit(1)
}

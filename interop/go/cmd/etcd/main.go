// Command etcd is the Go side of the etcd registry interop tests, through Go's own
// rpcx-etcd plugin and discovery (github.com/rpcxio/rpcx-etcd). Modes and flags:
// package rpcxinterop/regcmd (the address flag is -etcd ENDPOINT).
package main

import (
	"time"

	etcdclient "github.com/rpcxio/rpcx-etcd/client"
	"github.com/rpcxio/rpcx-etcd/serverplugin"
	"github.com/smallnest/rpcx/client"

	"rpcxinterop/regcmd"
)

func main() {
	regcmd.Main(regcmd.Registry{
		Name:          "etcd",
		AddrFlag:      "etcd",
		AddrHelp:      "etcd endpoint (host:port or http://host:port)",
		DefaultUpdate: time.Second,
		Plugin: func(addr, base, serviceAddress string, update time.Duration) regcmd.Starter {
			return &serverplugin.EtcdV3RegisterPlugin{ServiceAddress: serviceAddress, EtcdServers: []string{addr}, BasePath: base, UpdateInterval: update}
		},
		Discovery: func(addr, base, service string) (client.ServiceDiscovery, error) {
			return etcdclient.NewEtcdV3Discovery(base, service, []string{addr}, false, nil)
		},
	})
}

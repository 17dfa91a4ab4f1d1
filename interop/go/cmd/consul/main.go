// Command consul is the Go side of the Consul registry interop tests, through Go's own
// rpcx-consul plugin and discovery (github.com/rpcxio/rpcx-consul, libkv's Consul store
// and hashicorp/consul/api). The tests run it against the in-repo Consul stand-in
// (rpcx_registry::consul::testing::ConsulStandIn), as no Consul server is installable.
// Modes and flags: package rpcxinterop/regcmd (the address flag is -consul HOST:PORT).
// libkv's session TTL is (update + update) / 2, which Consul requires to be at least
// 10 s: the default -update is 10 s.
package main

import (
	"time"

	consulclient "github.com/rpcxio/rpcx-consul/client"
	"github.com/rpcxio/rpcx-consul/serverplugin"
	"github.com/smallnest/rpcx/client"

	"rpcxinterop/regcmd"
)

func main() {
	regcmd.Main(regcmd.Registry{
		Name:          "consul",
		AddrFlag:      "consul",
		AddrHelp:      "Consul HTTP address (host:port)",
		DefaultUpdate: 10 * time.Second,
		Plugin: func(addr, base, serviceAddress string, update time.Duration) regcmd.Starter {
			return &serverplugin.ConsulRegisterPlugin{ServiceAddress: serviceAddress, ConsulServers: []string{addr}, BasePath: base, UpdateInterval: update}
		},
		Discovery: func(addr, base, service string) (client.ServiceDiscovery, error) {
			return consulclient.NewConsulDiscovery(base, service, []string{addr}, nil)
		},
	})
}

// Command zookeeper is the Go side of the ZooKeeper registry interop tests, through
// Go's own rpcx-zookeeper plugin and discovery (github.com/rpcxio/rpcx-zookeeper).
// Modes and flags: package rpcxinterop/regcmd (the address flag is -zk HOST:PORT).
package main

import (
	"time"

	zkclient "github.com/rpcxio/rpcx-zookeeper/client"
	"github.com/rpcxio/rpcx-zookeeper/serverplugin"
	"github.com/smallnest/rpcx/client"

	"rpcxinterop/regcmd"
)

func main() {
	regcmd.Main(regcmd.Registry{
		Name:          "zookeeper",
		AddrFlag:      "zk",
		AddrHelp:      "ZooKeeper address host:port",
		DefaultUpdate: time.Second,
		Plugin: func(addr, base, serviceAddress string, update time.Duration) regcmd.Starter {
			return &serverplugin.ZooKeeperRegisterPlugin{ServiceAddress: serviceAddress, ZooKeeperServers: []string{addr}, BasePath: base, UpdateInterval: update}
		},
		Discovery: func(addr, base, service string) (client.ServiceDiscovery, error) {
			return zkclient.NewZookeeperDiscovery(base, service, []string{addr}, nil)
		},
	})
}

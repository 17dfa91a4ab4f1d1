// Command redis is the Go side of the Redis registry interop tests: the server
// registers through rpcx's in-tree serverplugin.RedisRegisterPlugin (libkv's Redis
// store), the client discovers through github.com/rpcxio/rpcx-redis. Modes and flags:
// package rpcxinterop/regcmd (the address flag is -redis HOST:PORT).
package main

import (
	"time"

	redisclient "github.com/rpcxio/rpcx-redis/client"
	"github.com/smallnest/rpcx/client"
	"github.com/smallnest/rpcx/serverplugin"

	"rpcxinterop/regcmd"
)

func main() {
	regcmd.Main(regcmd.Registry{
		Name:          "redis",
		AddrFlag:      "redis",
		AddrHelp:      "Redis address host:port",
		DefaultUpdate: time.Second,
		Plugin: func(addr, base, serviceAddress string, update time.Duration) regcmd.Starter {
			return &serverplugin.RedisRegisterPlugin{ServiceAddress: serviceAddress, RedisServers: []string{addr}, BasePath: base, UpdateInterval: update}
		},
		Discovery: func(addr, base, service string) (client.ServiceDiscovery, error) {
			return redisclient.NewRedisDiscovery(base, service, []string{addr}, nil)
		},
	})
}

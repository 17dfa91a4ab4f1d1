module rpcxinterop

go 1.26.8

require google.golang.org/protobuf v1.36.4

require github.com/smallnest/rpcx v1.9.4 // indirect

// Package services holds the argument/reply types and the service
// implementations shared by the interop server (and the types used by the
// client driver). The contract is documented in ../README.md; a Rust server
// implements exactly the same services.
package services

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/smallnest/rpcx/protocol"
	"github.com/smallnest/rpcx/server"
	"github.com/smallnest/rpcx/serverplugin"
	"github.com/smallnest/rpcx/share"

	arithpb "rpcxinterop/proto"
)

// Args is the request type of Arith.*, Echo.Meta, Echo.Deadline, Push.Me and
// Stats.Heartbeats. msgpack/JSON encode it by Go field name: {"A":..,"B":..}.
type Args struct {
	A int
	B int
}

// Reply is the reply type of the same methods: {"C":..}.
type Reply struct {
	C int
}

// Exact error texts of the contract.
const (
	ErrSlowContextDone = "slow: context done"
	ErrAuthFailed      = "auth failed"
)

// ErrorText returns the exact text Arith.Error replies with.
func ErrorText(a int) string { return fmt.Sprintf("intentional error A=%d", a) }

// MaxPushes bounds Push.Me so a bogus argument cannot flood a connection.
const MaxPushes = 1000

// Arith implements Mul, Add, Error and Slow.
type Arith struct{}

// Mul returns C = A*B.
func (*Arith) Mul(_ context.Context, args *Args, reply *Reply) error {
	reply.C = args.A * args.B
	return nil
}

// Add returns C = A+B.
func (*Arith) Add(_ context.Context, args *Args, reply *Reply) error {
	reply.C = args.A + args.B
	return nil
}

// Error always fails with "intentional error A=<A>".
func (*Arith) Error(_ context.Context, args *Args, _ *Reply) error {
	return errors.New(ErrorText(args.A))
}

// Slow waits A milliseconds (C = A) unless the handler context ends first,
// in which case it fails with "slow: context done".
func (*Arith) Slow(ctx context.Context, args *Args, reply *Reply) error {
	t := time.NewTimer(time.Duration(args.A) * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return errors.New(ErrSlowContextDone)
	case <-t.C:
		reply.C = args.A
		return nil
	}
}

// ProtoArith is Arith for SerializeType ProtoBuffer.
type ProtoArith struct{}

// Mul returns C = A*B.
func (*ProtoArith) Mul(_ context.Context, args *arithpb.ProtoArgs, reply *arithpb.ProtoReply) error {
	reply.C = args.A * args.B
	return nil
}

// Echo implements Meta, Raw and Deadline.
type Echo struct{}

// Meta returns C = A+B and copies every request metadata pair whose key does
// not start with "__" into the response metadata.
func (*Echo) Meta(ctx context.Context, args *Args, reply *Reply) error {
	req, _ := ctx.Value(share.ReqMetaDataKey).(map[string]string)
	res, _ := ctx.Value(share.ResMetaDataKey).(map[string]string)
	if res == nil {
		return errors.New("echo: no response metadata map in context")
	}
	for k, v := range req {
		if !strings.HasPrefix(k, "__") {
			res[k] = v
		}
	}
	reply.C = args.A + args.B
	return nil
}

// Raw returns the request payload unchanged (SerializeNone).
func (*Echo) Raw(_ context.Context, args *[]byte, reply *[]byte) error {
	*reply = *args
	return nil
}

// Deadline returns the handler context's remaining time in milliseconds
// (time.Until(deadline).Milliseconds()), or -1 without a deadline. With the
// Go server the deadline comes from the __ServerTimeout request metadata.
func (*Echo) Deadline(ctx context.Context, _ *Args, reply *Reply) error {
	if dl, ok := ctx.Deadline(); ok {
		reply.C = int(time.Until(dl).Milliseconds())
	} else {
		reply.C = -1
	}
	return nil
}

// Push implements Me, which sends server-push messages to the caller.
type Push struct {
	Server *server.Server
}

// Me sends A pushes Push.Note with metadata {"i": "<k>"} and payload
// "push-<k>" for k = 1..A on the calling connection, then returns C = A.
func (p *Push) Me(ctx context.Context, args *Args, reply *Reply) error {
	n := args.A
	if n < 0 || n > MaxPushes {
		return fmt.Errorf("push: count %d out of range [0, %d]", n, MaxPushes)
	}
	conn, ok := ctx.Value(server.RemoteConnContextKey).(net.Conn)
	if !ok || conn == nil {
		return errors.New("push: no connection in context")
	}
	for k := 1; k <= n; k++ {
		ks := strconv.Itoa(k)
		if err := p.Server.SendMessage(conn, "Push", "Note", map[string]string{"i": ks}, []byte("push-"+ks)); err != nil {
			return fmt.Errorf("push: send %d: %v", k, err)
		}
	}
	reply.C = n
	return nil
}

// HeartbeatCounter is a server HeartbeatPlugin counting heartbeat requests.
type HeartbeatCounter struct {
	n atomic.Int64
}

// HeartbeatRequest implements server.HeartbeatPlugin.
func (h *HeartbeatCounter) HeartbeatRequest(_ context.Context, _ *protocol.Message) error {
	h.n.Add(1)
	return nil
}

// Count returns the number of heartbeats seen so far.
func (h *HeartbeatCounter) Count() int64 { return h.n.Load() }

// Stats implements Heartbeats.
type Stats struct {
	Counter *HeartbeatCounter
}

// Heartbeats returns C = number of heartbeat requests the server received
// so far (all connections).
func (s *Stats) Heartbeats(_ context.Context, _ *Args, reply *Reply) error {
	reply.C = int(s.Counter.Count())
	return nil
}

// Register installs every contract service (and the heartbeat counter) on s.
// If authToken is non-empty, an AuthFunc is installed that only accepts
// requests whose __AUTH metadata equals authToken.
func Register(s *server.Server, authToken string) error {
	counter := &HeartbeatCounter{}
	s.Plugins.Add(counter)
	alias := serverplugin.NewAliasPlugin()
	alias.Alias("a.b.c.d", "Times", "Arith", "Mul")
	s.Plugins.Add(alias)
	regs := []struct {
		name string
		rcvr any
	}{
		{"Arith", new(Arith)},
		{"ProtoArith", new(ProtoArith)},
		{"Echo", new(Echo)},
		{"Push", &Push{Server: s}},
		{"Stats", &Stats{Counter: counter}},
	}
	for _, r := range regs {
		if err := s.RegisterName(r.name, r.rcvr, ""); err != nil {
			return fmt.Errorf("register %s: %w", r.name, err)
		}
	}
	if authToken != "" {
		s.AuthFunc = func(_ context.Context, _ *protocol.Message, token string) error {
			if token == authToken {
				return nil
			}
			return errors.New(ErrAuthFailed)
		}
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smallnest/rpcx/client"
	"github.com/smallnest/rpcx/protocol"
	"github.com/smallnest/rpcx/share"

	arithpb "rpcxinterop/proto"
	"rpcxinterop/services"
)

// mulOnce calls Arith.Mul {10,20} through an XClient with serialize type st.
func mulOnce(cfg *config, st protocol.SerializeType) error {
	xc, err := newXClient(cfg, "Arith", option(st))
	if err != nil {
		return err
	}
	defer xc.Close()
	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	var reply services.Reply
	if err := xc.Call(ctx, "Mul", &services.Args{A: 10, B: 20}, &reply); err != nil {
		return fmt.Errorf("Arith.Mul: %w", err)
	}
	if reply.C != 200 {
		return fmt.Errorf("Arith.Mul {10,20}: C=%d, want 200", reply.C)
	}
	return nil
}

// scenAlias calls Arith.Mul by its alias a.b.c.d.Times (the servers install an
// alias plugin: Go's AliasPlugin, Rust's service::Alias).
func scenAlias(cfg *config) error {
	xc, err := newXClient(cfg, "a.b.c.d", option(protocol.MsgPack))
	if err != nil {
		return err
	}
	defer xc.Close()
	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	var reply services.Reply
	if err := xc.Call(ctx, "Times", &services.Args{A: 7, B: 8}, &reply); err != nil {
		return fmt.Errorf("a.b.c.d.Times: %w", err)
	}
	if reply.C != 56 {
		return fmt.Errorf("a.b.c.d.Times {7,8}: C=%d, want 56", reply.C)
	}
	return nil
}

func scenJSON(cfg *config) error    { return mulOnce(cfg, protocol.JSON) }
func scenMsgpack(cfg *config) error { return mulOnce(cfg, protocol.MsgPack) }

func scenProtobuf(cfg *config) error {
	xc, err := newXClient(cfg, "ProtoArith", option(protocol.ProtoBuffer))
	if err != nil {
		return err
	}
	defer xc.Close()
	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	var reply arithpb.ProtoReply
	if err := xc.Call(ctx, "Mul", &arithpb.ProtoArgs{A: 10, B: 20}, &reply); err != nil {
		return fmt.Errorf("ProtoArith.Mul: %w", err)
	}
	if reply.C != 200 {
		return fmt.Errorf("ProtoArith.Mul {10,20}: C=%d, want 200", reply.C)
	}
	return nil
}

func scenRaw(cfg *config) error {
	xc, err := newXClient(cfg, "Echo", option(protocol.SerializeNone))
	if err != nil {
		return err
	}
	defer xc.Close()
	payload := []byte("raw bytes \x00\x01\x02\xff\xfe through Echo.Raw ")
	for i := 0; i < 256; i++ {
		payload = append(payload, byte(i))
	}
	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	var reply []byte
	if err := xc.Call(ctx, "Raw", payload, &reply); err != nil {
		return fmt.Errorf("Echo.Raw: %w", err)
	}
	return diffBytes(reply, payload)
}

// gzipEcho sends n bytes through Echo.Raw with CompressType Gzip on a bare
// client and checks the echo and the compress flag of both wire frames.
func gzipEcho(cfg *config, n int) error {
	rec := &recorder{}
	opt := option(protocol.SerializeNone)
	opt.CompressType = protocol.Gzip
	c, err := dial(cfg, opt, rec)
	if err != nil {
		return err
	}
	defer c.Close()
	payload := pattern(n)
	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	var reply []byte
	if err := c.Call(ctx, "Echo", "Raw", payload, &reply); err != nil {
		return fmt.Errorf("Echo.Raw: %w", err)
	}
	if err := diffBytes(reply, payload); err != nil {
		return err
	}
	req, res, err := rec.responseTo("Echo", "Raw")
	if err != nil {
		return err
	}
	want := protocol.None
	if n > 1024 {
		want = protocol.Gzip
	}
	if req.compress != want {
		return fmt.Errorf("request compress type %d, want %d", req.compress, want)
	}
	if res.compress != want {
		return fmt.Errorf("response compress type %d, want %d (server must compress iff payload > 1024 bytes and the request was compressed)", res.compress, want)
	}
	return nil
}

func scenGzipSmall(cfg *config) error { return gzipEcho(cfg, 100) }
func scenGzipLarge(cfg *config) error { return gzipEcho(cfg, 5000) }

func scenMetadata(cfg *config) error {
	xc, err := newXClient(cfg, "Echo", option(protocol.MsgPack))
	if err != nil {
		return err
	}
	defer xc.Close()
	reqMeta := map[string]string{"k1": "v1", "k2": "v2"}
	resMeta := map[string]string{}
	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, share.ReqMetaDataKey, reqMeta)
	ctx = context.WithValue(ctx, share.ResMetaDataKey, resMeta)
	var reply services.Reply
	if err := xc.Call(ctx, "Meta", &services.Args{A: 3, B: 4}, &reply); err != nil {
		return fmt.Errorf("Echo.Meta: %w", err)
	}
	if reply.C != 7 {
		return fmt.Errorf("Echo.Meta {3,4}: C=%d, want 7", reply.C)
	}
	// __ServerAddress is added locally by the Go client, never on the wire.
	got := maps.Clone(resMeta)
	delete(got, share.ServerAddress)
	want := map[string]string{"k1": "v1", "k2": "v2"}
	if !maps.Equal(got, want) {
		return fmt.Errorf("response metadata %v, want %v (+ client-local %s)", got, want, share.ServerAddress)
	}
	return nil
}

// errorCall calls servicePath.method with Args{7,0} through an XClient and
// expects a service error with exactly the text want.
func errorCall(cfg *config, servicePath, method, want string) error {
	xc, err := newXClient(cfg, servicePath, option(protocol.MsgPack))
	if err != nil {
		return err
	}
	defer xc.Close()
	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	var reply services.Reply
	err = xc.Call(ctx, method, &services.Args{A: 7}, &reply)
	if e := expectServiceError(err, want); e != nil {
		return fmt.Errorf("%s.%s: %w", servicePath, method, e)
	}
	return nil
}

func scenError(cfg *config) error {
	return errorCall(cfg, "Arith", "Error", services.ErrorText(7))
}

func scenUnknownService(cfg *config) error {
	return errorCall(cfg, "Nope", "Mul", "rpcx: can't find service Nope")
}

func scenUnknownMethod(cfg *config) error {
	return errorCall(cfg, "Arith", "Nope", "rpcx: can't find method Nope")
}

func scenOneway(cfg *config) error {
	xc, err := newXClient(cfg, "Arith", option(protocol.MsgPack))
	if err != nil {
		return err
	}
	defer xc.Close()
	rec := &recorder{}
	xc.GetPlugins().Add(rec)

	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	if err := xc.Oneshot(ctx, "Mul", &services.Args{A: 2, B: 3}); err != nil {
		return fmt.Errorf("Oneshot Arith.Mul: %w", err)
	}
	time.Sleep(300 * time.Millisecond) // let a (wrong) response to the oneway arrive
	var reply services.Reply
	if err := xc.Call(ctx, "Mul", &services.Args{A: 6, B: 7}, &reply); err != nil {
		return fmt.Errorf("Arith.Mul after oneway: %w", err)
	}
	if reply.C != 42 {
		return fmt.Errorf("Arith.Mul {6,7} after oneway: C=%d, want 42", reply.C)
	}
	time.Sleep(100 * time.Millisecond)
	sent, recv := rec.frames()
	var oneways []uint64
	for _, f := range sent {
		if f.oneway {
			oneways = append(oneways, f.seq)
		}
	}
	if len(oneways) != 1 {
		return fmt.Errorf("expected 1 oneway request on the wire, recorded %d", len(oneways))
	}
	for _, f := range recv {
		if f.seq == oneways[0] {
			return fmt.Errorf("server answered the oneway request (seq %d, status %d, meta %v)", f.seq, f.status, f.meta)
		}
	}
	if len(recv) != 1 {
		return fmt.Errorf("received %d frames, want exactly 1 (the reply to the normal call)", len(recv))
	}
	return nil
}

// heartbeatCount calls Stats.Heartbeats on c.
func heartbeatCount(c *client.Client) (int, error) {
	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	var reply services.Reply
	if err := c.Call(ctx, "Stats", "Heartbeats", &services.Args{}, &reply); err != nil {
		return 0, fmt.Errorf("Stats.Heartbeats: %w", err)
	}
	return reply.C, nil
}

func scenHeartbeat(cfg *config) error {
	idle := cfg.duration
	if idle <= 0 {
		idle = 2 * time.Second
	}
	rec := &recorder{}
	opt := option(protocol.MsgPack)
	opt.Heartbeat = true
	opt.HeartbeatInterval = 200 * time.Millisecond
	c, err := dial(cfg, opt, rec)
	if err != nil {
		return err
	}
	defer c.Close()
	before, err := heartbeatCount(c)
	if err != nil {
		return err
	}
	time.Sleep(idle)
	if c.IsShutdown() || c.IsClosing() {
		return fmt.Errorf("client shut down while idle with heartbeats (shutdown=%v closing=%v)", c.IsShutdown(), c.IsClosing())
	}
	after, err := heartbeatCount(c)
	if err != nil {
		return fmt.Errorf("after idle: %w", err)
	}
	if after < 5 || after-before < 5 {
		return fmt.Errorf("server counted %d heartbeats (%d during the %s idle), want >= 5", after, after-before, idle)
	}
	// Every heartbeat reply must echo the request: same seq, heartbeat bit,
	// Response type, empty path/method, identical payload.
	sent, recv := rec.frames()
	hb := map[uint64]frame{}
	for _, f := range sent {
		if f.heartbeat {
			hb[f.seq] = f
		}
	}
	echoed := 0
	for _, f := range recv {
		if !f.heartbeat {
			continue
		}
		s, ok := hb[f.seq]
		switch {
		case !ok:
			return fmt.Errorf("heartbeat reply with unknown seq %d", f.seq)
		case f.typ != protocol.Response:
			return fmt.Errorf("heartbeat reply seq %d: message type %d, want Response", f.seq, f.typ)
		case f.path != "" || f.method != "":
			return fmt.Errorf("heartbeat reply seq %d: path/method %q/%q, want empty", f.seq, f.path, f.method)
		case string(f.payload) != string(s.payload):
			return fmt.Errorf("heartbeat reply seq %d: payload %x, want echo %x", f.seq, f.payload, s.payload)
		}
		echoed++
	}
	if echoed < 5 {
		return fmt.Errorf("client got %d heartbeat replies (sent %d), want >= 5", echoed, len(hb))
	}
	info("heartbeat server_count=%d during_idle=%d client_sent=%d client_echoed=%d", after, after-before, len(hb), echoed)
	return nil
}

func scenAuthOK(cfg *config) error {
	if cfg.auth == "" {
		return errors.New("auth_ok needs -auth TOKEN (the server's -auth token)")
	}
	xc, err := newXClient(cfg, "Arith", option(protocol.MsgPack))
	if err != nil {
		return err
	}
	defer xc.Close()
	xc.Auth(cfg.auth)
	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	var reply services.Reply
	if err := xc.Call(ctx, "Mul", &services.Args{A: 10, B: 20}, &reply); err != nil {
		return fmt.Errorf("Arith.Mul with token: %w", err)
	}
	if reply.C != 200 {
		return fmt.Errorf("Arith.Mul {10,20}: C=%d, want 200", reply.C)
	}
	return nil
}

func scenAuthFail(cfg *config) error {
	c, err := dial(cfg, option(protocol.MsgPack))
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := callCtx(defaultCallTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, share.ReqMetaDataKey, map[string]string{share.AuthKey: "wrong-token"})
	var reply services.Reply
	err = c.Call(ctx, "Arith", "Mul", &services.Args{A: 10, B: 20}, &reply)
	if err == nil {
		return errors.New("call with token wrong-token succeeded")
	}
	if !strings.Contains(err.Error(), services.ErrAuthFailed) {
		return fmt.Errorf("error %q does not contain %q", err.Error(), services.ErrAuthFailed)
	}
	// The server must close the connection after an auth failure: the Go
	// client's read loop then hits EOF and marks the client shut down.
	deadline := time.Now().Add(3 * time.Second)
	for !c.IsShutdown() {
		if time.Now().After(deadline) {
			return errors.New("connection still open 3s after the auth failure (client.IsShutdown() stayed false)")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx2, cancel2 := callCtx(defaultCallTimeout)
	defer cancel2()
	err2 := c.Call(ctx2, "Arith", "Mul", &services.Args{A: 1, B: 2}, &reply)
	if err2 == nil {
		return errors.New("second call on the closed connection succeeded")
	}
	info("auth_fail first_error=%q second_error=%q", err.Error(), err2.Error())
	return nil
}

func scenDeadline(cfg *config) error {
	xc, err := newXClient(cfg, "Echo", option(protocol.MsgPack))
	if err != nil {
		return err
	}
	defer xc.Close()
	ctx, cancel := callCtx(3 * time.Second)
	defer cancel()
	var reply services.Reply
	if err := xc.Call(ctx, "Deadline", &services.Args{}, &reply); err != nil {
		return fmt.Errorf("Echo.Deadline: %w", err)
	}
	if reply.C <= 2000 || reply.C > 3000 {
		return fmt.Errorf("Echo.Deadline with a 3s context: C=%d, want in (2000, 3000]", reply.C)
	}
	info("deadline remaining_ms=%d", reply.C)
	return nil
}

func scenPush(cfg *config) error {
	const n = 3
	ch := make(chan *protocol.Message, 64)
	c := client.NewClient(option(protocol.MsgPack))
	c.RegisterServerMessageChan(ch)
	if err := c.Connect(cfg.network, cfg.addr); err != nil {
		return fmt.Errorf("connect %s@%s: %w", cfg.network, cfg.addr, err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var reply services.Reply
	if err := c.Call(ctx, "Push", "Me", &services.Args{A: n}, &reply); err != nil {
		return fmt.Errorf("Push.Me: %w", err)
	}
	if reply.C != n {
		return fmt.Errorf("Push.Me {%d}: C=%d, want %d", n, reply.C, n)
	}
	var got []*protocol.Message
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for len(got) < n {
		select {
		case m := <-ch:
			got = append(got, m)
		case <-timer.C:
			return fmt.Errorf("received %d of %d pushes within 5s", len(got), n)
		}
	}
	select { // no extra pushes
	case m := <-ch:
		got = append(got, m)
	case <-time.After(300 * time.Millisecond):
	}
	for i, m := range got {
		k := strconv.Itoa(i + 1)
		if i >= n {
			return fmt.Errorf("unexpected extra message %d: %s.%s status=%d meta=%v payload=%q", i+1, m.ServicePath, m.ServiceMethod, m.MessageStatusType(), m.Metadata, m.Payload)
		}
		if m.MessageStatusType() != protocol.Normal {
			return fmt.Errorf("push %d has status %d, want Normal (an Error status means the connection closed): meta=%v", i+1, m.MessageStatusType(), m.Metadata)
		}
		if m.ServicePath != "Push" || m.ServiceMethod != "Note" {
			return fmt.Errorf("push %d: %s.%s, want Push.Note", i+1, m.ServicePath, m.ServiceMethod)
		}
		if string(m.Payload) != "push-"+k {
			return fmt.Errorf("push %d: payload %q, want %q (pushes must arrive in order)", i+1, m.Payload, "push-"+k)
		}
		if !maps.Equal(m.Metadata, map[string]string{"i": k}) {
			return fmt.Errorf("push %d: metadata %v, want map[i:%s]", i+1, m.Metadata, k)
		}
		if m.MessageType() != protocol.Request || !m.IsOneway() || m.IsHeartbeat() {
			return fmt.Errorf("push %d: type=%d oneway=%v heartbeat=%v, want Request oneway !heartbeat", i+1, m.MessageType(), m.IsOneway(), m.IsHeartbeat())
		}
		if m.SerializeType() != protocol.SerializeNone {
			return fmt.Errorf("push %d: serialize type %d, want SerializeNone (0)", i+1, m.SerializeType())
		}
	}
	return nil
}

func scenBig(cfg *config) error {
	c, err := dial(cfg, option(protocol.SerializeNone))
	if err != nil {
		return err
	}
	defer c.Close()
	payload := noise(1 << 20)
	ctx, cancel := callCtx(30 * time.Second)
	defer cancel()
	var reply []byte
	if err := c.Call(ctx, "Echo", "Raw", payload, &reply); err != nil {
		return fmt.Errorf("Echo.Raw 1MiB: %w", err)
	}
	return diffBytes(reply, payload)
}

func scenConcurrent(cfg *config) error {
	const n = 1000
	c, err := dial(cfg, option(protocol.MsgPack))
	if err != nil {
		return err
	}
	defer c.Close()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fails []string
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := callCtx(20 * time.Second)
			defer cancel()
			var reply services.Reply
			err := c.Call(ctx, "Arith", "Mul", &services.Args{A: i, B: 2}, &reply)
			if err == nil && reply.C != 2*i {
				err = fmt.Errorf("C=%d, want %d", reply.C, 2*i)
			}
			if err != nil {
				mu.Lock()
				fails = append(fails, fmt.Sprintf("call %d: %v", i, err))
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if len(fails) > 0 {
		sort.Strings(fails)
		return fmt.Errorf("%d of %d concurrent calls failed, e.g. %s", len(fails), n, fails[0])
	}
	return nil
}

func scenFailover(cfg *config) error {
	if cfg.addr2 == "" {
		return errors.New("failover needs -addr2")
	}
	dur := cfg.duration
	if dur <= 0 {
		dur = 5 * time.Second
	}
	d, err := client.NewMultipleServersDiscovery([]*client.KVPair{
		{Key: cfg.network + "@" + cfg.addr},
		{Key: cfg.network + "@" + cfg.addr2},
	})
	if err != nil {
		return fmt.Errorf("multiple servers discovery: %w", err)
	}
	opt := option(protocol.MsgPack)
	opt.Retries = 3
	xc := client.NewXClient("Arith", client.Failover, client.RoundRobin, d, opt)
	defer xc.Close()
	rec := &recorder{}
	xc.GetPlugins().Add(rec)

	start := time.Now()
	end := start.Add(dur)
	count := 0
	for time.Now().Before(end) {
		ctx, cancel := callCtx(2 * time.Second)
		var reply services.Reply
		err := xc.Call(ctx, "Mul", &services.Args{A: count, B: 3}, &reply)
		cancel()
		if err == nil && reply.C != 3*count {
			err = fmt.Errorf("C=%d, want %d", reply.C, 3*count)
		}
		if err != nil {
			return fmt.Errorf("call %d at +%s failed: %v", count, time.Since(start).Round(time.Millisecond), err)
		}
		count++
	}
	info("failover calls=%d connections=%v", count, rec.connections())
	return nil
}

func scenSlowDeadline(cfg *config) error {
	xc, err := newXClient(cfg, "Arith", option(protocol.MsgPack))
	if err != nil {
		return err
	}
	defer xc.Close()
	ctx, cancel := callCtx(300 * time.Millisecond)
	defer cancel()
	start := time.Now()
	var reply services.Reply
	err = xc.Call(ctx, "Slow", &services.Args{A: 5000}, &reply)
	el := time.Since(start)
	switch {
	case err == nil:
		return fmt.Errorf("Arith.Slow {5000} with a 300ms context succeeded after %s (C=%d)", el, reply.C)
	case el >= 2*time.Second:
		return fmt.Errorf("Arith.Slow failed only after %s (want < 2s): %v", el, err)
	case el < 250*time.Millisecond:
		return fmt.Errorf("Arith.Slow failed after only %s, before the 300ms deadline: %v", el, err)
	case errors.Is(err, context.DeadlineExceeded):
		info("slow_deadline client-side %v after %s", err, el.Round(time.Millisecond))
	case err.Error() == services.ErrSlowContextDone:
		// XClient sends __ServerTimeout (~299 ms), so the server's handler
		// deadline may fire just before the client's own.
		info("slow_deadline server-side %q after %s", err.Error(), el.Round(time.Millisecond))
	default:
		return fmt.Errorf("Arith.Slow: error %q (%T), want context.DeadlineExceeded or %q", err.Error(), err, services.ErrSlowContextDone)
	}
	return nil
}

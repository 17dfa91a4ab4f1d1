package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/smallnest/rpcx/client"
	"github.com/smallnest/rpcx/protocol"
)

// clientTLS is the TLS config of every client (nil unless -ca is given).
var clientTLS *tls.Config

// option returns client.DefaultOption with the given serialize type (and the
// -ca TLS config).
func option(st protocol.SerializeType) client.Option {
	opt := client.DefaultOption
	opt.SerializeType = st
	opt.TLSConfig = clientTLS
	return opt
}

// dial creates a bare client.Client connected to cfg.addr. plugins (may be
// nil) are installed before connecting so they see every frame.
func dial(cfg *config, opt client.Option, plugins ...any) (*client.Client, error) {
	c := client.NewClient(opt)
	if len(plugins) > 0 {
		pc := client.NewPluginContainer()
		for _, p := range plugins {
			pc.Add(p)
		}
		c.Plugins = pc
	}
	if err := c.Connect(cfg.network, cfg.addr); err != nil {
		return nil, fmt.Errorf("connect %s@%s: %w", cfg.network, cfg.addr, err)
	}
	return c, nil
}

// newXClient creates an XClient (Failfast, RandomSelect) over a
// Peer2PeerDiscovery of cfg.addr.
func newXClient(cfg *config, servicePath string, opt client.Option) (client.XClient, error) {
	d, err := client.NewPeer2PeerDiscovery(cfg.network+"@"+cfg.addr, "")
	if err != nil {
		return nil, fmt.Errorf("peer2peer discovery: %w", err)
	}
	return client.NewXClient(servicePath, client.Failfast, client.RandomSelect, d, opt), nil
}

// expectServiceError checks that err is a client.ServiceError (i.e. it came
// from __rpcx_error__ in an error response) with exactly the text want.
func expectServiceError(err error, want string) error {
	if err == nil {
		return fmt.Errorf("call succeeded, want error %q", want)
	}
	if err.Error() != want {
		return fmt.Errorf("error text %q, want %q", err.Error(), want)
	}
	var se client.ServiceError
	if !errors.As(err, &se) || !se.IsServiceError() {
		return fmt.Errorf("error %q is a %T, not a client.ServiceError", err.Error(), err)
	}
	return nil
}

// frame is a copy of what a client plugin saw of one message.
type frame struct {
	seq       uint64
	typ       protocol.MessageType
	heartbeat bool
	oneway    bool
	compress  protocol.CompressType
	status    protocol.MessageStatusType
	serialize protocol.SerializeType
	path      string
	method    string
	meta      map[string]string
	payload   []byte
}

func snapshot(m *protocol.Message) frame {
	meta := make(map[string]string, len(m.Metadata))
	for k, v := range m.Metadata {
		meta[k] = v
	}
	return frame{
		seq: m.Seq(), typ: m.MessageType(), heartbeat: m.IsHeartbeat(), oneway: m.IsOneway(),
		compress: m.CompressType(), status: m.MessageStatusType(), serialize: m.SerializeType(),
		path: m.ServicePath, method: m.ServiceMethod, meta: meta,
		payload: bytes.Clone(m.Payload),
	}
}

// recorder is a client plugin (ClientBeforeEncode + ClientAfterDecode +
// ConnCreated) that records every frame sent and received. Received frames
// keep the compress flag of the wire frame (rpcx decompresses the payload
// but leaves the header flag set), which is how the gzip scenarios verify
// what the server sent.
type recorder struct {
	mu    sync.Mutex
	sent  []frame
	recv  []frame
	conns []string
}

func (r *recorder) ClientBeforeEncode(m *protocol.Message) error {
	f := snapshot(m)
	r.mu.Lock()
	r.sent = append(r.sent, f)
	r.mu.Unlock()
	return nil
}

func (r *recorder) ClientAfterDecode(m *protocol.Message) error {
	f := snapshot(m)
	r.mu.Lock()
	r.recv = append(r.recv, f)
	r.mu.Unlock()
	return nil
}

func (r *recorder) ConnCreated(conn net.Conn) (net.Conn, error) {
	r.mu.Lock()
	r.conns = append(r.conns, conn.RemoteAddr().String())
	r.mu.Unlock()
	return conn, nil
}

func (r *recorder) frames() (sent, recv []frame) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]frame(nil), r.sent...), append([]frame(nil), r.recv...)
}

func (r *recorder) connections() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.conns...)
}

// responseTo finds the received frame answering the sent call path.method
// (by seq), waiting up to 1 s for the plugin to have recorded it.
func (r *recorder) responseTo(path, method string) (req, res frame, err error) {
	deadline := time.Now().Add(time.Second)
	for {
		sent, recv := r.frames()
		found := false
		for _, s := range sent {
			if s.path == path && s.method == method && !s.heartbeat {
				req, found = s, true
			}
		}
		if found {
			for _, f := range recv {
				if f.seq == req.seq && f.typ == protocol.Response {
					return req, f, nil
				}
			}
		}
		if time.Now().After(deadline) {
			if !found {
				return req, res, fmt.Errorf("no request %s.%s recorded", path, method)
			}
			return req, res, fmt.Errorf("no response with seq %d recorded", req.seq)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pattern returns n compressible pseudo-random bytes: a 64-byte block from
// a small LCG, repeated with a varying counter byte.
func pattern(n int) []byte {
	block := make([]byte, 64)
	x := uint32(12345)
	for i := range block {
		x = x*1103515245 + 12345
		block[i] = byte(x >> 16)
	}
	out := make([]byte, n)
	for i := range out {
		out[i] = block[i%64] ^ byte(i/640)
	}
	return out
}

// noise returns n incompressible pseudo-random bytes (xorshift64*).
func noise(n int) []byte {
	out := make([]byte, n)
	x := uint64(0x9E3779B97F4A7C15)
	for i := range out {
		x ^= x >> 12
		x ^= x << 25
		x ^= x >> 27
		out[i] = byte((x * 0x2545F4914F6CDD1D) >> 56)
	}
	return out
}

func diffBytes(got, want []byte) error {
	if bytes.Equal(got, want) {
		return nil
	}
	if len(got) != len(want) {
		return fmt.Errorf("echo length %d, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Errorf("echo differs at byte %d: %#02x, want %#02x", i, got[i], want[i])
		}
	}
	return errors.New("echo differs")
}

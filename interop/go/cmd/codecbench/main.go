// Command codecbench times Go rpcx's own frame codec (smallnest/rpcx/protocol, the
// code its server and client run per message) on the frames the Rust criterion bench
// uses (benches/src/lib.rs): Hello.Say, MsgPack, a 581-byte payload of 'x', with no
// metadata and with the four pairs key-i=value-i. Run it pinned to one core:
//
//	taskset -c 1 go run ./cmd/codecbench [-rounds 2000]
//
// Encode: Message.EncodeSlicePointer and protocol.PutData, as the server writes each
// response. Decode: protocol.NewMessage and Message.Decode from a bytes.Reader over
// 1000 frames back to back, as the server reads each request (server.readRequest).
// Each round handles 1000 frames; it prints the best and the mean round as frames/s,
// and the heap allocations per frame (runtime.MemStats.Mallocs over all rounds).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/smallnest/rpcx/protocol"
)

const batch = 1000

func benchMessage(seq uint64, pairs int) *protocol.Message {
	m := protocol.NewMessage()
	m.SetMessageType(protocol.Request)
	m.SetSerializeType(protocol.MsgPack)
	m.SetSeq(seq)
	m.ServicePath = "Hello"
	m.ServiceMethod = "Say"
	m.Payload = bytes.Repeat([]byte{'x'}, 581)
	if pairs > 0 {
		m.Metadata = make(map[string]string, pairs)
		for i := 0; i < pairs; i++ {
			m.Metadata["key-"+strconv.Itoa(i)] = "value-" + strconv.Itoa(i)
		}
	}
	return m
}

type result struct {
	best, mean float64 // frames/s
	allocs     float64 // per frame
}

func run(rounds int, f func()) result {
	f() // warm the pools
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	best := time.Duration(1 << 62)
	var total time.Duration
	for i := 0; i < rounds; i++ {
		t := time.Now()
		f()
		d := time.Since(t)
		total += d
		if d < best {
			best = d
		}
	}
	runtime.ReadMemStats(&ms1)
	return result{
		best:   batch / best.Seconds(),
		mean:   batch * float64(rounds) / total.Seconds(),
		allocs: float64(ms1.Mallocs-ms0.Mallocs) / float64(batch*rounds),
	}
}

func main() {
	rounds := flag.Int("rounds", 2000, "rounds of 1000 frames per figure")
	flag.Parse()
	fmt.Printf("Go %s, GOMAXPROCS %d\n", runtime.Version(), runtime.GOMAXPROCS(0))
	fmt.Printf("%-10s %-7s %12s %12s %13s\n", "variant", "op", "best M/s", "mean M/s", "allocs/frame")
	for _, v := range []struct {
		name  string
		pairs int
	}{{"581B", 0}, {"581B+4md", 4}} {
		msg := benchMessage(1, v.pairs)
		enc := run(*rounds, func() {
			for i := 0; i < batch; i++ {
				data := msg.EncodeSlicePointer()
				protocol.PutData(data)
			}
		})
		var stream []byte
		for i := 0; i < batch; i++ {
			stream = append(stream, benchMessage(uint64(i), v.pairs).Encode()...)
		}
		r := bytes.NewReader(stream)
		dec := run(*rounds, func() {
			r.Reset(stream)
			for i := 0; i < batch; i++ {
				m := protocol.NewMessage()
				if err := m.Decode(r); err != nil {
					panic(err)
				}
				if m.ServiceMethod != "Say" || len(m.Payload) != 581 || len(m.Metadata) != v.pairs {
					panic("decoded the wrong message")
				}
			}
		})
		for _, x := range []struct {
			op string
			r  result
		}{{"encode", enc}, {"decode", dec}} {
			fmt.Printf("%-10s %-7s %12.2f %12.2f %13.2f\n", v.name, x.op, x.r.best/1e6, x.r.mean/1e6, x.r.allocs)
		}
	}
}

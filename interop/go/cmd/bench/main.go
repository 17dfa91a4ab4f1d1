// Command bench is a closed-loop rpcx load generator: -c callers spread over
// -conns bare rpcx clients (one TCP connection each), every caller sending its
// next call when the previous one returns.
//
//	bench -addr 127.0.0.1:8972 [-conns 1] [-c 100] [-d 3s] [-warmup 1s]
//	      [-method Arith.Mul] [-serialize msgpack|json|protobuf] [-pid PID]
//
// The run has a warm-up (calls made but not counted) and then the measured
// window of -d. A call counts if it completes inside the window; its latency
// is measured from the moment it was issued. With -pid, the process's
// utime+stime ticks (/proc/PID/stat) are read at the start and the end of the
// window and reported as server_ticks (divide by `getconf CLK_TCK`).
//
// At the end it prints one JSON line to stdout:
//
//	{"addr":..,"conns":..,"c":..,"calls":..,"errors":..,"elapsed_s":..,
//	 "calls_per_s":..,"p50_us":..,"p90_us":..,"p99_us":..,"p999_us":..,
//	 "max_us":..,"server_ticks":..}
//
// errors counts every failed call (warm-up included) and, for Arith.Mul,
// Arith.Add and ProtoArith.Mul, every wrong reply; the first error is also
// written to stderr. The exit status is 1 if there was any error, the setup
// failed, or callers were still stuck after the window (watchdog).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	stdlog "log"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smallnest/rpcx/client"
	rpcxlog "github.com/smallnest/rpcx/log"
	"github.com/smallnest/rpcx/protocol"

	arithpb "rpcxinterop/proto"
	"rpcxinterop/services"
)

// Log-linear latency histogram over nanoseconds: values below 128 are exact,
// above that each power of two is split into 64 buckets (relative error of a
// reported value under 1%: it is the middle of its bucket).
const (
	subBits  = 6
	maxShift = 40 // values are clamped to 2^47 ns (~39 h)
	nBuckets = (maxShift + 2) << subBits
)

type hist struct {
	counts [nBuckets]uint64
	n      uint64
	max    int64
}

func bucketOf(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < 2<<subBits {
		return int(u)
	}
	shift := bits.Len64(u) - subBits - 1
	if shift > maxShift {
		shift, u = maxShift, (2<<(subBits+maxShift))-1
	}
	return (shift+1)<<subBits + int(u>>uint(shift)) - 1<<subBits
}

// valueOf is the middle of bucket i, in nanoseconds.
func valueOf(i int) int64 {
	if i < 2<<subBits {
		return int64(i)
	}
	shift := i>>subBits - 1
	m := int64(i&(1<<subBits-1)) + 1<<subBits
	return m<<uint(shift) + (int64(1)<<uint(shift))/2
}

func (h *hist) record(v int64) {
	h.counts[bucketOf(v)]++
	h.n++
	if v > h.max {
		h.max = v
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile is the value at quantile q (0 < q <= 1) in nanoseconds, never
// above the recorded maximum.
func (h *hist) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(valueOf(i), h.max)
		}
	}
	return h.max
}

// procTicks is utime+stime of pid from /proc/<pid>/stat (all threads).
func procTicks(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may contain spaces: split after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return ut + st, nil
}

type result struct {
	Addr        string  `json:"addr"`
	Method      string  `json:"method"`
	Serialize   string  `json:"serialize"`
	Conns       int     `json:"conns"`
	C           int     `json:"c"`
	Calls       uint64  `json:"calls"`
	Errors      uint64  `json:"errors"`
	ElapsedS    float64 `json:"elapsed_s"`
	CallsPerS   float64 `json:"calls_per_s"`
	P50us       float64 `json:"p50_us"`
	P90us       float64 `json:"p90_us"`
	P99us       float64 `json:"p99_us"`
	P999us      float64 `json:"p999_us"`
	MaxUs       float64 `json:"max_us"`
	ServerTicks int64   `json:"server_ticks"`
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8972", "server address host:port")
	conns := flag.Int("conns", 1, "number of rpcx clients (TCP connections)")
	conc := flag.Int("c", 1, "concurrent callers in total, spread round-robin over the connections")
	dur := flag.Duration("d", 3*time.Second, "measured window")
	warmup := flag.Duration("warmup", time.Second, "warm-up before the window (calls not counted)")
	method := flag.String("method", "Arith.Mul", "Service.Method to call")
	ser := flag.String("serialize", "msgpack", "msgpack, json or protobuf (protobuf sends ProtoArgs, e.g. -method ProtoArith.Mul)")
	pid := flag.Int("pid", 0, "if > 0, report this process's utime+stime ticks over the window")
	grace := flag.Duration("grace", 10*time.Second, "how long callers may take to return after the window")
	flag.Parse()

	rpcxlog.SetLogger(rpcxlog.NewDefaultLogger(os.Stderr, "", stdlog.LstdFlags|stdlog.Lmicroseconds, rpcxlog.LvError))

	if *conns < 1 || *conc < 1 || *dur <= 0 || *warmup < 0 {
		fatalf("need -conns >= 1, -c >= 1, -d > 0, -warmup >= 0")
	}
	svc, meth, ok := strings.Cut(*method, ".")
	if !ok || svc == "" || meth == "" {
		fatalf("-method %q: want Service.Method", *method)
	}
	var st protocol.SerializeType
	switch *ser {
	case "msgpack":
		st = protocol.MsgPack
	case "json":
		st = protocol.JSON
	case "protobuf":
		st = protocol.ProtoBuffer
	default:
		fatalf("-serialize %q: want msgpack, json or protobuf", *ser)
	}
	check := *method == "Arith.Mul" || *method == "Arith.Add" || *method == "ProtoArith.Mul"
	mul := meth == "Mul"

	opt := client.DefaultOption
	opt.SerializeType = st
	clients := make([]*client.Client, *conns)
	for i := range clients {
		c := client.NewClient(opt)
		if err := c.Connect("tcp", *addr); err != nil {
			fatalf("connect %d to %s: %v", i, *addr, err)
		}
		clients[i] = c
	}

	var (
		phase    atomic.Int32
		errs     atomic.Uint64
		firstErr sync.Once
		wg       sync.WaitGroup
	)
	noteErr := func(err error) {
		errs.Add(1)
		firstErr.Do(func() { fmt.Fprintf(os.Stderr, "bench: first error: %v\n", err) })
	}
	hists := make([]*hist, *conc)
	for g := 0; g < *conc; g++ {
		h := &hist{}
		hists[g] = h
		cl := clients[g%len(clients)]
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			ctx := context.Background()
			for k := 1; ; k++ {
				if phase.Load() == phaseStop {
					return
				}
				a, b := g+k%1000, 3
				want := a * b
				if !mul {
					want = a + b
				}
				var err error
				var got int
				t0 := time.Now()
				if st == protocol.ProtoBuffer {
					var rep arithpb.ProtoReply
					err = cl.Call(ctx, svc, meth, &arithpb.ProtoArgs{A: int64(a), B: int64(b)}, &rep)
					got = int(rep.C)
				} else {
					var rep services.Reply
					err = cl.Call(ctx, svc, meth, &services.Args{A: a, B: b}, &rep)
					got = rep.C
				}
				el := time.Since(t0)
				if err == nil && check && got != want {
					err = fmt.Errorf("%s(%d, %d) = %d, want %d", *method, a, b, got, want)
				}
				if err != nil {
					noteErr(err)
					time.Sleep(time.Millisecond) // a dead connection fails at once: don't spin
					continue
				}
				if phase.Load() == phaseMeasure {
					h.record(el.Nanoseconds())
				}
			}
		}(g)
	}

	time.Sleep(*warmup)
	var t0 int64
	var err error
	if *pid > 0 {
		if t0, err = procTicks(*pid); err != nil {
			fatalf("%v", err)
		}
	}
	start := time.Now()
	phase.Store(phaseMeasure)
	time.Sleep(*dur)
	phase.Store(phaseStop)
	elapsed := time.Since(start)
	ticks := int64(-1)
	if *pid > 0 {
		t1, err := procTicks(*pid)
		if err != nil {
			fatalf("%v", err)
		}
		ticks = t1 - t0
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(*grace):
		fatalf("callers still in a call %v after the window (server stuck?)", *grace)
	}
	for _, c := range clients {
		_ = c.Close()
	}

	var total hist
	for _, h := range hists {
		total.merge(h)
	}
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	r := result{
		Addr: *addr, Method: *method, Serialize: *ser, Conns: *conns, C: *conc,
		Calls: total.n, Errors: errs.Load(), ElapsedS: elapsed.Seconds(),
		CallsPerS: float64(total.n) / elapsed.Seconds(),
		P50us:     us(total.quantile(0.5)), P90us: us(total.quantile(0.9)),
		P99us: us(total.quantile(0.99)), P999us: us(total.quantile(0.999)),
		MaxUs: us(total.max), ServerTicks: ticks,
	}
	out, err := json.Marshal(r)
	if err != nil {
		fatalf("%v", err)
	}
	fmt.Println(string(out))
	if r.Errors > 0 {
		os.Exit(1)
	}
	if r.Calls == 0 {
		fatalf("no call completed in the window")
	}
}

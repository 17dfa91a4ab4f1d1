// Command client is the Go client scenario driver of the interop harness.
//
//	client -addr HOST:PORT -scenario NAME [-addr2 HOST:PORT] [-auth TOKEN]
//	       [-duration D] [-network tcp|http|ws|wss|unix] [-ca PEM] [-watchdog D]
//
// It prints "PASS <scenario>" and exits 0 on success, or prints
// "FAIL <scenario>: <detail>" and exits 1 on any mismatch or error. Lines
// starting with "INFO " are informational. rpcx's own logging goes to stderr.
// See ../../README.md for the scenario contract.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	stdlog "log"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	rpcxlog "github.com/smallnest/rpcx/log"
)

type config struct {
	addr     string
	addr2    string
	network  string
	auth     string
	duration time.Duration // 0 = scenario default
}

type scenario struct {
	name  string
	run   func(*config) error
	inAll bool
}

var scenarios = []scenario{
	{"json", scenJSON, true},
	{"msgpack", scenMsgpack, true},
	{"protobuf", scenProtobuf, true},
	{"raw", scenRaw, true},
	{"gzip_small", scenGzipSmall, true},
	{"gzip_large", scenGzipLarge, true},
	{"metadata", scenMetadata, true},
	{"error", scenError, true},
	{"unknown_service", scenUnknownService, true},
	{"unknown_method", scenUnknownMethod, true},
	{"oneway", scenOneway, true},
	{"heartbeat", scenHeartbeat, true},
	{"deadline", scenDeadline, true},
	{"push", scenPush, true},
	{"big", scenBig, true},
	{"concurrent", scenConcurrent, true},
	{"slow_deadline", scenSlowDeadline, true},
	{"alias", scenAlias, true},
	{"auth_ok", scenAuthOK, false},
	{"auth_fail", scenAuthFail, false},
	{"failover", scenFailover, false},
}

var (
	outMu  sync.Mutex
	exited bool
)

// say prints one stdout line unless the process is already exiting.
func say(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	if !exited {
		fmt.Fprintf(os.Stdout, format+"\n", args...)
	}
}

func info(format string, args ...any) { say("INFO "+format, args...) }

// exit prints a final line and exits; only the first caller wins (the
// watchdog and the main goroutine may race).
func exit(code int, format string, args ...any) {
	outMu.Lock()
	if exited {
		outMu.Unlock()
		select {} // the other caller is exiting
	}
	exited = true
	fmt.Fprintf(os.Stdout, format+"\n", args...)
	os.Exit(code)
}

func main() {
	var cfg config
	name := flag.String("scenario", "", "scenario name, or 'all'")
	flag.StringVar(&cfg.addr, "addr", "", "server address (HOST:PORT, or socket path with -network unix)")
	flag.StringVar(&cfg.addr2, "addr2", "", "second server address (failover only)")
	flag.StringVar(&cfg.network, "network", "tcp", "network: tcp, http, ws, wss or unix")
	caFile := flag.String("ca", "", "trust only this CA certificate (PEM) for TLS (-network wss)")
	flag.StringVar(&cfg.auth, "auth", "", "auth token (auth_ok only)")
	flag.DurationVar(&cfg.duration, "duration", 0, "failover run time (default 5s) / heartbeat idle time (default 2s)")
	watchdog := flag.Duration("watchdog", 0, "global time limit (default: 60s, plus -duration for failover/heartbeat, 120s for all)")
	flag.Parse()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			exit(1, "FAIL %s: read -ca: %v", *name, err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			exit(1, "FAIL %s: -ca %s holds no certificate", *name, *caFile)
		}
		clientTLS = &tls.Config{RootCAs: roots}
	}

	rpcxlog.SetLogger(rpcxlog.NewDefaultLogger(os.Stderr, "", stdlog.LstdFlags|stdlog.Lmicroseconds|stdlog.Lshortfile, rpcxlog.LvError))

	if *name == "" {
		exit(1, "FAIL %s: -scenario is required", "<none>")
	}
	if cfg.addr == "" {
		exit(1, "FAIL %s: -addr is required", *name)
	}

	wd := *watchdog
	if wd <= 0 {
		wd = 60*time.Second + cfg.duration
		if *name == "all" {
			wd = 120*time.Second + cfg.duration
		}
	}
	time.AfterFunc(wd, func() {
		exit(1, "FAIL %s: watchdog: no result after %s", *name, wd)
	})

	if *name == "all" {
		var failed []string
		for _, s := range scenarios {
			if !s.inAll {
				continue
			}
			if err := runOne(s, &cfg); err != nil {
				say("FAIL %s: %v", s.name, err)
				failed = append(failed, s.name)
			} else {
				say("PASS %s", s.name)
			}
		}
		if len(failed) > 0 {
			exit(1, "FAIL all: %d scenario(s) failed: %s", len(failed), strings.Join(failed, ", "))
		}
		exit(0, "PASS all")
	}

	for _, s := range scenarios {
		if s.name == *name {
			if err := runOne(s, &cfg); err != nil {
				exit(1, "FAIL %s: %v", s.name, err)
			}
			exit(0, "PASS %s", s.name)
		}
	}
	names := make([]string, 0, len(scenarios)+1)
	for _, s := range scenarios {
		names = append(names, s.name)
	}
	names = append(names, "all")
	sort.Strings(names)
	exit(1, "FAIL %s: unknown scenario (known: %s)", *name, strings.Join(names, ", "))
}

// runOne runs a scenario, converting a panic into a failure.
func runOne(s scenario, cfg *config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return s.run(cfg)
}

// callCtx returns a context bounded by d (every call in the driver is bounded).
func callCtx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

const defaultCallTimeout = 10 * time.Second

//! The `rpcx` binary end to end, on loopback: `call` against `rpcx serve` (golden
//! outputs), `decode` of the Go-produced vectors, `dump` between a client and a server,
//! and the exit status of usage errors. Every child process is bounded in time.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_rpcx");
/// Longest any one command may take.
const LIMIT: Duration = Duration::from_secs(60);

/// Run `rpcx ARGS` (stdin from `input`), bounded by [`LIMIT`].
fn rpcx_in(args: &[&str], input: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rpcx");
    if let Some(data) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(data).expect("write stdin");
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("wait rpcx"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("rpcx {args:?} did not finish within {LIMIT:?}");
        }
    }
}

fn rpcx(args: &[&str]) -> Output {
    rpcx_in(args, None)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_status(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
}

/// A background `rpcx` process (serve, dump) killed when dropped.
struct Background {
    child: Child,
    /// The address from its first stdout line (`listening on ADDR...`).
    addr: String,
    rest: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rpcx");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let rest = std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            lines.map_while(Result::ok).collect::<Vec<_>>().join("\n")
        });
        let first = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("rpcx {args:?} printed no address");
            }
        };
        let addr = first
            .strip_prefix("listening on ")
            .and_then(|r| r.split([' ', ',']).next())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        Background { child, addr, rest: Some(rest) }
    }

    /// Wait for the process to end by itself (bounded) and return the rest of its stdout.
    fn finish(mut self) -> String {
        for _ in 0..300 {
            if self.child.try_wait().expect("try_wait").is_some() {
                return self.rest.take().expect("reader").join().expect("reader thread");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("background rpcx did not end");
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Background {
    let mut args = vec!["serve", "--addr", "tcp@127.0.0.1:0"];
    args.extend_from_slice(extra);
    Background::start(&args)
}

#[test]
fn call_golden_replies() {
    let s = serve(&[]);
    let a = s.addr.as_str();

    let o = rpcx(&["call", a, "Arith.Mul", r#"{"A":7,"B":6}"#]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 42\n}\n");

    let o = rpcx(&["call", a, "Arith.Add", r#"{"A":7,"B":6}"#, "--serialize", "msgpack"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 13\n}\n");

    // MsgPack reply bytes as hex: {C: 42}.
    let o = rpcx(&["call", a, "Arith.Mul", r#"{"A":7,"B":6}"#, "-s", "msgpack", "--output", "hex"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "81a1432a\n");

    // Protobuf without a descriptor: hex in, hex out. ProtoArgs{7,6} -> ProtoReply{42}.
    let o = rpcx(&["call", a, "Arith.Mul", "08 07 10 06", "-s", "protobuf"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "082a\n");

    // Protobuf with a schema: a .proto whose service names the types.
    let dir = std::env::temp_dir().join(format!("rpcx-cli-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let proto = dir.join("arith.proto");
    std::fs::write(
        &proto,
        "syntax = \"proto3\";\npackage demo;\nmessage Args { int64 A = 1; int64 B = 2; }\n\
         message Reply { int64 C = 1; }\nservice Arith { rpc Mul(Args) returns (Reply); }\n",
    )
    .unwrap();
    let o = rpcx(&["call", a, "Arith.Mul", r#"{"A":7,"B":6}"#, "--proto", proto.to_str().unwrap()]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 42\n}\n");
    let o = rpcx(&["call", a, "Arith.Add", r#"{"A":7}"#, "--proto", proto.to_str().unwrap()]);
    assert_status(&o, 2);
    assert!(stderr(&o).contains("no rpc Arith.Add"), "{}", stderr(&o));
    let o = rpcx(&["call", a, "Arith.Mul", r#"{"Nope":1}"#, "--proto", proto.to_str().unwrap()]);
    assert_status(&o, 2);
    let _ = std::fs::remove_dir_all(&dir);

    let o = rpcx(&["call", a, "Echo.Raw", "hello, rpcx", "-s", "raw", "--output", "raw"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "hello, rpcx");

    // Response metadata with -v, on stderr.
    let o = rpcx(&["call", a, "Echo.Meta", r#"{"A":3,"B":4}"#, "-m", "k1=v1", "-m", "k2=v2", "-v"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 7\n}\n");
    let err = stderr(&o);
    assert!(err.contains("< k1: v1") && err.contains("< k2: v2"), "{err}");
    assert!(!err.contains("__ServerTimeout"), "{err}");

    // Arguments from stdin and from a file.
    let o = rpcx_in(&["call", a, "Arith.Mul", "-"], Some(br#"{"A":5,"B":5}"#));
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 25\n}\n");
    let path = std::env::temp_dir().join(format!("rpcx-cli-args-{}.json", std::process::id()));
    std::fs::write(&path, br#"{"A":2,"B":21}"#).unwrap();
    let at = format!("@{}", path.display());
    let o = rpcx(&["call", a, "Arith.Mul", &at]);
    let _ = std::fs::remove_file(&path);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 42\n}\n");

    // A large payload gzip'd both ways comes back intact.
    let big = "abc".repeat(2000);
    let o = rpcx(&["call", a, "Echo.Raw", &big, "-s", "raw", "--gzip", "--output", "raw", "-v"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), big);
    assert!(stderr(&o).contains("compress=gzip"), "{}", stderr(&o));

    // Server pushes before the reply, on stderr.
    let o = rpcx(&["call", a, "Notify.Subscribe", r#"{"A":2}"#]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 2\n}\n");
    assert_eq!(stderr(&o), "push Notify.Tick tick 1\npush Notify.Tick tick 2\n");

    let o = rpcx(&["call", a, "Arith.Mul", r#"{"A":1,"B":1}"#, "--oneway"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "");
}

#[test]
fn call_errors() {
    let s = serve(&["--auth", "sesame"]);
    let a = s.addr.as_str();

    let o = rpcx(&["call", a, "Arith.Mul", r#"{"A":7,"B":6}"#, "--auth", "sesame"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 42\n}\n");

    // A server error: exit status 1, its text on stderr.
    let o = rpcx(&["call", a, "Arith.Mul", r#"{"A":7,"B":6}"#]);
    assert_status(&o, 1);
    assert_eq!(stderr(&o), "rpcx: server error: auth failed\n");
    assert_eq!(stdout(&o), "");

    // Unknown method: the server says so; a usage error (2).
    let o = rpcx(&["call", a, "Arith.Div", "{}", "--auth", "sesame"]);
    assert_status(&o, 2);
    assert_eq!(stderr(&o), "rpcx: server error: rpcx: can't find method Div\n");

    // Nothing listening: a failure (1).
    let o = rpcx(&["call", "tcp@127.0.0.1:1", "Arith.Mul", "{}"]);
    assert_status(&o, 1);
    assert!(stderr(&o).starts_with("rpcx: tcp@127.0.0.1:1: connect failed"), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for (args, want) in [
        (&["call", "127.0.0.1", "Arith.Mul", "{}"][..], "bad address"),
        (&["call", "bogus@x:1", "Arith.Mul", "{}"][..], "bad address"),
        (&["call", "127.0.0.1:1", "Arith.Mul", "{nope"][..], "bad JSON arguments"),
        (&["call", "127.0.0.1:1", "ArithMul", "{}"][..], "bad method"),
        (&["call", "127.0.0.1:1", "Arith.Mul", "{}", "-m", "novalue"][..], "bad metadata"),
        (&["call", "127.0.0.1:1", "Arith.Mul", "zz", "-s", "protobuf"][..], "must be hex"),
        (&["call", "127.0.0.1:1", "Arith.Mul", "{}", "--timeout", "5 parsecs"][..], "bad duration"),
        (&["bench", "127.0.0.1:1", "--rate", "0"][..], "--rate must be"),
        (&["dump", "--listen", "nowhere", "--upstream", "127.0.0.1:1"][..], "bad --listen address"),
        (&["decode", "not hex at all"][..], "neither rpcx frames"),
    ] {
        let o = rpcx(args);
        assert_status(&o, 2);
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // clap's own errors (unknown serialize type, unknown flag) exit 2 too.
    let o = rpcx(&["call", "127.0.0.1:1", "Arith.Mul", "{}", "--serialize", "yaml"]);
    assert_status(&o, 2);
    assert!(stderr(&o).contains("invalid value 'yaml'"), "{}", stderr(&o));
    let o = rpcx(&["frobnicate"]);
    assert_status(&o, 2);
}

/// `rpcx call` through the transports on the same port: an HTTP CONNECT tunnel
/// (`http@`) and WebSocket (`ws@`, and `wss@` against a TLS server).
#[test]
fn call_over_connect_and_websocket() {
    let s = serve(&[]);
    let hp = s.addr.trim_start_matches("tcp@").to_owned();
    for network in ["http", "ws"] {
        let o = rpcx(&["call", &format!("{network}@{hp}"), "Arith.Mul", r#"{"A":6,"B":7}"#]);
        assert_status(&o, 0);
        assert_eq!(stdout(&o), "{\n  \"C\": 42\n}\n", "{network}@");
    }
    let t = serve(&["--tls"]);
    let hp = t.addr.trim_start_matches("tcp@").to_owned();
    let o = rpcx(&["call", &format!("wss@{hp}"), "Arith.Mul", r#"{"A":2,"B":21}"#, "--tls", "--insecure"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 42\n}\n");
}

/// One HTTP/1.1 request (Connection: close) to `addr` (`tcp@host:port`); the response.
fn http_post(addr: &str, headers: &[(&str, &str)], body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr.trim_start_matches("tcp@")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `rpcx gateway` in front of two `rpcx serve` upstreams: HTTP gateway and JSON-RPC
/// requests and rpcx calls are forwarded through the XClient (response metadata and
/// upstream errors as they came back), and a dead upstream is failed over.
#[test]
fn gateway_forwards_http_jsonrpc_and_rpcx_to_upstreams() {
    let up = serve(&[]);
    let gw = Background::start(&[
        "gateway",
        "--addr",
        "tcp@127.0.0.1:0",
        "--upstream",
        &up.addr,
        "--upstream",
        "tcp@127.0.0.1:1",
        "--select",
        "roundrobin",
    ]);
    for _ in 0..4 {
        let r = http_post(
            &gw.addr,
            &[("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "1")],
            r#"{"A":6,"B":7}"#,
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with(r#"{"C":42}"#), "{r}");
    }
    let r = http_post(
        &gw.addr,
        &[
            ("X-RPCX-ServicePath", "Echo"),
            ("X-RPCX-ServiceMethod", "Meta"),
            ("X-RPCX-SerializeType", "1"),
            ("X-RPCX-Meta", "k=v"),
        ],
        r#"{"A":1,"B":2}"#,
    );
    assert!(r.contains("X-Rpcx-Meta: k=v\r\n"), "response metadata from upstream: {r}");
    let r = http_post(
        &gw.addr,
        &[("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Nope"), ("X-RPCX-SerializeType", "1")],
        "{}",
    );
    assert!(r.starts_with("HTTP/1.1 500") && r.contains("X-Rpcx-Errormessage: rpcx: can't find method Nope"), "{r}");
    let r = http_post(
        &gw.addr,
        &[("X-JSONRPC-2.0", "true")],
        r#"{"jsonrpc":"2.0","method":"Arith.Add","params":{"A":1,"B":2},"id":9}"#,
    );
    assert!(r.ends_with(r#"{"jsonrpc":"2.0","result":{"C":3},"id":9}"#), "{r}");
    let o = rpcx(&["call", &gw.addr, "Arith.Mul", r#"{"A":5,"B":5}"#]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 25\n}\n");
    let o = rpcx(&["gateway"]);
    assert_status(&o, 2);
}

fn keys(d: &dyn rpcx_tokio::core::govern::Discovery) -> Vec<String> {
    d.snapshot().servers.iter().map(|i| i.key().to_string()).collect()
}

/// `rpcx serve --registry` publishes in a real registry and `rpcx gateway --registry`
/// finds the servers there: an XClient per service path, at most `--max-services`.
/// `arith_nodes` lists the keys the registry holds for `Arith`.
fn gateway_through_registry(url: &str, arith_nodes: impl Fn() -> Vec<String>) {
    let reg = ["--registry", url, "--base-path", "/gw"];
    let s1 = serve(&reg);
    let s2 = serve(&reg);
    let mut nodes = arith_nodes();
    nodes.sort();
    let mut want = vec![s1.addr.clone(), s2.addr.clone()];
    want.sort();
    assert_eq!(nodes, want, "both servers registered");
    let gw = Background::start(&[&["gateway", "--addr", "tcp@127.0.0.1:0", "--max-services", "2"][..], &reg].concat());
    let mul = [("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "1")];
    for _ in 0..4 {
        let r = http_post(&gw.addr, &mul, r#"{"A":6,"B":7}"#);
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with(r#"{"C":42}"#), "{r}");
    }
    let r = http_post(
        &gw.addr,
        &[("X-RPCX-ServicePath", "Echo"), ("X-RPCX-ServiceMethod", "Meta"), ("X-RPCX-SerializeType", "1")],
        r#"{"A":1,"B":2}"#,
    );
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "second service: {r}");
    // A third service path is one over --max-services: refused, the others still served.
    let r = http_post(
        &gw.addr,
        &[("X-RPCX-ServicePath", "Notify"), ("X-RPCX-ServiceMethod", "Subscribe"), ("X-RPCX-SerializeType", "1")],
        "{}",
    );
    assert!(r.starts_with("HTTP/1.1 500") && r.contains("--max-services"), "{r}");
    let o = rpcx(&["call", &gw.addr, "Arith.Mul", r#"{"A":5,"B":5}"#]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 25\n}\n");
    // `rpcx call` straight to a server found in the registry.
    let o = rpcx(&["call", url, "Arith.Mul", r#"{"A":4,"B":5}"#, "--base-path", "/gw", "-v"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 20\n}\n");
    let picked = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        picked.contains(&format!("calling {} (from {url})", s1.addr))
            || picked.contains(&format!("calling {} (from {url})", s2.addr)),
        "{picked}"
    );
    let o = rpcx(&["call", url, "Nobody.Mul", "{}", "--base-path", "/gw"]);
    assert_status(&o, 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no active server of Nobody"), "{o:?}");
}

#[test]
fn gateway_finds_upstreams_in_etcd() {
    let etcd = rpcx_registry::etcd::testing::EtcdServer::start().expect("start etcd");
    let hp = etcd.endpoint().trim_start_matches("http://").to_owned();
    let config = rpcx_registry::etcd::EtcdConfig::new([etcd.endpoint()], "/gw");
    gateway_through_registry(&format!("etcd://{hp}"), || {
        let d = rpcx_registry::etcd::EtcdDiscovery::connect(config.clone(), "Arith").wait().expect("discovery");
        keys(&d)
    });
    let o = rpcx(&["gateway", "--registry", "zoo://127.0.0.1:1"]);
    assert_status(&o, 2);
    let o = rpcx(&["gateway", "--registry", "etcd://x:1", "--upstream", "tcp@127.0.0.1:1"]);
    assert_status(&o, 2);
}

#[test]
fn gateway_finds_upstreams_in_zookeeper() {
    let zk = rpcx_registry::zookeeper::testing::ZkServer::start().expect("start ZooKeeper");
    let config = rpcx_registry::zookeeper::ZkConfig::new([zk.address()], "/gw");
    gateway_through_registry(&format!("zookeeper://{}", zk.address()), || {
        let d = rpcx_registry::zookeeper::ZkDiscovery::connect(config.clone(), "Arith").wait().expect("discovery");
        keys(&d)
    });
}

/// Against the in-repo Consul stand-in (no Consul server can be had here; Go's
/// rpcx-consul passes against the same stand-in in interop/tests/consul_go.rs).
#[test]
fn gateway_finds_upstreams_in_consul() {
    let consul = rpcx_registry::consul::testing::ConsulStandIn::start().expect("start the Consul stand-in");
    let config = rpcx_registry::consul::ConsulConfig::new(&consul.address(), "/gw");
    gateway_through_registry(&format!("consul://{}", consul.host_port()), || {
        let d = rpcx_registry::consul::ConsulDiscovery::connect(config.clone(), "Arith").wait().expect("discovery");
        keys(&d)
    });
}

#[test]
fn gateway_finds_upstreams_in_redis() {
    let redis = rpcx_registry::redis::testing::RedisServer::start().expect("start redis-server");
    let config = rpcx_registry::redis::RedisConfig::new(&redis.url(), "/gw");
    gateway_through_registry(&redis.url(), || {
        let d = rpcx_registry::redis::RedisDiscovery::connect(config.clone(), "Arith").wait().expect("discovery");
        keys(&d)
    });
}

#[test]
fn tls_call_with_insecure() {
    let s = serve(&["--tls"]);
    let o = rpcx(&["call", &s.addr, "Arith.Mul", r#"{"A":6,"B":7}"#, "--tls", "--insecure"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 42\n}\n");
    // Without trust settings: a usage error, nothing sent.
    let o = rpcx(&["call", &s.addr, "Arith.Mul", "{}", "--tls"]);
    assert_status(&o, 2);
    let o = rpcx(&["bench", &s.addr, "-d", "300ms", "--tls", "--insecure", "--json"]);
    assert_status(&o, 0);
    // Plain rpcx to a TLS server: the connection is lost, the callers stop (no spin).
    let o = rpcx(&["bench", &s.addr, "-d", "5s", "-c", "3", "--json"]);
    assert_status(&o, 1);
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["errors"], 3, "{r}");
    // The caller whose call was in flight gets `connection lost`; one that starts its
    // call after the loss is refused as `client is shut down`. Which is recorded first
    // is a race between the callers' threads.
    let first = r["first_error"].as_str().unwrap();
    assert!(first.contains("connection lost") || first.contains("client is shut down"), "{r}");
}

/// The Go-produced frames of core/tests/fixtures/vectors.txt.
fn vectors() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/fixtures/vectors.txt");
    let text = std::fs::read_to_string(path).expect("vectors.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (n, h) = l.split_once(' ').expect("NAME HEX");
            (n.to_owned(), h.trim().to_owned())
        })
        .collect()
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

#[test]
fn decode_go_vectors() {
    let vs = vectors();
    assert!(vs.len() >= 18, "{} vectors", vs.len());
    for (name, hex) in &vs {
        let o = rpcx(&["decode", "--json", hex]);
        assert_status(&o, 0);
        let frames = json_lines(&o);
        assert_eq!(frames.len(), 1, "{name}");
        assert_eq!(frames[0]["len"], hex.len() / 2, "{name}");
    }
    let get = |n: &str| vs.iter().find(|v| v.0 == n).map(|v| v.1.clone()).unwrap();

    let f = &json_lines(&rpcx(&["decode", "--json", &get("V11req")]))[0];
    assert_eq!(f["type"], "request");
    assert_eq!(f["seq"], 1234567890u64);
    assert_eq!(f["serialize"], "json");
    assert_eq!((f["path"].as_str(), f["method"].as_str()), (Some("Arith"), Some("Mul")));
    assert_eq!(f["payload"], serde_json::json!({"A": 10, "B": 20}));

    let f = &json_lines(&rpcx(&["decode", "--json", &get("V3")]))[0];
    assert_eq!(f["type"], "response");
    assert_eq!(f["payload"], serde_json::json!({"C": 200}));
    assert_eq!(f["payload_encoding"], "msgpack");

    let f = &json_lines(&rpcx(&["decode", "--json", &get("V4b")]))[0];
    assert_eq!(f["status"], "error");
    assert_eq!(f["metadata"]["__rpcx_error__"], "rpcx: can't find method Foo");

    let f = &json_lines(&rpcx(&["decode", "--json", &get("V5a")]))[0];
    assert_eq!(f["heartbeat"], true);

    // Gzip inflated under the core's limits.
    let f = &json_lines(&rpcx(&["decode", "--json", &get("V8")]))[0];
    assert_eq!(f["compress"], "gzip");
    assert!(f["payload_len"].as_u64().unwrap() > f["wire_payload_len"].as_u64().unwrap());

    // Text form.
    let o = rpcx(&["decode", &get("V12a")]);
    assert_status(&o, 0);
    let t = stdout(&o);
    assert!(t.starts_with("#0 @0 request seq=5 len=69 serialize=msgpack compress=none\n  Arith.Mul\n"), "{t}");
    assert!(t.contains("meta a=1") && t.contains("meta bb=22") && t.contains(r#"(msgpack): {"A":10,"B":20}"#), "{t}");

    // Every vector in one stream, as binary on stdin: the offsets add up.
    let all: Vec<u8> = vs.iter().flat_map(|(_, h)| hex::decode(h).unwrap()).collect();
    let o = rpcx_in(&["decode", "--json"], Some(&all));
    assert_status(&o, 0);
    let frames = json_lines(&o);
    assert_eq!(frames.len(), vs.len());
    let mut at = 0u64;
    for (f, (name, h)) in frames.iter().zip(&vs) {
        assert_eq!(f["offset"], at, "{name}");
        at += h.len() as u64 / 2;
    }
}

#[test]
fn decode_malformed_reports_the_offset() {
    let vs = vectors();
    let v2 = &vs.iter().find(|v| v.0 == "V2").unwrap().1;
    // A whole frame, then one cut short.
    let cut = format!("{v2}{}", &v2[..40]);
    let o = rpcx(&["decode", &cut]);
    assert_status(&o, 1);
    assert!(stdout(&o).starts_with("#0 @0 request"), "{}", stdout(&o));
    assert_eq!(
        stderr(&o),
        "rpcx: malformed frame at byte offset 47: unexpected EOF: stream ended with 20 bytes of an incomplete frame\n"
    );
    // Bad magic after a frame.
    let o = rpcx(&["decode", &format!("{v2}0700")]);
    assert_status(&o, 1);
    assert_eq!(stderr(&o), "rpcx: malformed frame at byte offset 47: wrong magic number: 7\n");
    // A section longer than the frame.
    let o = rpcx(&["decode", "080000300000000000000000000000080000ffff00000000"]);
    assert_status(&o, 1);
    assert!(stderr(&o).contains("byte offset 0: service path length 65535 overruns"), "{}", stderr(&o));
    // Corrupt gzip: reported on its frame, exit status 1, no panic.
    let o = rpcx(&["decode", "--json", "080004000000000000000001000000160000000153000000014d000000000000000400010203"]);
    assert_status(&o, 1);
    let f = &json_lines(&o)[0];
    assert!(f["payload_error"].is_string(), "{f}");
    // Random garbage of every length never panics (status 1 or 2, never 101).
    let mut x: u32 = 12345;
    for len in 0..64 {
        let bytes: Vec<u8> = std::iter::once(8u8)
            .chain((0..len).map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            }))
            .collect();
        let o = rpcx_in(&["decode"], Some(&bytes));
        assert!(matches!(o.status.code(), Some(0..=2)), "len {len}: {}", stderr(&o));
    }
}

#[test]
fn dump_between_client_and_server() {
    let s = serve(&[]);
    let d =
        Background::start(&["dump", "--listen", "127.0.0.1:0", "--upstream", &s.addr, "--json", "--max-conns", "1"]);
    let o = rpcx(&["call", &d.addr, "Arith.Mul", r#"{"A":7,"B":6}"#, "-m", "trace=on"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 42\n}\n");
    let out = d.finish();
    let frames: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(frames.len(), 2, "{out}");
    assert_eq!(frames[0]["dir"], "client->server");
    assert_eq!(frames[0]["type"], "request");
    assert_eq!(frames[0]["metadata"]["trace"], "on");
    assert_eq!(frames[0]["payload"], serde_json::json!({"A": 7, "B": 6}));
    assert_eq!(frames[1]["dir"], "server->client");
    assert_eq!(frames[1]["type"], "response");
    assert_eq!(frames[1]["payload"], serde_json::json!({"C": 42}));
    assert_eq!(frames[0]["seq"], frames[1]["seq"]);
}

#[test]
fn bench_closed_loop_and_fixed_rate() {
    let s = serve(&[]);
    let o = rpcx(&["bench", &s.addr, "-d", "500ms", "-c", "4", "--conns", "2", "--json"]);
    assert_status(&o, 0);
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["errors"], 0);
    assert_eq!(r["method"], "Echo.Raw");
    assert_eq!(r["payload_bytes"], 581);
    assert!(r["calls"].as_u64().unwrap() > 0, "{r}");
    let (p50, p99, max) = (r["p50_us"].as_f64().unwrap(), r["p99_us"].as_f64().unwrap(), r["max_us"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{r}");

    // 200 calls/s for 0.5 s: 100 calls due, all made.
    let o = rpcx(&["bench", &s.addr, "Arith.Mul", "-d", "500ms", "--rate", "200", "--json"]);
    assert_status(&o, 0);
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["mode"], "rate");
    assert_eq!(r["calls"], 100, "{r}");

    let o = rpcx(&["bench", &s.addr, "-d", "300ms", "--histogram"]);
    assert_status(&o, 0);
    let t = stdout(&o);
    assert!(t.contains("calls/s") && t.contains("p99.9") && t.contains("latency histogram") && t.contains('#'), "{t}");

    // Errors are counted and make the exit status 1.
    let o = rpcx(&["bench", &s.addr, "Arith.Nope", "-d", "200ms", "--json"]);
    assert_status(&o, 1);
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert!(r["errors"].as_u64().unwrap() > 0);
    assert!(r["first_error"].as_str().unwrap().contains("can't find method Nope"));
}

/// Ethernet + IPv4 + TCP around `payload`.
fn tcp_packet(src: ([u8; 4], u16), dst: ([u8; 4], u16), seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + 20 + payload.len()) as u16;
    p.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&src.0);
    p.extend_from_slice(&dst.0);
    p.extend_from_slice(&src.1.to_be_bytes());
    p.extend_from_slice(&dst.1.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&[0x50, if syn { 0x02 } else { 0x18 }, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A classic pcap (little-endian, Ethernet) of these packets.
fn pcap(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0];
    for (i, p) in packets.iter().enumerate() {
        for v in [i as u32, 0, p.len() as u32, p.len() as u32] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(p);
    }
    f
}

/// A pcapng (little-endian, one Ethernet interface) of these packets.
fn pcapng(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut f = Vec::new();
    let block = |f: &mut Vec<u8>, ty: u32, body: &[u8]| {
        let len = (12 + body.len().div_ceil(4) * 4) as u32;
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(body);
        f.resize(f.len() + (4 - body.len() % 4) % 4, 0);
        f.extend_from_slice(&len.to_le_bytes());
    };
    block(&mut f, 0x0A0D0D0A, &[0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    block(&mut f, 1, &[1, 0, 0, 0, 0xff, 0xff, 0, 0]);
    for p in packets {
        let mut body = Vec::new();
        for v in [0u32, 0, 0, p.len() as u32, p.len() as u32] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        body.extend_from_slice(p);
        block(&mut f, 6, &body);
    }
    f
}

#[test]
fn decode_pcap_and_pcapng_reassembles_tcp_flows() {
    let vs = vectors();
    let get = |n: &str| hex::decode(&vs.iter().find(|v| v.0 == n).unwrap().1).unwrap();
    let (client, server) = (([10, 0, 0, 1], 40000), ([10, 0, 0, 2], 8972));
    // Requests V11req + V2 in three segments, sent out of order with a retransmission.
    let up: Vec<u8> = [get("V11req"), get("V2")].concat();
    let isn = 0xffff_fff0u32; // wraps inside the stream
    let seg =
        |from: usize, to: usize| tcp_packet(client, server, isn.wrapping_add(1 + from as u32), false, &up[from..to]);
    // Responses V11resp + V3 in one segment, the capture starting mid-stream.
    let down: Vec<u8> = [get("V11resp"), get("V3")].concat();
    let packets = vec![
        tcp_packet(client, server, isn, true, &[]),
        seg(0, 30),
        seg(70, up.len()),
        seg(30, 70),
        seg(20, 60),
        tcp_packet(server, client, 5000, false, &down),
    ];
    for (kind, file) in [("pcap", pcap(&packets)), ("pcapng", pcapng(&packets))] {
        let path = std::env::temp_dir().join(format!("rpcx-cli-{}.{kind}", std::process::id()));
        std::fs::write(&path, &file).unwrap();
        let o = rpcx(&["decode", "--json", "--file", path.to_str().unwrap()]);
        let text = rpcx(&["decode", "--file", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
        assert_status(&o, 0);
        let frames = json_lines(&o);
        assert_eq!(frames.len(), 4, "{kind}: {}", stdout(&o));
        let up_flow = "10.0.0.1:40000->10.0.0.2:8972";
        let down_flow = "10.0.0.2:8972->10.0.0.1:40000";
        assert_eq!((frames[0]["flow"].as_str(), &frames[0]["offset"]), (Some(up_flow), &serde_json::json!(0)));
        assert_eq!(frames[0]["payload"], serde_json::json!({"A": 10, "B": 20}), "{kind}");
        assert_eq!(frames[1]["offset"], 55, "{kind}");
        assert_eq!(frames[1]["serialize"], "msgpack");
        assert_eq!(frames[2]["flow"], down_flow);
        assert_eq!(frames[2]["payload"], serde_json::json!({"C": 200}));
        assert_eq!(frames[3]["type"], "response");
        assert_status(&text, 0);
        assert!(stdout(&text).starts_with(&format!("[{up_flow}] @0 request seq=1234567890")), "{}", stdout(&text));
    }
    // A segment missing from the capture: reported, exit status 1.
    let lossy = pcap(&[packets[0].clone(), packets[1].clone(), packets[2].clone()]);
    let o = rpcx_in(&["decode"], Some(&lossy));
    assert_status(&o, 1);
    assert!(stderr(&o).contains("40 bytes missing from the capture at byte offset 30"), "{}", stderr(&o));
    // A truncated capture file is an error, not a panic.
    let o = rpcx_in(&["decode"], Some(&pcap(&packets)[..100]));
    assert_status(&o, 1);
}

/// The Go client driver and server (`interop/go/cmd/client`, `cmd/server`), built once
/// per test process. Go is required, as for the interop suite: these tests never skip.
fn go_bins() -> (std::path::PathBuf, std::path::PathBuf) {
    static BINS: std::sync::OnceLock<(std::path::PathBuf, std::path::PathBuf)> = std::sync::OnceLock::new();
    BINS.get_or_init(|| {
        // Built in a private directory, then renamed into place: another test process
        // may be building or running them at the same time.
        let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("go-build-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let module = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/go");
        let go = std::env::var_os("GO").unwrap_or_else(|| "go".into());
        let mut out = dir.clone().into_os_string();
        out.push("/");
        let mut cmd = Command::new(go);
        cmd.args(["build", "-o"]).arg(out).args(["./cmd/client", "./cmd/server"]).current_dir(module);
        if std::env::var_os("GONOSUMDB").is_none() {
            cmd.env("GONOSUMDB", "github.com/rpcxio/*");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("these tests need Go (>= 1.21 on PATH, or GO=/path/to/go), as the interop suite does");
        for _ in 0..6000 {
            if let Some(st) = child.try_wait().expect("wait go build") {
                assert!(st.success(), "go build ./cmd/client ./cmd/server failed: {st}");
                let (client, server) = (base.join("go-client"), base.join("go-server"));
                std::fs::rename(dir.join("client"), &client).expect("move the Go client into place");
                std::fs::rename(dir.join("server"), &server).expect("move the Go server into place");
                let _ = std::fs::remove_dir_all(&dir);
                return (client, server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("go build took over 10 minutes");
    })
    .clone()
}

/// The Go rpcx server, killed when dropped.
struct GoServer {
    child: Child,
    addr: String,
}

impl GoServer {
    fn start() -> Self {
        let mut child = Command::new(go_bins().1)
            .args(["-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the Go server");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(addr) = line.strip_prefix("LISTENING ") else {
            let _ = child.kill();
            panic!("the Go server printed {line:?}");
        };
        GoServer { addr: addr.to_owned(), child }
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn call_and_bench_against_the_go_server() {
    let g = GoServer::start();
    let a = g.addr.as_str();
    let o = rpcx(&["call", a, "Arith.Mul", r#"{"A":7,"B":6}"#, "-s", "msgpack"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 42\n}\n");
    let o = rpcx(&["call", a, "ProtoArith.Mul", "080a1014", "-s", "protobuf"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "08c801\n");
    // With the interop schema: JSON in, JSON out.
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/go/proto/arith.proto");
    let types = ["--request-type", "rpcxinterop.ProtoArgs", "--reply-type", "rpcxinterop.ProtoReply"];
    let mut cmd = vec!["call", a, "ProtoArith.Mul", r#"{"A":10,"B":20}"#, "--proto", proto];
    cmd.extend_from_slice(&types);
    let o = rpcx(&cmd);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 200\n}\n");
    let o = rpcx(&["call", a, "Arith.Error", r#"{"A":7}"#]);
    assert_status(&o, 1);
    assert_eq!(stderr(&o), "rpcx: server error: intentional error A=7\n");
    let o = rpcx(&["call", a, "Nope.Nope", "{}"]);
    assert_status(&o, 2);
    assert_eq!(stderr(&o), "rpcx: server error: rpcx: can't find service Nope\n");
    for args in [&["Echo.Raw", "--bench-message"][..], &["Arith.Mul", "--rate", "300"][..]] {
        let mut cmd = vec!["bench", a, "-d", "300ms", "--conns", "2", "--json"];
        cmd.extend_from_slice(args);
        let o = rpcx(&cmd);
        assert_status(&o, 0);
        let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
        assert_eq!(r["errors"], 0, "{args:?}: {r}");
        assert!(r["calls"].as_u64().unwrap() > 0, "{args:?}: {r}");
    }
}

#[test]
fn dump_between_go_client_and_rust_server() {
    let client = go_bins().0;
    let s = serve(&[]);
    let d =
        Background::start(&["dump", "--listen", "127.0.0.1:0", "--upstream", &s.addr, "--json", "--max-conns", "1"]);
    let hostport = d.addr.strip_prefix("tcp@").unwrap_or(&d.addr).to_owned();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx
            .send(Command::new(client).args(["-addr", &hostport, "-scenario", "msgpack", "-watchdog", "30s"]).output());
    });
    let o = rx.recv_timeout(LIMIT).expect("Go client finished in time").expect("Go client ran");
    assert!(o.status.success() && stdout(&o).contains("PASS msgpack"), "{}\n{}", stdout(&o), stderr(&o));
    let out = d.finish();
    let frames: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let req = frames.iter().find(|f| f["dir"] == "client->server" && f["method"] == "Mul").expect("the Go request");
    assert_eq!((req["path"].as_str(), req["serialize"].as_str()), (Some("Arith"), Some("msgpack")), "{out}");
    assert_eq!(req["payload"], serde_json::json!({"A": 10, "B": 20}), "{out}");
    let resp = frames.iter().find(|f| f["dir"] == "server->client" && f["seq"] == req["seq"]).expect("the reply");
    assert_eq!(resp["type"], "response");
    assert_eq!(resp["payload"], serde_json::json!({"C": 200}), "{out}");
}

#[test]
fn call_and_bench_over_a_unix_socket() {
    let path = std::env::temp_dir().join(format!("rpcx-cli-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let addr = format!("unix@{}", path.display());
    let s = Background::start(&["serve", "--addr", &addr]);
    assert_eq!(s.addr, addr);
    let o = rpcx(&["call", &addr, "Arith.Mul", r#"{"A":9,"B":9}"#, "-s", "msgpack"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "{\n  \"C\": 81\n}\n");
    let o = rpcx(&["bench", &addr, "-d", "200ms", "--bench-message", "--json"]);
    assert_status(&o, 0);
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["payload_bytes"], 581);
    assert_eq!(r["errors"], 0);
    drop(s);
    let _ = std::fs::remove_file(&path);
}

/// One rpcx frame: version 0, no compression, seq 9.
fn frame(response: bool, serialize: u8, path: &str, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for section in [path.as_bytes(), method.as_bytes(), &[], payload] {
        body.extend_from_slice(&(section.len() as u32).to_be_bytes());
        body.extend_from_slice(section);
    }
    let mut f = vec![0x08, 0, if response { 0x80 } else { 0 }, serialize << 4];
    f.extend_from_slice(&9u64.to_be_bytes());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f
}

#[test]
fn decode_protobuf_payloads_through_a_schema() {
    let dir = std::env::temp_dir().join(format!("rpcx-cli-decode-proto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let proto = dir.join("arith.proto");
    std::fs::write(
        &proto,
        "syntax = \"proto3\";\npackage demo;\nmessage Args { int64 A = 1; int64 B = 2; }\n\
         message Reply { int64 C = 1; }\nservice ProtoArith { rpc Mul(Args) returns (Reply); }\n",
    )
    .unwrap();
    let frames = [
        frame(false, 2, "ProtoArith", "Mul", &[0x08, 10, 0x10, 20]),
        frame(true, 2, "ProtoArith", "Mul", &[0x08, 0xc8, 0x01]),
        frame(false, 2, "Other", "Thing", &[0x08, 1]),
    ]
    .concat();
    let o = rpcx(&["decode", "--json", "--proto", proto.to_str().unwrap(), &hex::encode(&frames)]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_status(&o, 0);
    let f = json_lines(&o);
    assert_eq!(
        (&f[0]["payload"], &f[0]["payload_encoding"]),
        (&serde_json::json!({"A": 10, "B": 20}), &"protobuf".into())
    );
    assert_eq!(f[1]["payload"], serde_json::json!({"C": 200}));
    // No rpc in the schema for it: hex, as without a schema.
    assert_eq!((&f[2]["payload"], &f[2]["payload_encoding"]), (&"0801".into(), &"hex".into()));
}

#[test]
fn dump_from_a_unix_socket_to_tcp() {
    let s = serve(&[]);
    let path = std::env::temp_dir().join(format!("rpcx-cli-dump-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listen = format!("unix@{}", path.display());
    let d = Background::start(&["dump", "--listen", &listen, "--upstream", &s.addr, "--max-conns", "1"]);
    assert_eq!(d.addr, listen);
    let o = rpcx(&["call", &listen, "Echo.Raw", "through a unix socket", "-s", "raw"]);
    assert_status(&o, 0);
    assert_eq!(stdout(&o), "through a unix socket\n");
    let out = d.finish();
    assert!(out.contains("[0 client->server] @0 request") && out.contains("[0 server->client] @0 response"), "{out}");
    assert!(out.contains("(text): through a unix socket"), "{out}");
    assert!(!path.exists(), "the socket file is removed on exit");
}

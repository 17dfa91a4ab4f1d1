//! The Prometheus example's setup (rpcx-tokio server and client with the hooks,
//! metrics-exporter-prometheus serving HTTP on loopback), scraped over HTTP after real
//! calls: one success, one error, one oneway request.

#[path = "../examples/common/mod.rs"]
mod common;

use rpcx_examples_common::Args;
use rpcx_tokio::SerializeType;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {l}"));
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {l}"));
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label {kv} in {l}"));
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
            };
            Sample { name: name.to_owned(), labels, value: value.parse().unwrap_or_else(|_| panic!("bad value: {l}")) }
        })
        .collect()
}

/// The one sample `name` with exactly `labels` (Prometheus names: dots are underscores).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let mut found = samples.iter().filter(|s| s.name == name && s.labels == want);
    let v = found.next().map(|s| s.value);
    assert!(found.next().is_none(), "{name} {labels:?} twice");
    v
}

fn rpc(method: &str) -> Vec<(&str, &str)> {
    vec![("rpc_system", "rpcx"), ("rpc_service", "Arith"), ("rpc_method", method)]
}

fn status<'a>(method: &'a str, status: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut l = rpc(method);
    l.push(("otel_status_code", status));
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_shows_calls_over_loopback() {
    let o = common::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(o.metrics_addr.ip().is_loopback());
    common::round(&o.client, 7).await.unwrap();

    // The oneway request ends on the server after the client returned: scrape until
    // the server has timed it (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        o.publish_totals();
        let text = common::scrape(o.metrics_addr).await.unwrap();
        let samples = parse(&text);
        let done = value(&samples, "rpc_server_duration_count", &status("Mul", "OK")) == Some(2.0)
            && value(&samples, "rpcx_server_requests", &[]) == Some(3.0);
        if done {
            for family in [
                "rpc_server_duration",
                "rpc_server_request_size",
                "rpc_server_response_size",
                "rpc_client_duration",
                "rpc_client_request_size",
                "rpc_client_response_size",
            ] {
                assert!(text.contains(&format!("# TYPE {family} histogram")), "{family} is a histogram:\n{text}");
            }
            for family in ["rpc_server_requests_per_rpc", "rpc_server_responses_per_rpc", "rpc_client_requests_per_rpc"]
            {
                assert!(text.contains(&format!("# TYPE {family} counter")), "{family} is a counter:\n{text}");
            }
            assert!(text.contains("# TYPE rpcx_server_connections_open gauge"), "{text}");
            break samples;
        }
        assert!(Instant::now() < deadline, "the oneway request was never timed:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mul_size = rpcx_tokio::core::codec::to_payload(SerializeType::MSGPACK, &Args { a: 7, b: 6 }).unwrap().len();
    let oneway_size = rpcx_tokio::core::codec::to_payload(SerializeType::MSGPACK, &Args { a: 7, b: 7 }).unwrap().len();
    let div_size = rpcx_tokio::core::codec::to_payload(SerializeType::MSGPACK, &Args { a: 7, b: 2 }).unwrap().len();
    let reply_size =
        rpcx_tokio::core::codec::to_payload(SerializeType::MSGPACK, &rpcx_examples_common::Reply { c: 42 })
            .unwrap()
            .len();
    for side in ["server", "client"] {
        let n = |s: &str| format!("rpc_{side}_{s}");
        let v = |s: &str, l: &[(&str, &str)]| value(&samples, &n(s), l);
        // Arith.Mul: a call and a oneway request.
        assert_eq!(v("requests_per_rpc", &rpc("Mul")), Some(2.0), "{side}");
        assert_eq!(v("request_size_count", &rpc("Mul")), Some(2.0), "{side}");
        assert_eq!(v("request_size_sum", &rpc("Mul")), Some((mul_size + oneway_size) as f64), "{side}");
        assert_eq!(v("duration_count", &status("Mul", "OK")), Some(2.0), "{side}");
        assert_eq!(v("responses_per_rpc", &status("Mul", "OK")), Some(1.0), "{side}: the oneway has no response");
        assert_eq!(v("response_size_count", &status("Mul", "OK")), Some(1.0), "{side}");
        assert_eq!(v("response_size_sum", &status("Mul", "OK")), Some(reply_size as f64), "{side}");
        assert_eq!(v("duration_count", &status("Mul", "ERROR")), None, "{side}: Mul never failed");
        // Arith.Div: no such method, an error.
        assert_eq!(v("requests_per_rpc", &rpc("Div")), Some(1.0), "{side}");
        assert_eq!(v("request_size_sum", &rpc("Div")), Some(div_size as f64), "{side}");
        assert_eq!(v("responses_per_rpc", &status("Div", "ERROR")), Some(1.0), "{side}");
        assert_eq!(v("duration_count", &status("Div", "ERROR")), Some(1.0), "{side}");
        assert_eq!(v("response_size_sum", &status("Div", "ERROR")), Some(0.0), "{side}");
        assert_eq!(v("responses_per_rpc", &status("Div", "OK")), None, "{side}: Div never succeeded");
        // Buckets: the +Inf bucket holds every sample, and a duration is a few ms at most.
        let mut inf = status("Mul", "OK");
        inf.push(("le", "+Inf"));
        assert_eq!(v("duration_bucket", &inf), Some(2.0), "{side}");
        let sum = v("duration_sum", &status("Mul", "OK")).unwrap();
        assert!((0.0..10_000.0).contains(&sum), "{side}: {sum} ms");
    }
    // The server's totals.
    let t = |name: &str| value(&samples, name, &[]);
    assert_eq!(t("rpcx_server_connections_open"), Some(1.0));
    assert_eq!(t("rpcx_server_connections_accepted"), Some(1.0));
    assert_eq!(t("rpcx_server_requests"), Some(3.0));
    assert_eq!(t("rpcx_server_responses"), Some(2.0));
    assert_eq!(t("rpcx_server_protocol_errors"), Some(0.0));
    assert!(t("rpcx_server_memory_peak").is_some_and(|b| b > 0.0));
    o.stop().await;
}

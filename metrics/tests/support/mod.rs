//! A `metrics::Recorder` for tests that keeps every value (nothing is drained on read),
//! and the service the tests serve.
#![allow(dead_code, unreachable_pub)]

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

#[derive(Default)]
struct Store {
    counters: BTreeMap<(String, Labels), Arc<AtomicU64>>,
    gauges: BTreeMap<(String, Labels), Arc<AtomicU64>>,
    histograms: BTreeMap<(String, Labels), Arc<Values>>,
    units: BTreeMap<String, Unit>,
}

/// Every counter, gauge and histogram value recorded, by name and labels.
#[derive(Default, Clone)]
pub struct TestRecorder(Arc<Mutex<Store>>);

fn id(key: &Key) -> (String, Labels) {
    let mut labels: Labels = key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect();
    labels.sort();
    (key.name().to_owned(), labels)
}

fn matches(labels: &Labels, want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(key, unit);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.0.lock().unwrap().counters.entry(id(key)).or_default().clone())
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.0.lock().unwrap().gauges.entry(id(key)).or_default().clone())
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.0.lock().unwrap().histograms.entry(id(key)).or_default().clone())
    }
}

impl TestRecorder {
    fn describe(&self, key: KeyName, unit: Option<Unit>) {
        if let Some(u) = unit {
            self.0.lock().unwrap().units.insert(key.as_str().to_owned(), u);
        }
    }

    /// The recorder as the hooks take it.
    pub fn arc(&self) -> Arc<dyn Recorder + Send + Sync> {
        Arc::new(self.clone())
    }

    /// The sum of the counters `name` whose labels include `want`.
    pub fn counter(&self, name: &str, want: &[(&str, &str)]) -> u64 {
        let s = self.0.lock().unwrap();
        s.counters
            .iter()
            .filter(|((n, l), _)| n == name && matches(l, want))
            .map(|(_, v)| v.load(Ordering::SeqCst))
            .sum()
    }

    /// The gauge `name` whose labels include `want` (the only one).
    pub fn gauge(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let s = self.0.lock().unwrap();
        let mut found = s.gauges.iter().filter(|((n, l), _)| n == name && matches(l, want));
        let v = found.next().map(|(_, v)| f64::from_bits(v.load(Ordering::SeqCst)));
        assert!(found.next().is_none(), "{name} {want:?}: more than one gauge");
        v
    }

    /// The values of the histograms `name` whose labels include `want`.
    pub fn histogram(&self, name: &str, want: &[(&str, &str)]) -> Vec<f64> {
        let s = self.0.lock().unwrap();
        s.histograms
            .iter()
            .filter(|((n, l), _)| n == name && matches(l, want))
            .flat_map(|(_, v)| v.0.lock().unwrap().clone())
            .collect()
    }

    /// The label sets of every series named `name`.
    pub fn series(&self, name: &str) -> Vec<Labels> {
        let s = self.0.lock().unwrap();
        let c = s.counters.keys().chain(s.gauges.keys()).chain(s.histograms.keys());
        c.filter(|(n, _)| n == name).map(|(_, l)| l.clone()).collect()
    }

    /// Every metric name registered.
    pub fn names(&self) -> Vec<String> {
        let s = self.0.lock().unwrap();
        let mut v: Vec<String> =
            s.counters.keys().chain(s.gauges.keys()).chain(s.histograms.keys()).map(|(n, _)| n.clone()).collect();
        v.dedup();
        v
    }

    /// The unit `name` was described with.
    pub fn unit(&self, name: &str) -> Option<Unit> {
        self.0.lock().unwrap().units.get(name).copied()
    }
}

/// Poll `cond` until it holds, failing after `within` (for what the server records after
/// the client has returned: a oneway request's end).
pub fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The labels of one series: `rpc.system=rpcx`, service, method (and a status).
pub fn rpc<'a>(service: &'a str, method: &'a str) -> [(&'a str, &'a str); 3] {
    [("rpc.system", "rpcx"), ("rpc.service", service), ("rpc.method", method)]
}

/// [`rpc`] with `otel.status_code`.
pub fn rpc_status<'a>(service: &'a str, method: &'a str, status: &'a str) -> [(&'a str, &'a str); 4] {
    [("rpc.system", "rpcx"), ("rpc.service", service), ("rpc.method", method), ("otel.status_code", status)]
}

/// `Echo.Twice` (the payload twice), `Echo.Fail` (an error), `Echo.Note` (for oneway
/// requests: no reply), `Echo.Hang` (never answers); `Other.Say` (the payload back).
pub fn router() -> rpcx_core::service::Router {
    use rpcx_core::bytes::Bytes;
    use rpcx_core::service::{Context, Router, Service, ServiceError};
    let echo = Service::new("Echo")
        .raw_method("Twice", |_c: Context, p: Bytes| async move { Ok([&p[..], &p[..]].concat().into()) })
        .raw_method(
            "Fail",
            |_c: Context, _p: Bytes| async move { Err::<Bytes, _>(ServiceError::new("failed on purpose")) },
        )
        .raw_method("Note", |_c: Context, _p: Bytes| async move { Ok(Bytes::new()) })
        .raw_method("Hang", |_c: Context, _p: Bytes| std::future::pending::<Result<Bytes, ServiceError>>());
    let other = Service::new("Other").raw_method("Say", |_c: Context, p: Bytes| async move { Ok(p) });
    Router::new().service(echo).service(other)
}

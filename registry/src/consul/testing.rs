//! Consul for tests and examples (feature `test-support`).
//!
//! No Consul server can be installed on the machines this crate is developed on (it is
//! not in Debian, and current releases are under the BUSL), so [`ConsulStandIn`] is a
//! small in-memory **stand-in** for the part of Consul's HTTP API that this backend and
//! Go's rpcx-consul (libkv + `hashicorp/consul/api`) use. It is not Consul: it proves
//! that both clients agree on requests and layout, with Consul's documented semantics
//! for that subset. [`ConsulAgent`] starts a real `consul agent -dev` instead when one
//! is on `PATH`.
//!
//! # The subset the stand-in implements
//!
//! * `GET /v1/kv/<key>`: the entry as a one-element JSON array (`Key`, `CreateIndex`,
//!   `ModifyIndex`, `LockIndex`, `Flags`, base64 `Value` or `null`, `Session` when
//!   held); 404 with `X-Consul-Index` when missing; `?recurse` lists the prefix (404 if
//!   nothing matches); `?keys` (with `?separator`) lists key names; `?raw` answers the
//!   bare value. Blocking queries: `?index=N&wait=<go duration>` (default 5 min, at most
//!   10 min, no jitter) answer as soon as the query's index exceeds `N`, else when the
//!   wait passes. The index follows Consul's rules: a single key's `ModifyIndex`, or for
//!   a missing key and for listings the highest index of the matching entries and of the
//!   tombstones of deleted keys under the prefix (the table index when that is 0).
//!   `consistent` and `stale` are accepted and ignored (there is one node).
//! * `PUT /v1/kv/<key>` with the body as value (at most 512 KiB, as Consul):
//!   `?flags=`, `?cas=` (0: only if absent), `?acquire=<session>` (fails with `false`
//!   while another session holds the key; raises `LockIndex` on a new acquisition),
//!   `?release=<session>`; a plain write keeps the key's lock holder, as Consul does.
//!   Answers `true` or `false`. A key must not start with `/`.
//! * `DELETE /v1/kv/<key>` (`?recurse`, `?cas=`), leaving tombstones.
//! * `PUT /v1/session/create` (JSON `Name`, `Behavior` `release` (default) or `delete`,
//!   `TTL` as a Go duration between 10 s and 24 h, else a 500 with Consul's message,
//!   `LockDelay` as a duration string or number, accepted but not enforced), `PUT /v1/session/renew/<id>` (404 if unknown),
//!   `PUT /v1/session/destroy/<id>`, `GET /v1/session/info/<id>`, `GET /v1/session/list`.
//!   A session not renewed within twice its TTL is invalidated (the keys it holds are
//!   deleted under `Behavior=delete`, released otherwise), as Consul does.
//! * `GET /v1/status/leader`.
//!
//! Every GET answers `X-Consul-Index`, `X-Consul-KnownLeader: true` and
//! `X-Consul-LastContact: 0`. Tombstones of deleted keys are kept for the stand-in's
//! lifetime (Consul reaps them after a while). Anything else is a 404, recorded in
//! [`ConsulStandIn::unsupported_requests`] (the interop tests check Go's client made
//! none); there are no ACLs, no datacenters, no namespaces, no health checks, no
//! transactions.
//!
//! **One test-only knob:** [`StandInOptions::session_expiry`] invalidates sessions after
//! a fixed time instead of twice their TTL, so a test can watch a killed server's nodes
//! go in a second. The 10 s minimum TTL is still enforced at session creation, and
//! [`ConsulConfig`](super::ConsulConfig) still refuses TTLs under 10 s.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{KvEntry, MAX_SESSION_TTL, MAX_WAIT, MIN_SESSION_TTL, parse_go_duration};
use base64::Engine as _;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Consul's largest KV value.
const MAX_VALUE: usize = 512 * 1024;
/// The default wait of a blocking query.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// How a [`ConsulStandIn`] behaves.
#[derive(Debug, Clone, Default)]
pub struct StandInOptions {
    /// **Test-only:** invalidate a session this long after its last renewal instead of
    /// Consul's twice its TTL. `None` (the default) is Consul's rule.
    pub session_expiry: Option<Duration>,
}

/// An in-memory stand-in for Consul's KV + session HTTP API (see the module docs for
/// the exact subset) on `127.0.0.1:<free port>`, served by hyper on a thread of its own.
/// Stopped on drop.
#[derive(Debug)]
pub struct ConsulStandIn {
    port: u16,
    state: Arc<Shared>,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<u64>,
    options: StandInOptions,
    /// Requests outside the implemented subset (`METHOD path`).
    unsupported: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
struct State {
    /// The last raft index handed out.
    index: u64,
    /// The last index that changed the KV table (writes, deletes).
    kv_index: u64,
    kv: BTreeMap<String, Entry>,
    /// Deleted keys and the index that deleted them.
    tombstones: BTreeMap<String, u64>,
    sessions: HashMap<String, Session>,
    ids: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    flags: u64,
    value: Vec<u8>,
    session: Option<String>,
}

#[derive(Debug, Clone)]
struct Session {
    name: String,
    behavior_delete: bool,
    ttl: Option<String>,
    lock_delay: Duration,
    create_index: u64,
    /// When it is invalidated unless renewed.
    deadline: Option<Instant>,
    expiry: Option<Duration>,
}

impl ConsulStandIn {
    /// Start one with Consul's rules.
    pub fn start() -> io::Result<ConsulStandIn> {
        Self::start_with(StandInOptions::default())
    }

    /// Start one with `options`.
    pub fn start_with(options: StandInOptions) -> io::Result<ConsulStandIn> {
        let port = crate::etcd::testing::free_port()?;
        let (changed, _) = tokio::sync::watch::channel(0);
        let state = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed,
            options,
            unsupported: Mutex::new(Vec::new()),
        });
        let mut s = ConsulStandIn { port, state, running: None };
        s.spawn()?;
        Ok(s)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>` (the form Go's libkv takes).
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop serving: the listener and every connection (blocking queries included) are
    /// closed. The data is kept until [`restart`](Self::restart) says otherwise.
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.send(());
            let _ = r.thread.join();
        }
    }

    /// Stop if running and serve again on the same port, with the data (sessions get a
    /// fresh TTL, as after a Consul leader election) or empty, every index back to 0, as
    /// a rebuilt Consul.
    pub fn restart(&mut self, keep_data: bool) -> io::Result<()> {
        self.stop();
        {
            let mut st = self.state.lock();
            if keep_data {
                let now = Instant::now();
                for s in st.sessions.values_mut() {
                    s.deadline = s.expiry.map(|e| now + e);
                }
            } else {
                *st = State::default();
            }
        }
        self.spawn()
    }

    /// The sessions' `(ID, Behavior, TTL)`, for layout checks.
    pub fn sessions(&self) -> Vec<(String, String, Option<String>)> {
        let st = self.state.lock();
        let mut out: Vec<_> = st
            .sessions
            .iter()
            .map(|(id, s)| (id.clone(), if s.behavior_delete { "delete" } else { "release" }.to_owned(), s.ttl.clone()))
            .collect();
        out.sort();
        out
    }

    /// Every request so far that fell outside the implemented subset (an unknown path
    /// or method), as `METHOD path`: a client needing more than the stand-in offers.
    pub fn unsupported_requests(&self) -> Vec<String> {
        self.state.unsupported.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn spawn(&mut self) -> io::Result<()> {
        let port = self.port;
        let shared = self.state.clone();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("consul-stand-in".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match bind_reusing(port) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                tokio::select! {
                    _ = stop_rx => {}
                    _ = serve(listener, shared.clone()) => {}
                    _ = reap(shared) => {}
                }
            });
            // Dropping the runtime cancels every connection task.
            drop(rt);
        })?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {
                self.running = Some(Running { stop, thread });
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the Consul stand-in did not start")),
        }
    }
}

impl Drop for ConsulStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Listen on `port` even while connections of a previous run linger in `TIME_WAIT`
/// (on the stand-in's runtime).
fn bind_reusing(port: u16) -> io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(1024)
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tell blocking queries something changed.
    fn notify(&self, index: u64) {
        self.changed.send_replace(index);
    }
}

async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Invalidate sessions whose deadline passed.
async fn reap(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut st = shared.lock();
        let expired: Vec<String> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            continue;
        }
        for id in &expired {
            st.invalidate(id);
        }
        let index = st.index;
        drop(st);
        shared.notify(index);
    }
}

impl State {
    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn kv_write(&mut self) -> u64 {
        let i = self.next_index();
        self.kv_index = i;
        i
    }

    fn delete_key(&mut self, key: &str, index: u64) -> bool {
        if self.kv.remove(key).is_some() {
            self.tombstones.insert(key.to_owned(), index);
            true
        } else {
            false
        }
    }

    /// Destroy or expire a session: delete or release the keys it holds.
    fn invalidate(&mut self, id: &str) {
        let Some(session) = self.sessions.remove(id) else { return };
        let held: Vec<String> =
            self.kv.iter().filter(|(_, e)| e.session.as_deref() == Some(id)).map(|(k, _)| k.clone()).collect();
        let index = if held.is_empty() { self.next_index() } else { self.kv_write() };
        for key in held {
            if session.behavior_delete {
                self.delete_key(&key, index);
            } else if let Some(e) = self.kv.get_mut(&key) {
                e.session = None;
                e.modify_index = index;
            }
        }
    }

    /// The index of a listing of `prefix` (Consul's `kvsListTxn`).
    fn prefix_index(&self, prefix: &str) -> u64 {
        let live =
            self.kv.range(prefix.to_owned()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, e)| e.modify_index);
        let dead =
            self.tombstones.range(prefix.to_owned()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, i)| *i);
        let i = live.chain(dead).max().unwrap_or(0);
        if i == 0 { self.kv_index } else { i }
    }

    fn entries(&self, prefix: &str) -> Vec<(&String, &Entry)> {
        self.kv.range(prefix.to_owned()..).take_while(|(k, _)| k.starts_with(prefix)).collect()
    }

    fn session_json(&self, id: &str, s: &Session) -> serde_json::Value {
        serde_json::json!({
            "ID": id,
            "Name": s.name,
            "Node": "consul-stand-in",
            "LockDelay": u64::try_from(s.lock_delay.as_nanos()).unwrap_or(u64::MAX),
            "Behavior": if s.behavior_delete { "delete" } else { "release" },
            "TTL": s.ttl.clone().unwrap_or_default(),
            "NodeChecks": ["serfHealth"],
            "ServiceChecks": null,
            "CreateIndex": s.create_index,
            "ModifyIndex": s.create_index,
        })
    }
}

fn entry_json(key: &str, e: &Entry) -> KvEntry {
    KvEntry {
        key: key.to_owned(),
        create_index: e.create_index,
        modify_index: e.modify_index,
        lock_index: e.lock_index,
        flags: e.flags,
        value: (!e.value.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
        session: e.session.clone(),
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, index: Option<u64>, body: impl Into<Bytes>) -> Answer {
    let mut b = Response::builder().status(status).header("content-type", "application/json");
    if let Some(i) = index {
        b = b
            .header("x-consul-index", i.max(1).to_string())
            .header("x-consul-knownleader", "true")
            .header("x-consul-lastcontact", "0");
    }
    b.body(Full::new(body.into())).unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn text(status: StatusCode, msg: &str) -> Answer {
    let mut r = answer(status, None, msg.to_owned());
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn json(index: Option<u64>, v: &impl serde::Serialize) -> Answer {
    answer(StatusCode::OK, index, serde_json::to_vec(v).unwrap_or_default())
}

fn yes_no(ok: bool) -> Answer {
    answer(StatusCode::OK, None, if ok { "true" } else { "false" })
}

/// Query parameters, percent-decoded; a flag without `=` has an empty value.
fn params(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(&k.replace('+', " ")), decode(&v.replace('+', " ")))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: Option<&u8>) -> Option<u8> {
    char::from(*c?).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Answer {
    let method = req.method().clone();
    let path = decode(req.uri().path());
    let q = params(req.uri().query());
    let body = match Limited::new(req.into_body(), MAX_VALUE).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
    };
    let reply = if let Some(key) = path.strip_prefix("/v1/kv/") {
        match method.clone() {
            Method::GET => kv_get(shared, key, &q).await,
            Method::PUT => kv_put(shared, key, &q, &body),
            Method::DELETE => kv_delete(shared, key, &q),
            _ => unsupported(),
        }
    } else if let Some(rest) = path.strip_prefix("/v1/session/") {
        session(shared, &method, rest, &body)
    } else if method == Method::GET && path == "/v1/status/leader" {
        answer(StatusCode::OK, None, "\"127.0.0.1:8300\"")
    } else {
        unsupported()
    };
    if reply.headers().contains_key(UNSUPPORTED) {
        shared.unsupported.lock().unwrap_or_else(PoisonError::into_inner).push(format!("{method} {path}"));
    }
    reply
}

/// Marks an answer to a request outside the subset.
const UNSUPPORTED: &str = "x-stand-in-unsupported";

fn unsupported() -> Answer {
    let mut r = text(StatusCode::NOT_FOUND, "not implemented by the Consul stand-in");
    r.headers_mut().insert(UNSUPPORTED, hyper::header::HeaderValue::from_static("1"));
    r
}

async fn kv_get(shared: &Shared, key: &str, q: &HashMap<String, String>) -> Answer {
    let min_index: u64 = q.get("index").and_then(|i| i.parse().ok()).unwrap_or(0);
    let wait = match q.get("wait") {
        Some(w) => match parse_go_duration(w) {
            Some(w) => w.min(MAX_WAIT),
            None => return text(StatusCode::BAD_REQUEST, "Invalid wait time"),
        },
        None => DEFAULT_WAIT,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut changed = shared.changed.subscribe();
    loop {
        let _ = changed.borrow_and_update();
        let (index, reply) = {
            let st = shared.lock();
            kv_read(&st, key, q)
        };
        if min_index == 0 || index > min_index {
            return reply;
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => continue,
            // The wait passed (or the stand-in is stopping): answer what there is.
            _ => {
                let st = shared.lock();
                return kv_read(&st, key, q).1;
            }
        }
    }
}

/// A KV read: the query's index and the answer.
fn kv_read(st: &State, key: &str, q: &HashMap<String, String>) -> (u64, Answer) {
    if q.contains_key("keys") {
        let index = st.prefix_index(key);
        let sep = q.get("separator").filter(|s| !s.is_empty());
        let mut names: Vec<String> = Vec::new();
        for (k, _) in st.entries(key) {
            let name = match sep {
                Some(sep) => match k[key.len()..].find(sep.as_str()) {
                    Some(at) => k[..key.len() + at + sep.len()].to_owned(),
                    None => k.clone(),
                },
                None => k.clone(),
            };
            if names.last() != Some(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return (index, answer(StatusCode::NOT_FOUND, Some(index), ""));
        }
        return (index, json(Some(index), &names));
    }
    if q.contains_key("recurse") {
        let index = st.prefix_index(key);
        let entries: Vec<KvEntry> = st.entries(key).into_iter().map(|(k, e)| entry_json(k, e)).collect();
        if entries.is_empty() {
            return (index, answer(StatusCode::NOT_FOUND, Some(index), ""));
        }
        return (index, json(Some(index), &entries));
    }
    match st.kv.get(key) {
        Some(e) => {
            let index = e.modify_index;
            if q.contains_key("raw") {
                return (index, answer(StatusCode::OK, Some(index), e.value.clone()));
            }
            (index, json(Some(index), &[entry_json(key, e)]))
        }
        None => {
            let index = st.kv_index;
            (index, answer(StatusCode::NOT_FOUND, Some(index), ""))
        }
    }
}

fn kv_put(shared: &Shared, key: &str, q: &HashMap<String, String>, body: &[u8]) -> Answer {
    if key.is_empty() || key.starts_with('/') {
        return text(StatusCode::BAD_REQUEST, "Missing key name or key begins with '/'");
    }
    let flags = match q.get("flags").map(|f| f.parse::<u64>()) {
        Some(Ok(f)) => f,
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "Invalid flags"),
        None => 0,
    };
    let cas = match q.get("cas").map(|c| c.parse::<u64>()) {
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "Invalid cas index"),
        None => None,
    };
    let mut st = shared.lock();
    let existing = st.kv.get(key).cloned();
    if let Some(cas) = cas {
        let ok = match &existing {
            None => cas == 0,
            Some(e) => e.modify_index == cas,
        };
        if !ok {
            return yes_no(false);
        }
    }
    let mut session = existing.as_ref().and_then(|e| e.session.clone());
    let mut lock_index = existing.as_ref().map_or(0, |e| e.lock_index);
    if let Some(s) = q.get("acquire") {
        if !st.sessions.contains_key(s) {
            return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("invalid session \"{s}\""));
        }
        match &session {
            Some(holder) if holder != s => return yes_no(false),
            Some(_) => {}
            None => {
                session = Some(s.clone());
                lock_index += 1;
            }
        }
    } else if let Some(s) = q.get("release") {
        match &session {
            Some(holder) if holder == s => session = None,
            _ => return yes_no(false),
        }
    }
    let index = st.kv_write();
    let create_index = existing.as_ref().map_or(index, |e| e.create_index);
    st.tombstones.remove(key);
    st.kv.insert(
        key.to_owned(),
        Entry { create_index, modify_index: index, lock_index, flags, value: body.to_vec(), session },
    );
    drop(st);
    shared.notify(index);
    yes_no(true)
}

fn kv_delete(shared: &Shared, key: &str, q: &HashMap<String, String>) -> Answer {
    let mut st = shared.lock();
    if q.contains_key("recurse") {
        let keys: Vec<String> = st.entries(key).into_iter().map(|(k, _)| k.clone()).collect();
        let index = st.kv_write();
        for k in keys {
            st.delete_key(&k, index);
        }
        drop(st);
        shared.notify(index);
        return yes_no(true);
    }
    if let Some(cas) = q.get("cas") {
        let Ok(cas) = cas.parse::<u64>() else { return text(StatusCode::BAD_REQUEST, "Invalid cas index") };
        if st.kv.get(key).is_some_and(|e| e.modify_index != cas) {
            return yes_no(false);
        }
    }
    if st.kv.contains_key(key) {
        let index = st.kv_write();
        st.delete_key(key, index);
        drop(st);
        shared.notify(index);
    }
    yes_no(true)
}

fn session(shared: &Shared, method: &Method, rest: &str, body: &[u8]) -> Answer {
    let mut st = shared.lock();
    let index = st.index;
    match (method, rest) {
        (&Method::PUT, "create") => {
            let req: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
                serde_json::json!({})
            } else {
                match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => return text(StatusCode::BAD_REQUEST, &format!("Request decode failed: {e}")),
                }
            };
            let behavior_delete = match req.get("Behavior").and_then(|b| b.as_str()).unwrap_or("release") {
                "delete" => true,
                "release" | "" => false,
                other => {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("Invalid Behavior setting '{other}'"));
                }
            };
            let ttl = req.get("TTL").and_then(|t| t.as_str()).filter(|t| !t.is_empty()).map(str::to_owned);
            let mut expiry = None;
            if let Some(t) = &ttl {
                match parse_go_duration(t) {
                    Some(d) if (MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(&d) => {
                        expiry = Some(shared.options.session_expiry.unwrap_or(d * 2));
                    }
                    // Consul's answer, from its session RPC: a 500 naming the TTL in ns.
                    Some(d) => {
                        return text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &format!("Invalid Session TTL '{}', must be between [10s=24h0m0s]", d.as_nanos()),
                        );
                    }
                    None => return text(StatusCode::BAD_REQUEST, &format!("Request decode failed: bad TTL '{t}'")),
                }
            }
            let lock_delay = match req.get("LockDelay") {
                Some(serde_json::Value::String(s)) => parse_go_duration(s).unwrap_or_default(),
                // Consul reads small numbers as seconds, large ones as nanoseconds.
                Some(serde_json::Value::Number(n)) => match n.as_u64() {
                    Some(n) if n < 1000 => Duration::from_secs(n),
                    Some(n) => Duration::from_nanos(n),
                    None => Duration::ZERO,
                },
                _ => Duration::from_secs(15),
            };
            let name = req.get("Name").and_then(|n| n.as_str()).unwrap_or("").to_owned();
            st.ids += 1;
            let id = session_id(st.ids);
            let create_index = st.next_index();
            let deadline = expiry.map(|e| Instant::now() + e);
            st.sessions
                .insert(id.clone(), Session { name, behavior_delete, ttl, lock_delay, create_index, deadline, expiry });
            drop(st);
            shared.notify(create_index);
            json(None, &serde_json::json!({ "ID": id }))
        }
        (&Method::PUT, r) if r.starts_with("renew/") => {
            let id = &r["renew/".len()..];
            let Some(s) = st.sessions.get_mut(id) else {
                return text(StatusCode::NOT_FOUND, &format!("Session id '{id}' not found"));
            };
            s.deadline = s.expiry.map(|e| Instant::now() + e);
            let s = s.clone();
            json(None, &[st.session_json(id, &s)])
        }
        (&Method::PUT, r) if r.starts_with("destroy/") => {
            let id = &r["destroy/".len()..];
            st.invalidate(id);
            let index = st.index;
            drop(st);
            shared.notify(index);
            yes_no(true)
        }
        (&Method::GET, r) if r.starts_with("info/") => {
            let id = &r["info/".len()..];
            let found: Vec<_> = st.sessions.get(id).map(|s| st.session_json(id, s)).into_iter().collect();
            json(Some(index), &found)
        }
        (&Method::GET, "list") => {
            let all: Vec<_> = st.sessions.iter().map(|(id, s)| st.session_json(id, s)).collect();
            json(Some(index), &all)
        }
        _ => unsupported(),
    }
}

/// A UUID-shaped session ID, unique within the process.
fn session_id(n: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    let a = h.finish();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(a ^ n.rotate_left(17));
    let b = h.finish();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// What [`raw_http`] got back.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// The HTTP status.
    pub status: u16,
    /// `X-Consul-Index`, if sent.
    pub index: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

/// One raw HTTP/1.0 exchange with `address` (`http://host:port` or `host:port`), for
/// checks that bypass the backend's client: the status, `X-Consul-Index` and the body
/// (at most 16 MiB), each step bounded by 5 s (a blocking query must wait less).
pub fn raw_http(address: &str, method: &str, path: &str, body: &[u8]) -> io::Result<RawAnswer> {
    let host = address.trim_start_matches("http://").trim_end_matches('/');
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no address for {host}")))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let head = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut all = Vec::new();
    s.take(16 << 20).read_to_end(&mut all)?;
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1 answer");
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
    let index = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("x-consul-index").then(|| value.trim().parse().ok()).flatten()
    });
    Ok(RawAnswer { status, index, body: all[split + 4..].to_vec() })
}

/// Whether a `consul` binary is on `PATH` (`RPCX_CONSUL_BIN` overrides the path).
pub fn consul_on_path() -> bool {
    Command::new(consul_bin())
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn consul_bin() -> std::ffi::OsString {
    std::env::var_os("RPCX_CONSUL_BIN").unwrap_or_else(|| "consul".into())
}

/// How long a real Consul agent may take to elect itself leader.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A real `consul agent -dev` on 127.0.0.1 with free ports, killed on drop. Only when
/// [`consul_on_path`] says one is there.
#[derive(Debug)]
pub struct ConsulAgent {
    child: Option<Child>,
    dir: PathBuf,
    http_port: u16,
}

impl ConsulAgent {
    /// Start `consul agent -dev` and wait until it has a leader. Every port is a free
    /// one or disabled; the gRPC TLS port (on by default since Consul 1.14) is disabled
    /// through `-hcl`, and an older agent refusing that key is started without it.
    pub fn start() -> io::Result<ConsulAgent> {
        match Self::start_with(&["-hcl", "ports { grpc_tls = -1 }"]) {
            Err(e) if e.to_string().contains("grpc_tls") => Self::start_with(&[]),
            r => r,
        }
    }

    fn start_with(extra: &[&str]) -> io::Result<ConsulAgent> {
        let free = crate::etcd::testing::free_port;
        let (http_port, server, lan, wan) = (free()?, free()?, free()?, free()?);
        let dir = std::env::temp_dir().join(format!("rpcx-consul-{}-{http_port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("consul.log"))?;
        let child = Command::new(consul_bin())
            .args(["agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1"])
            .args(["-http-port", &http_port.to_string(), "-server-port", &server.to_string()])
            .args(["-serf-lan-port", &lan.to_string(), "-serf-wan-port", &wan.to_string()])
            .args(["-dns-port", "-1", "-grpc-port", "-1"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut agent = ConsulAgent { child: Some(child), dir, http_port };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(c) = agent.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(agent.dir.join("consul.log")).unwrap_or_default();
                    return Err(io::Error::other(format!("consul exited ({status}):\n{log}")));
                }
            }
            if has_leader(SocketAddr::from(([127, 0, 0, 1], http_port))) {
                return Ok(agent);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("consul has no leader within {START_TIMEOUT:?}")))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /v1/status/leader` answers a non-empty address.
fn has_leader(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /v1/status/leader HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.take(4096).read_to_string(&mut body);
    body.starts_with("HTTP/1.0 200") && body.rsplit("\r\n\r\n").next().is_some_and(|b| b.trim().len() > 2)
}

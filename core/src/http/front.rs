//! The HTTP side of a server connection: requests read one at a time (a keep-alive
//! connection is served in order, as HTTP/1 requires), mapped to rpcx requests for the
//! machine's usual dispatch, and the outcomes mapped back to one HTTP response.

use super::h1::{self, Head, Next, Reader};
use super::{HttpConfig, HttpError, gateway, jsonrpc};
use crate::conn::Response;
use crate::wire::Message;
use bytes::{Bytes, BytesMut};

/// What an HTTP connection speaks, decided by its first request (as Go's `cmux`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Gateway,
    JsonRpc,
}

/// The request being answered.
#[derive(Debug)]
pub(crate) struct Exchange {
    minor: u8,
    keep_alive: bool,
    /// Add `Access-Control-Allow-Origin` (CORS on, and the request had an Origin).
    cors: bool,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Gateway { id: Option<u64>, echo: gateway::Echo },
    JsonRpc { batch: bool, slots: Vec<Slot> },
}

#[derive(Debug)]
struct Slot {
    /// The request dispatched for this call, while its answer is owed.
    req: Option<u64>,
    /// The JSON-RPC id (`None`: a notification, no answer).
    id: Option<Bytes>,
    /// The answer object, once known.
    out: Option<Bytes>,
    /// Dispatched: its request id is bound by [`Front::bind`].
    dispatched: bool,
}

/// What [`Front::next`] found.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Nothing to do until more input; `continue_wanted`: send `100 Continue` first.
    Need { continue_wanted: bool },
    /// Answer now without dispatch (a malformed gateway request, OPTIONS, 405, a
    /// JSON-RPC parse error); `close` after it.
    Reply { bytes: Bytes, close: bool },
    /// The connection cannot go on: answer `bytes` and close with this error.
    Fail(HttpError, Bytes),
    /// Dispatch these requests, then [`Front::bind`] their request ids.
    Calls(Vec<Message>),
    /// A CONNECT to the rpcx path: answer `bytes`, then the connection speaks rpcx,
    /// starting with the bytes that followed the request.
    Tunnel { bytes: Bytes, rest: BytesMut },
    /// A WebSocket upgrade at the rpcx path: answer `bytes`, then the connection speaks
    /// rpcx in WebSocket frames, starting with the bytes that followed the request.
    Upgrade { bytes: Bytes, rest: BytesMut },
}

/// The HTTP state of a connection.
#[derive(Debug, Default)]
pub(crate) struct Front {
    reader: Reader,
    mode: Option<Mode>,
    exchange: Option<Exchange>,
    /// A request asked for the connection to close (auth failed): it closes once the
    /// exchange in progress is answered.
    close_after: bool,
}

impl Front {
    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.reader.feed(data);
    }

    /// Bytes held (unparsed input and a chunked body so far).
    pub(crate) fn buffered(&self) -> usize {
        self.reader.buffered()
    }

    /// Whether reading should wait: a request is being answered and bytes of the next
    /// one are held already (HTTP/1 answers in order, so they wait in the socket).
    pub(crate) fn holding(&self) -> bool {
        self.exchange.is_some() && self.reader.buffered() > 0
    }

    /// Whether part of a request has arrived while none is being answered: the
    /// connection's frame clock runs.
    pub(crate) fn incomplete(&self) -> bool {
        self.exchange.is_none() && self.reader.started()
    }

    /// The next request, if one has arrived whole and none is being answered.
    pub(crate) fn next(&mut self, cfg: &HttpConfig, max_body: usize, max_pairs: usize, max_batch: usize) -> Parsed {
        if self.exchange.is_some() {
            return Parsed::Need { continue_wanted: false };
        }
        let (head, body) = match self.reader.next(cfg.max_head_bytes, max_body) {
            Ok(Next::Incomplete { continue_wanted }) => return Parsed::Need { continue_wanted },
            Ok(Next::Request(head, body)) => (head, body),
            Err(e) => {
                let bytes = h1::Response::text(e.status(), &e.to_string()).encode(1, true);
                return Parsed::Fail(e, bytes);
            }
        };
        if head.minor > 1 {
            let e = HttpError::Version;
            return Parsed::Fail(e.clone(), h1::Response::text(e.status(), &e.to_string()).encode(1, true));
        }
        if self.mode.is_none() && head.method == "CONNECT" && cfg.connect {
            if head.target == cfg.rpc_path {
                return Parsed::Tunnel {
                    bytes: Bytes::from_static(super::connect::CONNECTED),
                    rest: self.reader.take_rest(),
                };
            }
            let r = h1::Response::text(404, "404 page not found");
            return Parsed::Reply { bytes: r.encode(head.minor, true), close: true };
        }
        if self.mode.is_none() && cfg.websocket && head.method == "GET" && head.has_token("upgrade", "websocket") {
            if head.path() != cfg.rpc_path.as_bytes() {
                let r = h1::Response::text(404, "404 page not found");
                return Parsed::Reply { bytes: r.encode(head.minor, true), close: true };
            }
            let key = head.get("Sec-WebSocket-Key").filter(|k| !k.is_empty());
            let version_ok = head.get("Sec-WebSocket-Version").is_some_and(|v| &v[..] == b"13");
            let Some(key) = key.filter(|_| version_ok && head.minor == 1) else {
                let r = h1::Response::text(400, "Bad Request: not a WebSocket 13 handshake")
                    .header("Sec-WebSocket-Version", "13");
                return Parsed::Reply { bytes: r.encode(head.minor, true), close: true };
            };
            let r = h1::Response::new(101)
                .header("Upgrade", "websocket")
                .header("Connection", "Upgrade")
                .header("Sec-WebSocket-Accept", super::ws::accept_key(key));
            return Parsed::Upgrade { bytes: r.encode(1, false), rest: self.reader.take_rest() };
        }
        if !cfg.gateway && !cfg.jsonrpc {
            let e = HttpError::Disabled;
            return Parsed::Fail(e.clone(), h1::Response::text(404, &e.to_string()).encode(head.minor, true));
        }
        let mode = match self.mode {
            Some(m) => m,
            None => {
                let m = if cfg.jsonrpc && head.get("X-JSONRPC-2.0").is_some_and(|v| &v[..] == b"true") {
                    Mode::JsonRpc
                } else if cfg.gateway {
                    Mode::Gateway
                } else {
                    let e = HttpError::Disabled;
                    return Parsed::Fail(e.clone(), h1::Response::text(404, &e.to_string()).encode(head.minor, true));
                };
                *self.mode.insert(m)
            }
        };
        let keep_alive = head.keep_alive();
        let origin = cfg.cors && head.get("Origin").is_some();
        let reply = |r: h1::Response| {
            let r = if origin { with_cors(r) } else { r };
            Parsed::Reply { bytes: r.encode(head.minor, !keep_alive), close: !keep_alive }
        };
        if cfg.cors && head.method == "OPTIONS" && head.get("Access-Control-Request-Method").is_some() {
            return reply(preflight(&head));
        }
        match mode {
            Mode::Gateway => {
                if !matches!(head.method.as_str(), "GET" | "POST" | "PUT") {
                    // Go's router: OPTIONS lists the methods, others are 405.
                    let r = if head.method == "OPTIONS" {
                        h1::Response::new(200).header("Allow", "GET, OPTIONS, POST, PUT")
                    } else {
                        let mut r = h1::Response::text(405, "Method Not Allowed");
                        r.headers.insert(0, ("Allow", Bytes::from_static(b"GET, OPTIONS, POST, PUT")));
                        r
                    };
                    return reply(r);
                }
                match gateway::to_message(&head, body, max_pairs) {
                    Err(r) => reply(r),
                    Ok((msg, echo)) => {
                        self.exchange = Some(Exchange {
                            minor: head.minor,
                            keep_alive,
                            cors: origin,
                            kind: Kind::Gateway { id: None, echo },
                        });
                        Parsed::Calls(vec![msg])
                    }
                }
            }
            Mode::JsonRpc => {
                let parsed =
                    jsonrpc::parse(&body, head.get_str("X-RPCX-Meta"), head.get("Authorization"), max_batch, max_pairs);
                let (batch, calls) = match parsed {
                    Err(obj) => return reply(json(obj)),
                    Ok(jsonrpc::Body::Single(c)) => (false, vec![c]),
                    Ok(jsonrpc::Body::Batch(cs)) => (true, cs),
                };
                let mut slots = Vec::with_capacity(calls.len());
                let mut messages = Vec::new();
                for c in calls {
                    match c {
                        jsonrpc::Call::Dispatch { message, id } => {
                            messages.push(message);
                            slots.push(Slot { req: None, id, out: None, dispatched: true });
                        }
                        jsonrpc::Call::Answered(out) => {
                            slots.push(Slot { req: None, id: None, out, dispatched: false })
                        }
                    }
                }
                self.exchange = Some(Exchange {
                    minor: head.minor,
                    keep_alive,
                    cors: origin,
                    kind: Kind::JsonRpc { batch, slots },
                });
                Parsed::Calls(messages)
            }
        }
    }

    /// The request ids of the messages [`next`](Self::next) gave, in order. Returns the
    /// response if the exchange is complete already (notifications only, or nothing
    /// dispatched), and whether to close after it.
    pub(crate) fn bind(&mut self, ids: &[u64]) -> Option<(Bytes, bool)> {
        let ex = self.exchange.as_mut()?;
        match &mut ex.kind {
            Kind::Gateway { id, .. } => *id = ids.first().copied(),
            Kind::JsonRpc { slots, .. } => {
                let mut ids = ids.iter();
                for s in slots.iter_mut().filter(|s| s.dispatched) {
                    let req = ids.next().copied();
                    // A notification is answered at once; its request still runs.
                    s.req = if s.id.is_some() { req } else { None };
                }
            }
        }
        self.finish_if_done()
    }

    /// Whether the connection should close now: a close was asked for and no exchange
    /// is waiting for its answers.
    pub(crate) fn wants_close(&self) -> bool {
        self.close_after && self.exchange.is_none()
    }

    /// A dispatched request was answered (`close`: the connection is to close, as after
    /// a failed auth). Returns the HTTP response once the exchange is complete, and
    /// whether to close after it.
    pub(crate) fn on_response(
        &mut self,
        req: u64,
        response: Response,
        unauthorized: bool,
        close: bool,
        oneway: bool,
    ) -> Option<(Bytes, bool)> {
        self.close_after |= close;
        let ex = self.exchange.as_mut()?;
        match &mut ex.kind {
            Kind::Gateway { id, echo } => {
                if *id != Some(req) {
                    return None;
                }
                let r = match &response.error {
                    Some(text) => echo.error(if unauthorized { 401 } else { 500 }, text),
                    None => echo.success(&response.metadata, response.payload, oneway),
                };
                let ex = self.exchange.take().expect("exchange");
                Some(ex.send(r, self.close_after))
            }
            Kind::JsonRpc { slots, .. } => {
                let slot = slots.iter_mut().find(|s| s.req == Some(req))?;
                slot.req = None;
                let id = slot.id.as_deref().unwrap_or(b"null");
                slot.out = Some(match &response.error {
                    Some(text) => {
                        jsonrpc::error_object(Some(id), jsonrpc::INTERNAL_ERROR, &String::from_utf8_lossy(text))
                    }
                    None => jsonrpc::result_object(id, &response.payload),
                });
                self.finish_if_done()
            }
        }
    }

    fn finish_if_done(&mut self) -> Option<(Bytes, bool)> {
        let ex = self.exchange.as_ref()?;
        let Kind::JsonRpc { batch, slots } = &ex.kind else { return None };
        if slots.iter().any(|s| s.req.is_some()) {
            return None;
        }
        let outs: Vec<&Bytes> = slots.iter().filter_map(|s| s.out.as_ref()).collect();
        let r = if outs.is_empty() {
            // Notifications only: an empty 200, as Go answers one.
            h1::Response::new(200)
        } else if *batch {
            let mut body = Vec::with_capacity(outs.iter().map(|o| o.len() + 1).sum::<usize>() + 2);
            body.push(b'[');
            for (i, o) in outs.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(o);
            }
            body.push(b']');
            json(body.into())
        } else {
            json(outs[0].clone())
        };
        let ex = self.exchange.take().expect("exchange");
        Some(ex.send(r, self.close_after))
    }
}

impl Exchange {
    fn send(self, r: h1::Response, close: bool) -> (Bytes, bool) {
        let r = if self.cors { with_cors(r) } else { r };
        let close = close || !self.keep_alive;
        (r.encode(self.minor, close), close)
    }
}

fn json(body: Bytes) -> h1::Response {
    h1::Response::new(200).header("Content-Type", "application/json").body(body)
}

fn with_cors(mut r: h1::Response) -> h1::Response {
    r.set("Access-Control-Allow-Origin", "*");
    r.set("Vary", "Origin");
    r
}

/// A CORS preflight, allowed for any origin, the method and headers asked for.
fn preflight(head: &Head) -> h1::Response {
    let mut r =
        h1::Response::new(204).header("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers");
    if let Some(m) = head.get("Access-Control-Request-Method") {
        r = r.header("Access-Control-Allow-Methods", Bytes::from(m.to_ascii_uppercase()));
    }
    if let Some(h) = head.get("Access-Control-Request-Headers") {
        r = r.header("Access-Control-Allow-Headers", h.clone());
    }
    r
}

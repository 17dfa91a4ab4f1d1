//! HTTP/1 requests in, responses out: the framing a server needs, without IO. Heads are
//! parsed by `httparse`; bodies are framed by `Content-Length` or chunked transfer
//! coding, bounded in size.

use super::HttpError;
use bytes::{Buf, Bytes, BytesMut};

/// Most header lines a request may have.
pub(crate) const MAX_HEADERS: usize = 100;

/// A parsed request head.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) method: String,
    /// The request target as sent (path and query).
    pub(crate) target: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub(crate) minor: u8,
    headers: Vec<(String, Bytes)>,
}

impl Head {
    /// The first value of a header (names compare case-insensitively), as Go's
    /// `Header.Get`.
    pub(crate) fn get(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// [`get`](Self::get) as text (`None` if absent or not UTF-8).
    pub(crate) fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether a comma-separated header holds `token` (case-insensitive).
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection stays open after this exchange (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub(crate) fn keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }

    /// The URL path, percent-decoded (as Go's `URL.Path`), without the query.
    pub(crate) fn path(&self) -> Vec<u8> {
        let raw = self.target.split(['?', '#']).next().unwrap_or("");
        // An absolute-form target (`http://host/path`) names its path after the host.
        let raw = match raw.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => raw,
        };
        let b = raw.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
            match (b[i], hex(i + 1), hex(i + 2)) {
                (b'%', Some(hi), Some(lo)) => {
                    out.push((hi << 4 | lo) as u8);
                    i += 3;
                }
                (c, ..) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    }
}

#[derive(Debug)]
enum Stage {
    /// Looking for the end of the head; bytes before `scanned` hold none.
    Head { scanned: usize },
    /// `len` body bytes follow the head already taken off the buffer.
    Body { head: Head, len: usize },
    /// A chunked body: the chunks decoded so far.
    Chunked { head: Head, body: BytesMut, state: Chunk },
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// `left` bytes of chunk data, then its CRLF.
    Data { left: usize },
    /// Trailer lines until an empty one.
    Trailer,
}

/// What [`Reader::next`] found.
#[derive(Debug)]
pub(crate) enum Next {
    /// More bytes are needed; `continue_wanted` when the client waits for a
    /// `100 Continue` before sending its body.
    Incomplete { continue_wanted: bool },
    /// A whole request.
    Request(Head, Bytes),
}

/// Splits a byte stream into requests. Memory is bounded by the limits given: the head
/// by `max_head`, the body by `max_body`.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: BytesMut,
    stage: Stage,
    continue_sent: bool,
}

impl Default for Reader {
    fn default() -> Self {
        Self { buf: BytesMut::new(), stage: Stage::Head { scanned: 0 }, continue_sent: false }
    }
}

impl Reader {
    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held: unparsed input and a chunked body decoded so far.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len() + if let Stage::Chunked { body, .. } = &self.stage { body.len() } else { 0 }
    }

    /// The bytes after the requests taken so far (the connection stops being HTTP).
    pub(crate) fn take_rest(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    /// Whether part of a request has arrived (and no whole one is waiting to be taken).
    pub(crate) fn started(&self) -> bool {
        !self.buf.is_empty() || !matches!(self.stage, Stage::Head { .. })
    }

    /// The next request, if it has arrived whole.
    pub(crate) fn next(&mut self, max_head: usize, max_body: usize) -> Result<Next, HttpError> {
        loop {
            match &mut self.stage {
                Stage::Head { scanned } => {
                    let Some(end) = find_head_end(&self.buf, *scanned) else {
                        if self.buf.len() > max_head {
                            return Err(HttpError::HeadTooLarge { limit: max_head });
                        }
                        *scanned = self.buf.len().saturating_sub(3);
                        return Ok(Next::Incomplete { continue_wanted: false });
                    };
                    if end > max_head {
                        return Err(HttpError::HeadTooLarge { limit: max_head });
                    }
                    let head = parse_head(&self.buf[..end])?;
                    self.buf.advance(end);
                    self.continue_sent = false;
                    self.stage = body_stage(head, max_body)?;
                }
                Stage::Body { len, .. } => {
                    if self.buf.len() < *len {
                        return Ok(Next::Incomplete { continue_wanted: self.wants_continue() });
                    }
                    let len = *len;
                    let Stage::Body { head, .. } = std::mem::replace(&mut self.stage, Stage::Head { scanned: 0 })
                    else {
                        unreachable!("matched above")
                    };
                    let body = self.buf.split_to(len).freeze();
                    self.shrink();
                    return Ok(Next::Request(head, body));
                }
                Stage::Chunked { body, state, .. } => {
                    if !step_chunks(&mut self.buf, body, state, max_body)? {
                        return Ok(Next::Incomplete { continue_wanted: self.wants_continue() });
                    }
                    let Stage::Chunked { head, body, .. } =
                        std::mem::replace(&mut self.stage, Stage::Head { scanned: 0 })
                    else {
                        unreachable!("matched above")
                    };
                    self.shrink();
                    return Ok(Next::Request(head, body.freeze()));
                }
            }
        }
    }

    /// Whether to send `100 Continue` now (once per request).
    fn wants_continue(&mut self) -> bool {
        let head = match &self.stage {
            Stage::Body { head, .. } | Stage::Chunked { head, .. } => head,
            Stage::Head { .. } => return false,
        };
        let want = !self.continue_sent && head.minor == 1 && head.has_token("expect", "100-continue");
        self.continue_sent |= want;
        want
    }

    /// Let go of a large buffer once it is empty, so an idle keep-alive connection
    /// holds little.
    fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 4096 {
            self.buf = BytesMut::new();
        }
    }
}

/// The end of the head (after its blank line), searching from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        let nl = i + buf[i..].iter().position(|&b| b == b'\n')?;
        // A blank line: LF LF, or CR LF CR LF (Go's CONNECT client writes LF only).
        if nl >= 1 && buf[nl - 1] == b'\n' {
            return Some(nl + 1);
        }
        if nl >= 2 && buf[nl - 1] == b'\r' && buf[nl - 2] == b'\n' {
            return Some(nl + 1);
        }
        i = nl + 1;
    }
    None
}

fn parse_head(bytes: &[u8]) -> Result<Head, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::Malformed("incomplete request head".into())),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders { limit: MAX_HEADERS }),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    }
    let minor = req.version.unwrap_or(1);
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default().to_owned();
    let headers = req.headers.iter().map(|h| (h.name.to_owned(), Bytes::copy_from_slice(h.value))).collect();
    Ok(Head { method, target, minor, headers })
}

/// How the body after `head` is framed.
fn body_stage(head: Head, max_body: usize) -> Result<Stage, HttpError> {
    let te = head.get("transfer-encoding").is_some();
    let lengths: Vec<&Bytes> =
        head.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")).map(|(_, v)| v).collect();
    if te {
        if !lengths.is_empty() {
            return Err(HttpError::Malformed("both Transfer-Encoding and Content-Length".into()));
        }
        if !head.has_token("transfer-encoding", "chunked")
            || head
                .headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && !v.eq_ignore_ascii_case(b"chunked"))
        {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        return Ok(Stage::Chunked { head, body: BytesMut::new(), state: Chunk::Size });
    }
    let mut len = None;
    for v in lengths {
        let n = std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| HttpError::Malformed("bad Content-Length".into()))?;
        if len.is_some_and(|l| l != n) {
            return Err(HttpError::Malformed("conflicting Content-Length headers".into()));
        }
        len = Some(n);
    }
    let len = len.unwrap_or(0);
    if len > max_body as u64 {
        return Err(HttpError::BodyTooLarge { limit: max_body });
    }
    Ok(Stage::Body { head, len: len as usize })
}

/// Decode the chunks in `buf` into `body`; `true` once the last chunk and the trailer
/// are in.
fn step_chunks(buf: &mut BytesMut, body: &mut BytesMut, state: &mut Chunk, max_body: usize) -> Result<bool, HttpError> {
    loop {
        match *state {
            Chunk::Size => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    if size == 0 {
                        *state = Chunk::Trailer;
                        continue;
                    }
                    if size > (max_body - body.len()) as u64 {
                        return Err(HttpError::BodyTooLarge { limit: max_body });
                    }
                    *state = Chunk::Data { left: size as usize };
                }
                Ok(httparse::Status::Partial) => {
                    // A chunk-size line is a few bytes; a long one is garbage.
                    if buf.len() > 1024 {
                        return Err(HttpError::Malformed("chunk size line too long".into()));
                    }
                    return Ok(false);
                }
                Err(_) => return Err(HttpError::Malformed("bad chunk size".into())),
            },
            Chunk::Data { left } => {
                if left > 0 {
                    let n = left.min(buf.len());
                    body.extend_from_slice(&buf[..n]);
                    buf.advance(n);
                    *state = Chunk::Data { left: left - n };
                    if n < left {
                        return Ok(false);
                    }
                    continue;
                }
                match buf.as_ref() {
                    [b'\r', b'\n', ..] => buf.advance(2),
                    [b'\n', ..] => buf.advance(1),
                    [] | [b'\r'] => return Ok(false),
                    _ => return Err(HttpError::Malformed("chunk data not followed by CRLF".into())),
                }
                *state = Chunk::Size;
            }
            Chunk::Trailer => {
                let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                    if buf.len() > 8192 {
                        return Err(HttpError::Malformed("trailer too long".into()));
                    }
                    return Ok(false);
                };
                let blank = nl == 0 || (nl == 1 && buf[0] == b'\r');
                buf.advance(nl + 1);
                if blank {
                    return Ok(true);
                }
            }
        }
    }
}

/// The reason phrase Go writes for a status.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A response to write: status, headers (names as they go out), body.
#[derive(Debug, Default)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, Bytes)>,
    pub(crate) body: Bytes,
}

impl Response {
    pub(crate) fn new(status: u16) -> Self {
        Self { status, ..Default::default() }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<Bytes>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn set(&mut self, name: &'static str, value: impl Into<Bytes>) {
        let value = value.into();
        match self.headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(h) => h.1 = value,
            None => self.headers.push((name, value)),
        }
    }

    /// A plain-text error, as Go's `http.Error` writes it.
    pub(crate) fn text(status: u16, text: &str) -> Self {
        Self::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("X-Content-Type-Options", "nosniff")
            .body(format!("{text}\n"))
    }

    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The bytes on the wire, for a request of HTTP/1.`minor`; `close` adds
    /// `Connection: close`.
    pub(crate) fn encode(&self, minor: u8, close: bool) -> Bytes {
        let mut out =
            Vec::with_capacity(128 + self.body.len() + self.headers.iter().map(|h| h.1.len() + 32).sum::<usize>());
        out.extend_from_slice(format!("HTTP/1.{minor} {} {}\r\n", self.status, reason(self.status)).as_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            // A value never carries a line break onto the wire (header injection).
            out.extend(value.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
            out.extend_from_slice(b"\r\n");
        }
        if self.status >= 200 && self.status != 204 {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if minor == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out.into()
    }
}

/// `HTTP/1.1 100 Continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(input: &[u8], step: usize) -> Vec<Result<(String, Vec<u8>), HttpError>> {
        let mut r = Reader::default();
        let mut out = Vec::new();
        for chunk in input.chunks(step.max(1)) {
            r.feed(chunk);
            loop {
                match r.next(1024, 64) {
                    Ok(Next::Incomplete { .. }) => break,
                    Ok(Next::Request(h, b)) => out.push(Ok((h.target.clone(), b.to_vec()))),
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn requests_split_at_any_byte() {
        let input = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\n\
            PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3;ext=1\r\n!!!\r\n0\r\nT: v\r\n\r\n";
        for step in [1, 2, 5, 7, input.len()] {
            let got = read_all(input, step);
            let want = vec![
                Ok(("/a".to_owned(), b"abc".to_vec())),
                Ok(("/b".to_owned(), vec![])),
                Ok(("/c".to_owned(), b"hi!!!".to_vec())),
            ];
            assert_eq!(got, want, "step {step}");
        }
    }

    #[test]
    fn limits_and_malformed_input_are_typed() {
        let big_head = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 2000]].concat();
        assert_eq!(read_all(&big_head, 100).pop(), Some(Err(HttpError::HeadTooLarge { limit: 1024 })));
        let long_body = b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n";
        assert_eq!(read_all(long_body, 3).pop(), Some(Err(HttpError::BodyTooLarge { limit: 64 })));
        let chunked = [b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n".as_slice(), &[b'x'; 65]].concat();
        assert_eq!(read_all(&chunked, 9).pop(), Some(Err(HttpError::BodyTooLarge { limit: 64 })));
        let both = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n";
        assert!(matches!(read_all(both, 100).pop(), Some(Err(HttpError::Malformed(_)))));
        let gzip = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(read_all(gzip, 100).pop(), Some(Err(HttpError::UnsupportedTransferEncoding)));
        assert!(matches!(
            read_all(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 4).pop(),
            Some(Err(HttpError::Malformed(_)))
        ));
        let many: Vec<u8> = [b"GET / HTTP/1.1\r\n".to_vec(), b"A: b\r\n".repeat(101), b"\r\n".to_vec()].concat();
        let mut r = Reader::default();
        r.feed(&many);
        assert!(matches!(r.next(1 << 20, 64), Err(HttpError::TooManyHeaders { .. })));
    }

    #[test]
    fn lf_only_heads_and_keep_alive_rules() {
        let mut r = Reader::default();
        r.feed(b"CONNECT /_rpcx_ HTTP/1.0\n\n");
        let Ok(Next::Request(h, _)) = r.next(1024, 64) else { panic!("LF-only head") };
        assert_eq!((h.method.as_str(), h.minor, h.keep_alive()), ("CONNECT", 0, false));
        r.feed(b"GET /x%2Fy?q=1 HTTP/1.1\r\nConnection: Close\r\n\r\n");
        let Ok(Next::Request(h, _)) = r.next(1024, 64) else { panic!("head") };
        assert!(!h.keep_alive());
        assert_eq!(h.path(), b"/x/y");
    }

    #[test]
    fn expect_continue_is_answered_once() {
        let mut r = Reader::default();
        r.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        assert!(matches!(r.next(1024, 64), Ok(Next::Incomplete { continue_wanted: true })));
        r.feed(b"a");
        assert!(matches!(r.next(1024, 64), Ok(Next::Incomplete { continue_wanted: false })));
        r.feed(b"b");
        assert!(matches!(r.next(1024, 64), Ok(Next::Request(..))));
    }

    #[test]
    fn responses_never_carry_line_breaks_from_values() {
        let r = Response::new(200).header("X-A", "a\r\nSet-Cookie: x").body("hi");
        let wire = r.encode(1, false);
        assert_eq!(&wire[..], b"HTTP/1.1 200 OK\r\nX-A: a  Set-Cookie: x\r\nContent-Length: 2\r\n\r\nhi");
    }
}

//! Go's URL query encoding (`net/url`): the form rpcx uses for registry metadata and for
//! the HTTP gateway's `X-RPCX-Meta` header.

/// Decoded `key=value` pairs, in order.
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Go's `url.ParseQuery` (Go >= 1.17): every pair Go keeps, in order (keys may repeat),
/// and the text of the first error Go would return (Go keeps parsing after one).
pub(crate) fn parse(query: &str) -> (Pairs, Option<String>) {
    let mut pairs = Vec::new();
    let mut err = None;
    for pair in query.split('&') {
        if pair.contains(';') {
            err.get_or_insert_with(|| "invalid semicolon separator in query".to_owned());
            continue;
        }
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (unescape(k), unescape(v)) {
            (Ok(k), Ok(v)) => pairs.push((k, v)),
            (Err(e), _) | (_, Err(e)) => {
                err.get_or_insert(e);
            }
        }
    }
    (pairs, err)
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; a bad escape is an error
/// with Go's text (`invalid URL escape "%zz"`).
pub(crate) fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
                match (hex(i + 1), hex(i + 2)) {
                    (Some(hi), Some(lo)) => out.push((hi << 4 | lo) as u8),
                    _ => {
                        let end = (i + 3).min(b.len());
                        let bad = String::from_utf8_lossy(&b[i..end]);
                        return Err(format!("invalid URL escape {bad:?}"));
                    }
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Go's `url.QueryEscape` of `s`, appended to `out`: ASCII letters, digits and `-_.~`
/// stay, a space becomes `+`, every other byte `%XX` (upper-case hex).
pub(crate) fn escape_into(s: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in s {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(c as char),
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(c >> 4)] as char);
                out.push(HEX[usize::from(c & 15)] as char);
            }
        }
    }
}

/// Go's `url.Values.Encode()` of single-valued pairs: sorted by key, `k=v` joined by `&`.
pub(crate) fn encode_sorted<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> String {
    let mut pairs: Vec<_> = pairs.into_iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        escape_into(k, &mut out);
        out.push('=');
        escape_into(v, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_like_go() {
        let (pairs, err) = parse("a=1&b=x+y&c=%41&&d");
        assert_eq!(err, None);
        let want: Pairs = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"x y".to_vec()),
            (b"c".to_vec(), b"A".to_vec()),
            (b"d".to_vec(), b"".to_vec()),
        ];
        assert_eq!(pairs, want);
        let (pairs, err) = parse("a=%zz&b=2;x&c=3");
        assert_eq!(err.as_deref(), Some("invalid URL escape \"%zz\""));
        assert_eq!(pairs, vec![(b"c".to_vec(), b"3".to_vec())]);
        assert_eq!(parse("k=%4").1.as_deref(), Some("invalid URL escape \"%4\""));
        assert_eq!(parse("a;b").1.as_deref(), Some("invalid semicolon separator in query"));
    }

    #[test]
    fn encode_like_go() {
        // url.Values{"b": {"x y"}, "a": {"1/2*~"}, "é": {""}}.Encode() in Go.
        let pairs: [(&[u8], &[u8]); 3] = [(b"b", b"x y"), (b"a", b"1/2*~"), ("é".as_bytes(), b"")];
        assert_eq!(encode_sorted(pairs), "a=1%2F2%2A~&b=x+y&%C3%A9=");
    }
}

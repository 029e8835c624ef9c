//! The RESP wire format: requests in (multibulk arrays and inline commands,
//! as Redis accepts them), replies out (RESP2, or RESP3 after `HELLO 3`).
//!
//! Parsing is a pure function of the bytes received so far: `Ok(None)` asks
//! for more, `Ok(Some((args, used)))` is one command, and an error is Redis's
//! own protocol error text, after which the connection is closed (as Redis
//! does). Every length is checked against a limit before anything is
//! allocated for it.

/// Largest bulk string a client may send (Redis's `proto-max-bulk-len` is
/// 512 MB; ours is the largest value the keyspace stores, 4 MiB, with room for
/// a key and a command around it).
pub const MAX_BULK_BYTES: usize = 8 * 1024 * 1024;
/// Most arguments of one command (Redis: 1024 x 1024).
pub const MAX_ARGS: usize = 1024 * 1024;
/// Longest inline command (Redis: 64 KiB).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;

/// A protocol error: its text is the reply (after `-ERR `), then the
/// connection closes. The texts are Redis's (`networking.c`); one check is
/// ours: a bulk string not followed by CRLF is refused (Redis skips two bytes
/// whatever they are).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub std::borrow::Cow<'static, str>);

/// A protocol error with a fixed text.
fn perr(msg: &'static str) -> ProtocolError {
    ProtocolError(std::borrow::Cow::Borrowed(msg))
}

impl ProtocolError {
    fn from_string(msg: String) -> Self {
        ProtocolError(std::borrow::Cow::Owned(msg))
    }
}

/// One command's arguments, and the bytes it took.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// Finds `\r\n` from `from`; the index of `\r`.
fn crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

fn number(digits: &[u8]) -> Option<i64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Parses one request from the front of `buf`. An empty request (`*0`, `*-1`
/// or a blank inline line) comes back as no arguments; the caller skips it.
/// A connection uses a [`RequestParser`], which keeps its place in a request
/// that arrives in pieces.
pub fn parse_request(buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
    RequestParser::default().parse(buf)
}

/// A parser that keeps what it parsed of an incomplete request, so a request
/// fed in many small reads costs time linear in its size, not quadratic: call
/// [`RequestParser::parse`] again with the same buffer, grown, until it gives
/// the request; then drop the bytes it used and go on.
#[derive(Debug, Default)]
pub struct RequestParser {
    /// Arguments still expected of the multibulk in progress (0: none in progress).
    expected: usize,
    args: Vec<Vec<u8>>,
    /// Where parsing resumes in the buffer.
    at: usize,
    /// Bytes of an incomplete inline line already searched for its newline.
    scanned: usize,
}

impl RequestParser {
    /// Parses the next request from `buf`, which must start where the previous
    /// complete request ended (and hold the same bytes as the last call, plus
    /// more). After an error, the parser is reset (the connection closes).
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
        let r = match buf.first() {
            None => Ok(None),
            Some(b'*') => self.multibulk(buf),
            Some(_) => self.inline(buf),
        };
        if !matches!(r, Ok(None)) {
            *self = RequestParser::default();
        }
        r
    }

    fn multibulk(&mut self, buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
        if self.at == 0 {
            let Some(end) = crlf(buf, 1) else {
                if buf.len() > MAX_INLINE_BYTES {
                    return Err(perr("too big mbulk count string"));
                }
                return Ok(None);
            };
            let n = number(&buf[1..end]).ok_or(perr("invalid multibulk length"))?;
            if n > MAX_ARGS as i64 {
                return Err(perr("invalid multibulk length"));
            }
            if n <= 0 {
                return Ok(Some((Vec::new(), end + 2)));
            }
            self.at = end + 2;
            self.expected = n as usize;
            // Reserve for what the bytes at hand can hold, not what the count claims.
            self.args = Vec::with_capacity(self.expected.min(buf.len() / 4 + 1));
        }
        while self.args.len() < self.expected {
            let at = self.at;
            let Some(&first) = buf.get(at) else {
                return Ok(None);
            };
            if first != b'$' {
                // Redis's text, with the byte it got.
                return Err(ProtocolError::from_string(format!(
                    "expected '$', got '{}'",
                    first as char
                )));
            }
            let Some(end) = crlf(buf, at + 1) else {
                if buf.len() - at > 32 {
                    return Err(perr("too big bulk count string"));
                }
                return Ok(None);
            };
            let len = number(&buf[at + 1..end]).ok_or(perr("invalid bulk length"))?;
            if len < 0 || len as usize > MAX_BULK_BYTES {
                return Err(perr("invalid bulk length"));
            }
            let start = end + 2;
            let stop = start + len as usize;
            if buf.len() < stop + 2 {
                return Ok(None);
            }
            if &buf[stop..stop + 2] != b"\r\n" {
                return Err(perr("expected CRLF after a bulk string"));
            }
            self.args.push(buf[start..stop].to_vec());
            self.at = stop + 2;
        }
        Ok(Some((std::mem::take(&mut self.args), self.at)))
    }

    fn inline(&mut self, buf: &[u8]) -> Result<Option<Parsed>, ProtocolError> {
        let from = self.scanned.min(buf.len());
        let Some(nl) = buf[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| from + p)
        else {
            if buf.len() > MAX_INLINE_BYTES {
                return Err(perr("too big inline request"));
            }
            self.scanned = buf.len();
            return Ok(None);
        };
        parse_inline_line(buf, nl).map(Some)
    }
}

/// The inline command ending with the newline at `nl`.
fn parse_inline_line(buf: &[u8], nl: usize) -> Result<Parsed, ProtocolError> {
    if nl > MAX_INLINE_BYTES {
        return Err(perr("too big inline request"));
    }
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let args = split_args(line).ok_or(perr("unbalanced quotes in request"))?;
    Ok((args, nl + 1))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline command like Redis's `sdssplitargs`: words separated by
/// blanks; "double quotes" with `\n \r \t \b \a \\ \" \xHH` escapes; 'single
/// quotes' with `\'`. A closing quote must be followed by a blank or the end.
/// `None` for unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Some(out);
        }
        let mut cur = Vec::new();
        let (mut dq, mut sq) = (false, false);
        loop {
            let c = line.get(i).copied();
            if dq {
                match c? {
                    b'\\'
                        if i + 3 < line.len()
                            && line[i + 1] == b'x'
                            && hex(line[i + 2]).is_some()
                            && hex(line[i + 3]).is_some() =>
                    {
                        cur.push(hex(line[i + 2])? * 16 + hex(line[i + 3])?);
                        i += 3;
                    }
                    b'\\' if i + 1 < line.len() => {
                        i += 1;
                        cur.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                    }
                    b'"' => {
                        // The closing quote must end the word.
                        if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    other => cur.push(other),
                }
            } else if sq {
                match c? {
                    b'\\' if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        cur.push(b'\'');
                    }
                    b'\'' => {
                        if line.get(i + 1).is_some_and(|b| !b.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    other => cur.push(other),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if b.is_ascii_whitespace() => break,
                    Some(b'"') => dq = true,
                    Some(b'\'') => sq = true,
                    Some(b) => cur.push(b),
                }
            }
            i += 1;
        }
        out.push(cur);
    }
}

/// A command as a client sends it: a multibulk array of bulk strings.
pub fn encode_request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let items = args.iter().map(|a| Reply::Bulk(a.to_vec())).collect();
    encode(&Reply::Array(items), false, &mut out);
    out
}

/// A reply, before it is encoded for the connection's protocol version.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A status line such as `OK` or `PONG` (`+...`); CR and LF in it go out as spaces.
    Simple(String),
    /// The whole error line without the leading `-` (`ERR ...`, `WRONGTYPE ...`).
    Error(String),
    /// A signed integer (`:...`).
    Int(i64),
    /// A binary-safe bulk string (`$len`).
    Bulk(Vec<u8>),
    /// A missing value, e.g. `GET` of an absent key: `$-1` in RESP2, `_` in RESP3.
    Nil,
    /// An ordered list of replies (`*len`).
    Array(Vec<Reply>),
    /// A null array (`*-1` in RESP2, `_` in RESP3), e.g. a timed-out blocking pop.
    NilArray,
    /// A floating-point number: RESP3 `,`; a bulk string in RESP2.
    Double(f64),
    /// A boolean: RESP3 `#t`/`#f`; the integer 1 or 0 in RESP2.
    Bool(bool),
    /// Key-value pairs in order: RESP3 `%`; a flat array of 2n items in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// An unordered collection: RESP3 `~`; an array in RESP2.
    Set(Vec<Reply>),
    /// Out-of-band data (pub/sub messages in RESP3).
    Push(Vec<Reply>),
}

impl Reply {
    /// The `+OK` status reply.
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    /// An error reply; `msg` is the whole line, prefix included (`ERR ...`).
    pub fn err(msg: impl Into<String>) -> Reply {
        Reply::Error(msg.into())
    }

    /// A bulk string reply holding `b`.
    pub fn bulk(b: impl Into<Vec<u8>>) -> Reply {
        Reply::Bulk(b.into())
    }
}

/// Parses one reply from the front of `buf` (RESP2 or RESP3), for clients,
/// tests and benchmarks: `Ok(None)` asks for more. RESP3's verbatim strings
/// and big numbers come back as bulk strings; attributes are skipped.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    parse_reply_at(buf, 0, 0)
}

fn parse_reply_at(
    buf: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    if depth > 64 {
        return Err(perr("reply nested too deep"));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = crlf(buf, at + 1) else {
        return Ok(None);
    };
    let line = &buf[at + 1..end];
    let text = || String::from_utf8_lossy(line).into_owned();
    let num = || number(line).ok_or(perr("bad number in reply"));
    let next = end + 2;
    let r = match kind {
        b'+' => (Reply::Simple(text()), next),
        b'-' => (Reply::Error(text()), next),
        b':' => (Reply::Int(num()?), next),
        b'_' => (Reply::Nil, next),
        b'#' => (Reply::Bool(line == b"t"), next),
        b',' => {
            let d = match line {
                b"inf" => f64::INFINITY,
                b"-inf" => f64::NEG_INFINITY,
                _ => text().parse().map_err(|_| perr("bad double in reply"))?,
            };
            (Reply::Double(d), next)
        }
        b'(' => (Reply::Bulk(line.to_vec()), next),
        b'$' | b'=' | b'!' => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Reply::Nil, next)));
            }
            let n = n as usize;
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            let body = buf[next..next + n].to_vec();
            let r = if kind == b'!' {
                Reply::Error(String::from_utf8_lossy(&body).into_owned())
            } else if kind == b'=' && body.len() >= 4 {
                // Verbatim: "txt:" then the text.
                Reply::Bulk(body[4..].to_vec())
            } else {
                Reply::Bulk(body)
            };
            (r, next + n + 2)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Reply::NilArray, next)));
            }
            let count = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            } as usize;
            let mut items = Vec::with_capacity(count.min(1024));
            let mut pos = next;
            for _ in 0..count {
                let Some((item, used)) = parse_reply_at(buf, pos, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                pos = used;
            }
            let r = match kind {
                b'*' => Reply::Array(items),
                b'~' => Reply::Set(items),
                b'>' => Reply::Push(items),
                _ => {
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    if kind == b'|' {
                        // An attribute precedes the real reply.
                        return parse_reply_at(buf, pos, depth + 1);
                    }
                    Reply::Map(pairs)
                }
            };
            (r, pos)
        }
        other => {
            return Err(ProtocolError::from_string(format!(
                "unknown reply type '{}'",
                other as char
            )));
        }
    };
    Ok(Some(r))
}

/// How Redis prints a double: the shortest text that reads back the same,
/// `inf`, `-inf` or `nan`.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".into()
    } else if d.is_infinite() {
        if d > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{d}")
    }
}

fn line(out: &mut Vec<u8>, prefix: u8, body: &[u8]) {
    out.push(prefix);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

/// Encodes `r` for a RESP3 (`resp3`) or RESP2 connection. RESP2 has no nulls,
/// doubles, booleans, maps, sets or pushes of its own: they become `$-1`, bulk
/// strings, integers 1/0 and flat arrays, as Redis sends them.
pub fn encode(r: &Reply, resp3: bool, out: &mut Vec<u8>) {
    match r {
        Reply::Simple(s) => line(out, b'+', clean(s).as_bytes()),
        Reply::Error(e) => line(out, b'-', clean(e).as_bytes()),
        Reply::Int(i) => line(out, b':', i.to_string().as_bytes()),
        Reply::Bulk(b) => {
            line(out, b'$', b.len().to_string().as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Nil if resp3 => out.extend_from_slice(b"_\r\n"),
        Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
        Reply::NilArray if resp3 => out.extend_from_slice(b"_\r\n"),
        Reply::NilArray => out.extend_from_slice(b"*-1\r\n"),
        Reply::Double(d) if resp3 => line(out, b',', format_double(*d).as_bytes()),
        Reply::Double(d) => encode(&Reply::Bulk(format_double(*d).into_bytes()), false, out),
        Reply::Bool(b) if resp3 => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Reply::Bool(b) => encode(&Reply::Int(*b as i64), false, out),
        Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
            let prefix = match r {
                Reply::Set(_) if resp3 => b'~',
                Reply::Push(_) if resp3 => b'>',
                _ => b'*',
            };
            line(out, prefix, items.len().to_string().as_bytes());
            for i in items {
                encode(i, resp3, out);
            }
        }
        Reply::Map(pairs) => {
            if resp3 {
                line(out, b'%', pairs.len().to_string().as_bytes());
            } else {
                line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
            }
            for (k, v) in pairs {
                encode(k, resp3, out);
                encode(v, resp3, out);
            }
        }
    }
}

/// A simple string or error may not hold CR or LF: they would end the line.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        std::borrow::Cow::Owned(s.replace(['\r', '\n'], " "))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(r: &Reply, resp3: bool) -> String {
        let mut out = Vec::new();
        encode(r, resp3, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn requests() {
        let req = encode_request(&[b"SET", b"k", b"v\r\nx"]);
        let (args, used) = parse_request(&req).unwrap().unwrap();
        assert_eq!(
            args,
            vec![b"SET".to_vec(), b"k".to_vec(), b"v\r\nx".to_vec()]
        );
        assert_eq!(used, req.len());
        // Every prefix is incomplete, not an error.
        for cut in 0..req.len() {
            assert_eq!(parse_request(&req[..cut]), Ok(None), "cut at {cut}");
        }
        // Two pipelined commands: the first, then the rest.
        let mut two = req.clone();
        two.extend_from_slice(b"PING\r\n");
        let (_, used) = parse_request(&two).unwrap().unwrap();
        assert_eq!(
            parse_request(&two[used..]).unwrap().unwrap().0,
            vec![b"PING".to_vec()]
        );
        assert_eq!(parse_request(b"*0\r\n").unwrap().unwrap().0.len(), 0);
        assert_eq!(parse_request(b"*-1\r\n").unwrap().unwrap().0.len(), 0);
        assert_eq!(parse_request(b"\r\n").unwrap().unwrap(), (vec![], 2));
    }

    #[test]
    fn inline_commands_split_like_redis() {
        let (args, _) = parse_request(b"set k \"a b\\n\\x41\" 'it\\'s'\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            args,
            vec![
                b"set".to_vec(),
                b"k".to_vec(),
                b"a b\nA".to_vec(),
                b"it's".to_vec()
            ]
        );
        assert_eq!(
            parse_request(b"get \"k\r\n"),
            Err(perr("unbalanced quotes in request"))
        );
        assert_eq!(
            parse_request(b"get \"k\"x\r\n"),
            Err(perr("unbalanced quotes in request"))
        );
        assert_eq!(
            parse_request(b"  PING  \r\n").unwrap().unwrap().0,
            vec![b"PING".to_vec()]
        );
    }

    #[test]
    fn bad_requests_are_redis_protocol_errors() {
        let e = |b: &[u8]| parse_request(b).unwrap_err().to_string();
        assert_eq!(e(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            e(b"*2000000\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(e(b"*1\r\n:1\r\n"), "Protocol error: expected '$', got ':'");
        assert_eq!(e(b"*1\r\n$-3\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            e(b"*1\r\n$999999999\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(b"*1\r\n$1\r\nab\r\n"),
            "Protocol error: expected CRLF after a bulk string"
        );
        let long = vec![b'a'; MAX_INLINE_BYTES + 1];
        assert_eq!(e(&long), "Protocol error: too big inline request");
        // A huge count allocates nothing up front: incomplete, not out of memory.
        assert_eq!(parse_request(b"*1000000\r\n$1\r\n"), Ok(None));
    }

    #[test]
    fn replies_in_both_protocols() {
        assert_eq!(enc(&Reply::ok(), false), "+OK\r\n");
        assert_eq!(enc(&Reply::err("ERR no\r\nway"), false), "-ERR no  way\r\n");
        assert_eq!(enc(&Reply::Int(-3), false), ":-3\r\n");
        assert_eq!(enc(&Reply::bulk("hi"), false), "$2\r\nhi\r\n");
        assert_eq!(enc(&Reply::Nil, false), "$-1\r\n");
        assert_eq!(enc(&Reply::Nil, true), "_\r\n");
        assert_eq!(enc(&Reply::NilArray, false), "*-1\r\n");
        assert_eq!(enc(&Reply::Double(1.5), false), "$3\r\n1.5\r\n");
        assert_eq!(enc(&Reply::Double(3.0), true), ",3\r\n");
        assert_eq!(enc(&Reply::Double(f64::INFINITY), true), ",inf\r\n");
        assert_eq!(enc(&Reply::Bool(true), false), ":1\r\n");
        assert_eq!(enc(&Reply::Bool(false), true), "#f\r\n");
        let map = Reply::Map(vec![(Reply::bulk("a"), Reply::Int(1))]);
        assert_eq!(enc(&map, false), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&map, true), "%1\r\n$1\r\na\r\n:1\r\n");
        let set = Reply::Set(vec![Reply::bulk("x")]);
        assert_eq!(enc(&set, false), "*1\r\n$1\r\nx\r\n");
        assert_eq!(enc(&set, true), "~1\r\n$1\r\nx\r\n");
        let push = Reply::Push(vec![Reply::bulk("message")]);
        assert_eq!(enc(&push, true), ">1\r\n$7\r\nmessage\r\n");
    }

    #[test]
    fn replies_parse_back() {
        let replies = [
            Reply::ok(),
            Reply::err("ERR x"),
            Reply::Int(-5),
            Reply::bulk("a\r\nb"),
            Reply::Nil,
            Reply::NilArray,
            Reply::Double(2.5),
            Reply::Bool(true),
            Reply::Array(vec![Reply::Int(1), Reply::Array(vec![Reply::bulk("x")])]),
            Reply::Map(vec![(Reply::bulk("k"), Reply::Int(2))]),
            Reply::Set(vec![Reply::bulk("m")]),
            Reply::Push(vec![Reply::bulk("message")]),
        ];
        for r in replies {
            let mut out = Vec::new();
            // RESP3 has one null for both.
            encode(&r, r != Reply::NilArray, &mut out);
            assert_eq!(
                parse_reply(&out).unwrap(),
                Some((r.clone(), out.len())),
                "{r:?}"
            );
            assert_eq!(parse_reply(&out[..out.len() - 1]).unwrap(), None);
        }
    }

    proptest! {
        #[test]
        fn multibulk_round_trips(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)) {
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            let req = encode_request(&refs);
            let (got, used) = parse_request(&req).unwrap().unwrap();
            prop_assert_eq!(got, args);
            prop_assert_eq!(used, req.len());
        }

        #[test]
        fn a_request_in_pieces_parses_as_a_whole(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
            inline in any::<bool>(),
            step in 1usize..9,
        ) {
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            let mut req = if inline { b"PING hello\r\n".to_vec() } else { encode_request(&refs) };
            req.extend_from_slice(b"*1\r\n$4\r\nNEXT\r\n");
            let whole = parse_request(&req).unwrap().unwrap();
            // One parser fed the same buffer, grown a few bytes at a time.
            let mut p = RequestParser::default();
            let mut got = None;
            for len in (0..=req.len()).step_by(step).chain([req.len()]) {
                if let Some(r) = p.parse(&req[..len]).unwrap() {
                    got = Some(r);
                    break;
                }
            }
            prop_assert_eq!(got, Some(whole.clone()));
            // And it starts afresh on the next request.
            let next = p.parse(&req[whole.1..]).unwrap().unwrap();
            prop_assert_eq!(next.0, vec![b"NEXT".to_vec()]);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Some((_, used))) = parse_request(&bytes) {
                prop_assert!(used <= bytes.len() && used > 0);
            }
        }

        #[test]
        fn inline_words_round_trip(words in proptest::collection::vec("[a-zA-Z0-9:_.-]{1,12}", 1..6)) {
            let line = format!("{}\r\n", words.join(" "));
            let (got, _) = parse_request(line.as_bytes()).unwrap().unwrap();
            let want: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
            prop_assert_eq!(got, want);
        }
    }
}

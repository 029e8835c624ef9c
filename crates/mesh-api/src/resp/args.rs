//! Argument parsing with Redis's rules and error texts (`string2ll`,
//! `strtod`-style floats, score bounds, blocking timeouts), so a client sees
//! the error Redis would give.

use std::ops::Bound;
use std::time::Duration;

use super::frame::Reply;

/// An error reply, or a value.
pub type Arg<T> = Result<T, Reply>;

/// Redis's `ERR syntax error` reply.
pub fn syntax() -> Reply {
    Reply::err("ERR syntax error")
}

/// Redis's reply to an argument that is not a 64-bit integer.
pub fn not_integer() -> Reply {
    Reply::err("ERR value is not an integer or out of range")
}

/// `a` equals `word`, ignoring ASCII case.
pub fn is(a: &[u8], word: &str) -> bool {
    a.eq_ignore_ascii_case(word.as_bytes())
}

/// An integer as Redis's `string2ll` reads it: optional `-`, digits, no `+`,
/// no blanks, no leading zero, within 64 bits.
pub fn int(a: &[u8]) -> Arg<i64> {
    let digits = a.strip_prefix(b"-").unwrap_or(a);
    let ok = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || a == b"0");
    ok.then(|| std::str::from_utf8(a).ok()?.parse::<i64>().ok())
        .flatten()
        .ok_or_else(not_integer)
}

/// A float as Redis reads one (`inf`, `-inf`, exponents; never NaN, no blanks).
pub fn float_with(a: &[u8], err: &'static str) -> Arg<f64> {
    let s = std::str::from_utf8(a).map_err(|_| Reply::err(err))?;
    let blank = |c: char| c.is_ascii_whitespace();
    if s.is_empty() || s.starts_with(blank) || s.ends_with(blank) {
        return Err(Reply::err(err));
    }
    match s.parse::<f64>() {
        Ok(v) if !v.is_nan() => Ok(v),
        _ => Err(Reply::err(err)),
    }
}

/// A float as Redis reads one, with Redis's `not a valid float` error.
pub fn float(a: &[u8]) -> Arg<f64> {
    float_with(a, "ERR value is not a valid float")
}

/// A `ZRANGEBYSCORE` bound: a score, `(score` (exclusive), `-inf`, `+inf`.
pub fn score_bound(a: &[u8]) -> Arg<Bound<f64>> {
    const ERR: &str = "ERR min or max is not a float";
    match a.strip_prefix(b"(") {
        Some(rest) => float_with(rest, ERR).map(Bound::Excluded),
        None => float_with(a, ERR).map(Bound::Included),
    }
}

/// A blocking command's timeout in seconds (a float, 0 = forever).
pub fn timeout(a: &[u8]) -> Arg<Option<Duration>> {
    let secs = float_with(a, "ERR timeout is not a float or out of range")?;
    if secs < 0.0 {
        return Err(Reply::err("ERR timeout is negative"));
    }
    if !secs.is_finite() || secs > 1e12 {
        return Err(Reply::err("ERR timeout is out of range"));
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// `LEFT` or `RIGHT` (true for left, the front).
pub fn side(a: &[u8]) -> Arg<bool> {
    if is(a, "left") {
        Ok(true)
    } else if is(a, "right") {
        Ok(false)
    } else {
        Err(syntax())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(int(b"0"), Ok(0));
        assert_eq!(int(b"-12"), Ok(-12));
        assert_eq!(int(b"9223372036854775807"), Ok(i64::MAX));
        for bad in [
            &b""[..],
            b"+1",
            b" 1",
            b"1 ",
            b"01",
            b"1.0",
            b"-",
            b"9223372036854775808",
            b"abc",
        ] {
            assert_eq!(int(bad), Err(not_integer()), "{bad:?}");
        }
    }

    #[test]
    fn floats_bounds_and_timeouts() {
        assert_eq!(float(b"1.5"), Ok(1.5));
        assert_eq!(float(b"-inf"), Ok(f64::NEG_INFINITY));
        assert_eq!(float(b"+inf"), Ok(f64::INFINITY));
        assert_eq!(float(b"1e3"), Ok(1000.0));
        for bad in [&b"nan"[..], b"", b" 1", b"x"] {
            assert!(float(bad).is_err(), "{bad:?}");
        }
        assert_eq!(score_bound(b"(2"), Ok(Bound::Excluded(2.0)));
        assert_eq!(score_bound(b"-inf"), Ok(Bound::Included(f64::NEG_INFINITY)));
        assert_eq!(
            score_bound(b"(x"),
            Err(Reply::err("ERR min or max is not a float"))
        );
        assert_eq!(timeout(b"0"), Ok(None));
        assert_eq!(timeout(b"0.5"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(timeout(b"-1"), Err(Reply::err("ERR timeout is negative")));
        assert_eq!(
            timeout(b"soon"),
            Err(Reply::err("ERR timeout is not a float or out of range"))
        );
    }
}

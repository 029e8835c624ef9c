//! Percent-encoding of one URL path segment, for every client of the HTTP API
//! (the CLI, workers, the MCP server): task ids and keys may hold '/', spaces,
//! anything.

/// `s` with every byte but `A-Z a-z 0-9 - _ . ~` as `%XX`.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(super::segment("a/b c:ü"), "a%2Fb%20c%3A%C3%BC");
        assert_eq!(super::segment("plain-key_1.2~"), "plain-key_1.2~");
    }
}

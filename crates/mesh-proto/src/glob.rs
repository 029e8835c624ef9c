//! Redis-style glob patterns for `KEYS` and `SCAN MATCH`: `*`, `?`, `[abc]`,
//! `[^a]`, `[a-z]` and `\` to escape. Matching is on bytes and never recurses
//! deeper than the pattern, so a hostile pattern costs O(pattern x key).

/// True if `key` matches `pattern`.
pub fn matches(pattern: &[u8], key: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking (linear in practice).
    let (mut p, mut k) = (0usize, 0usize);
    let (mut star_p, mut star_k): (Option<usize>, usize) = (None, 0);
    while k < key.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star_p = Some(p);
                    star_k = k;
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    k += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, key[k]) {
                        if matched {
                            p = next;
                            k += 1;
                            continue;
                        }
                    } else if key[k] == b'[' {
                        // An unclosed '[' is a literal.
                        p += 1;
                        k += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == key[k] {
                        p += 2;
                        k += 1;
                        continue;
                    }
                }
                c => {
                    if c == key[k] {
                        p += 1;
                        k += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: backtrack to the last star, letting it eat one more byte.
        match star_p {
            Some(sp) => {
                p = sp + 1;
                star_k += 1;
                k = star_k;
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Matches `c` against the class starting at `pattern[start] == '['`; returns
/// (matched, index after the class), or `None` if the class is unclosed.
fn class(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let b = pattern[i];
        if b == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if b == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (b.min(pattern[i + 2]), b.max(pattern[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= b == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn redis_examples() {
        for (p, k, want) in [
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h*llo", "heeeello", true),
            ("h*llo", "hllo", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[a-b]llo", "hcllo", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("task:*", "task:42", true),
            ("h\\*llo", "h*llo", true),
            ("h\\*llo", "hello", false),
            ("[", "[", true),
        ] {
            assert_eq!(matches(p.as_bytes(), k.as_bytes()), want, "{p} ~ {k}");
        }
    }

    #[test]
    fn hostile_patterns_stay_fast() {
        let p = "*a".repeat(50) + "b";
        let k = "a".repeat(5000);
        assert!(!matches(p.as_bytes(), k.as_bytes()));
    }
}

//! Shared memory: namespaced keys over the replicated keyspace.
//!
//! A namespace `ns` and key `k` are the keyspace key `ns:k` (so the Redis
//! endpoint sees `SET ns:k v` as the same key). Namespaces are 1-64 characters
//! of `A-Z a-z 0-9 _ . -`, so the first `:` always ends the namespace. Keys are
//! non-empty UTF-8 without control characters; namespace, `:` and key together
//! are at most 4 KiB. Values are bytes, at most 4 MiB. TTLs are whole seconds,
//! 1 to 10 years, counted from the leader's clock when it orders the write.

use base64::Engine as _;
use serde::Serialize;

use super::{Service, ServiceError};
use mesh_state::keyspace::Entry;
use mesh_state::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use mesh_state::{Command, Expiry, KvCmd, Reply, RequestId, SetCond, Value};

/// Longest namespace.
pub const MAX_NAMESPACE_BYTES: usize = 64;
/// Longest TTL: ten years.
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// Most keys one listing returns.
pub const MAX_LIST_LIMIT: usize = 10_000;
/// Keys a listing returns unless asked otherwise.
pub const DEFAULT_LIST_LIMIT: usize = 1_000;
/// Most keys one bulk write sets.
pub const MAX_BULK_ITEMS: usize = 1_000;

/// Checks a namespace: 1 to [`MAX_NAMESPACE_BYTES`] characters of `A-Z a-z 0-9 _ . -`.
pub(crate) fn validate_namespace(ns: &str) -> Result<(), ServiceError> {
    if ns.is_empty() || ns.len() > MAX_NAMESPACE_BYTES {
        return Err(ServiceError::bad(
            "bad_namespace",
            format!("namespace must be 1 to {MAX_NAMESPACE_BYTES} characters"),
        ));
    }
    if let Some(c) = ns
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ServiceError::bad(
            "bad_namespace",
            format!("namespace '{ns}' has the character {c:?}; allowed are A-Z a-z 0-9 _ . -"),
        ));
    }
    Ok(())
}

/// The keyspace key of `key` in `ns`, checked.
pub fn full_key(ns: &str, key: &str) -> Result<Vec<u8>, ServiceError> {
    validate_namespace(ns)?;
    if key.is_empty() {
        return Err(ServiceError::bad("bad_key", "key must not be empty"));
    }
    if key.chars().any(char::is_control) {
        return Err(ServiceError::bad(
            "bad_key",
            "key must not contain control characters",
        ));
    }
    let full = format!("{ns}:{key}");
    if full.len() > MAX_KEY_BYTES {
        return Err(ServiceError::bad(
            "too_large",
            format!(
                "namespace and key are {} bytes, over the limit of {MAX_KEY_BYTES}",
                full.len()
            ),
        ));
    }
    Ok(full.into_bytes())
}

/// Checks a value's size.
fn check_value(value: &[u8]) -> Result<(), ServiceError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ServiceError::bad(
            "too_large",
            format!(
                "value of {} bytes is over the limit of {MAX_VALUE_BYTES} bytes",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a TTL in seconds.
pub fn ttl_ms(ttl_secs: u64) -> Result<u64, ServiceError> {
    if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
        return Err(ServiceError::bad(
            "bad_ttl",
            format!("ttl {ttl_secs} s is out of range: 1 to {MAX_TTL_SECS} seconds"),
        ));
    }
    Ok(ttl_secs * 1000)
}

/// How a put is conditioned.
#[derive(Debug, Clone, Default)]
pub enum PutCondition {
    /// Write whatever the key holds (the default).
    #[default]
    Always,
    /// Only if the key does not exist.
    IfAbsent,
    /// Only if the key exists.
    IfPresent,
    /// Compare-and-set: only if the current string value equals this.
    IfValue(Vec<u8>),
}

/// A put's options.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Expire the key this many seconds after the write (1 to [`MAX_TTL_SECS`]);
    /// `None`: never.
    pub ttl_secs: Option<u64>,
    /// When the write happens.
    pub condition: PutCondition,
    /// The client's request id, so a retry applies at most once; `None`: a fresh one.
    pub request_id: Option<RequestId>,
}

/// Bytes as JSON: a string when UTF-8, else `{"base64": "..."}`.
pub fn bytes_json(b: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(b) {
        Ok(s) => serde_json::Value::String(s.to_string()),
        Err(_) => serde_json::json!({
            "base64": base64::engine::general_purpose::STANDARD.encode(b)
        }),
    }
}

/// A key's value as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct KvItem {
    /// The key's namespace.
    pub namespace: String,
    /// The key within the namespace.
    pub key: String,
    /// string, list, set, zset or hash.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// A string value, or the elements of a list/set, `[member, score]` pairs of
    /// a sorted set, an object of a hash. Non-UTF-8 bytes are `{"base64": ...}`.
    pub value: serde_json::Value,
    /// Milliseconds left, or `null` for no expiry.
    pub ttl_ms: Option<u64>,
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Str(b) => bytes_json(b),
        Value::List(l) => l.iter().map(|b| bytes_json(b)).collect(),
        Value::Set(s) => s.iter().map(|b| bytes_json(b)).collect(),
        Value::ZSet(z) => z
            .iter(false)
            .map(|(m, score)| serde_json::json!([bytes_json(m), score]))
            .collect(),
        Value::Hash(h) => {
            let mut o = serde_json::Map::new();
            for (f, v) in h.iter() {
                o.insert(String::from_utf8_lossy(f).into_owned(), bytes_json(v));
            }
            serde_json::Value::Object(o)
        }
    }
}

/// A listing of keys in a namespace.
#[derive(Debug, Clone, Serialize)]
pub struct KvList {
    /// The namespace listed.
    pub namespace: String,
    /// Matching keys without the namespace, in order, at most `limit`.
    pub keys: Vec<String>,
    /// More keys matched than `limit`.
    pub truncated: bool,
}

/// Escapes glob metacharacters so `s` matches itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Service {
    /// Writes a string value. Returns whether it was written (a condition may
    /// have prevented it).
    pub async fn kv_put(
        &self,
        ns: &str,
        key: &str,
        value: Vec<u8>,
        opts: PutOptions,
    ) -> Result<bool, ServiceError> {
        let key = full_key(ns, key)?;
        check_value(&value)?;
        let expiry = match opts.ttl_secs {
            Some(t) => Expiry::In(ttl_ms(t)?),
            None => Expiry::Never,
        };
        let cmd = match opts.condition {
            PutCondition::IfValue(expected) => KvCmd::Cas {
                key,
                expected: Some(expected),
                new: value,
                expiry,
            },
            cond => KvCmd::Set {
                key,
                value,
                cond: match cond {
                    PutCondition::IfAbsent => SetCond::IfAbsent,
                    PutCondition::IfPresent => SetCond::IfPresent,
                    _ => SetCond::Always,
                },
                get: false,
                expiry,
            },
        };
        let reply = self.write_ok(Command::Kv(cmd), opts.request_id).await?;
        Ok(matches!(reply, Reply::Ok | Reply::Int(1)))
    }

    /// Writes many keys of `ns` as one replicated command: all of them or, if
    /// any is refused, none (everything is checked before anything is
    /// proposed). Returns how many were written.
    pub async fn kv_put_many(
        &self,
        ns: &str,
        items: Vec<(String, Vec<u8>)>,
        ttl_secs: Option<u64>,
        request_id: Option<RequestId>,
    ) -> Result<usize, ServiceError> {
        if items.is_empty() || items.len() > MAX_BULK_ITEMS {
            return Err(ServiceError::bad(
                "bad_items",
                format!("give 1 to {MAX_BULK_ITEMS} items, not {}", items.len()),
            ));
        }
        let expiry = match ttl_secs {
            Some(t) => Expiry::In(ttl_ms(t)?),
            None => Expiry::Never,
        };
        let mut cmds = Vec::with_capacity(items.len());
        let mut total = 0usize;
        for (key, value) in items {
            let key = full_key(ns, &key)?;
            check_value(&value)?;
            total += key.len() + value.len();
            cmds.push(KvCmd::Set {
                key,
                value,
                cond: SetCond::Always,
                get: false,
                expiry,
            });
        }
        if total > MAX_VALUE_BYTES {
            return Err(ServiceError::bad(
                "too_large",
                format!("a bulk write of {total} bytes is over the limit of {MAX_VALUE_BYTES}"),
            ));
        }
        let n = cmds.len();
        self.write_ok(Command::Multi(cmds), request_id).await?;
        Ok(n)
    }

    /// Reads a key (any type).
    pub async fn kv_get(
        &self,
        ns: &str,
        key: &str,
        stale: bool,
    ) -> Result<Option<KvItem>, ServiceError> {
        let full = full_key(ns, key)?;
        self.read(stale, |sm| {
            let now = Service::read_clock(sm);
            sm.keyspace.get(&full, now).map(|e: &Entry| KvItem {
                namespace: ns.to_string(),
                key: key.to_string(),
                kind: e.value.value_type().as_str(),
                value: value_json(&e.value),
                ttl_ms: e.expires_at_ms.map(|at| at.saturating_sub(now)),
            })
        })
        .await
    }

    /// Deletes a key; returns whether it existed.
    pub async fn kv_delete(
        &self,
        ns: &str,
        key: &str,
        request_id: Option<RequestId>,
    ) -> Result<bool, ServiceError> {
        let key = full_key(ns, key)?;
        let reply = self
            .write_ok(Command::Kv(KvCmd::Del { keys: vec![key] }), request_id)
            .await?;
        Ok(reply == Reply::Int(1))
    }

    /// Keys of `ns` that start with `prefix` and match the glob `pattern` (both
    /// optional; the pattern applies to the key without the namespace), in order.
    pub async fn kv_list(
        &self,
        ns: &str,
        prefix: Option<&str>,
        pattern: Option<&str>,
        limit: Option<usize>,
        stale: bool,
    ) -> Result<KvList, ServiceError> {
        validate_namespace(ns)?;
        let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(ServiceError::bad(
                "bad_limit",
                format!("limit {limit} is out of range: 1 to {MAX_LIST_LIMIT}"),
            ));
        }
        let glob = format!(
            "{ns}:{}{}",
            glob_escape(prefix.unwrap_or("")),
            pattern.unwrap_or("*")
        );
        if glob.len() > MAX_KEY_BYTES {
            return Err(ServiceError::bad("too_large", "pattern is too long"));
        }
        let skip = ns.len() + 1;
        let range = format!("{ns}:{}", prefix.unwrap_or(""));
        self.read(stale, |sm| {
            let now = Service::read_clock(sm);
            let (keys, truncated) =
                sm.keyspace
                    .keys_with_prefix(range.as_bytes(), glob.as_bytes(), limit, now);
            KvList {
                namespace: ns.to_string(),
                keys: keys
                    .into_iter()
                    .map(|k| String::from_utf8_lossy(&k[skip..]).into_owned())
                    .collect(),
                truncated,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_keys_are_checked() {
        assert!(full_key("agents.v1", "a/b c").is_ok());
        assert_eq!(full_key("ns", "k").unwrap(), b"ns:k");
        for bad in ["", "a:b", "a b", "ü", &"x".repeat(65)] {
            assert_eq!(
                full_key(bad, "k").unwrap_err().code(),
                "bad_namespace",
                "{bad:?}"
            );
        }
        assert_eq!(full_key("ns", "").unwrap_err().code(), "bad_key");
        assert_eq!(full_key("ns", "a\nb").unwrap_err().code(), "bad_key");
        assert_eq!(
            full_key("ns", &"k".repeat(MAX_KEY_BYTES))
                .unwrap_err()
                .code(),
            "too_large"
        );
        assert_eq!(ttl_ms(0).unwrap_err().code(), "bad_ttl");
        assert_eq!(ttl_ms(MAX_TTL_SECS + 1).unwrap_err().code(), "bad_ttl");
        assert_eq!(ttl_ms(30).unwrap(), 30_000);
    }

    #[test]
    fn prefixes_are_escaped_in_patterns() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}

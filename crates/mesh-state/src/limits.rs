//! Documented limits of the keyspace. A command over a limit is refused with
//! [`StateError::TooLarge`](crate::StateError::TooLarge) and changes nothing.

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// Longest string value, list element, set or sorted-set member, hash field or
/// hash value, in bytes.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;
/// Most elements one command may add or remove.
pub const MAX_ITEMS_PER_COMMAND: usize = 100_000;
/// Latest expiry accepted, in Unix milliseconds (the year 2286 or so; Redis's own
/// limit is similar): anything beyond is a bad TTL, not a far future.
pub const MAX_EXPIRY_MS: u64 = 9_999_999_999_999;
/// Longest client request id, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// How long a request id is remembered for deduplication.
pub const DEDUP_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Most request ids remembered at once: past it the oldest are forgotten first
/// (a retry that late is applied again). Bounds memory under heavy write load.
pub const DEDUP_MAX_ENTRIES: usize = 100_000;

//! Why a command was refused. A refused command changes nothing.

use serde::{Deserialize, Serialize};

/// A command's error, with a stable code for APIs and a Redis-compatible message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StateError {
    /// The key holds another type than the command works on (e.g. `LPUSH` on a string).
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// A string that `INCRBY` and friends must read as a 64-bit integer is not one.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// A sorted-set score or increment given is NaN.
    #[error("ERR value is not a valid float")]
    NotFloat,
    /// An integer increment would leave the 64-bit range.
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    /// A sorted-set increment would make a score NaN (`inf` plus `-inf`).
    #[error("ERR resulting score is not a number (NaN)")]
    NanScore,
    /// A key, value, body, reason, payload, result or request id is over its size limit.
    #[error("ERR {what} of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// What was too large (`key`, `value`, `task payload`, ...).
        what: String,
        /// Its size, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// An expiry beyond [`crate::limits::MAX_EXPIRY_MS`].
    #[error("ERR invalid expire time")]
    BadExpiry,
    /// The command is malformed or breaks a rule that does not depend on the
    /// state (a bad name, a count over a limit, incompatible options); the text says which.
    #[error("ERR {0}")]
    Invalid(String),
    /// The command names an agent, proposal, barrier or task that does not exist.
    #[error("ERR no such {what}: '{id}'")]
    NotFound {
        /// The kind of thing (`agent`, `proposal`, `barrier`, `task`).
        what: String,
        /// The id it was asked for by.
        id: String,
    },
    /// The command clashes with the current state: the id exists, the proposal
    /// is decided, the task moved on or lost its lease; the text says how.
    #[error("ERR {0}")]
    Conflict(String),
    /// The caller may not do this: not an eligible voter, or an agent lacking
    /// the capabilities a task needs.
    #[error("ERR {0}")]
    Forbidden(String),
    /// A vote whose signature does not verify against the agent's key.
    #[error("ERR bad vote signature")]
    BadSignature,
    /// `HINCRBY` on a field that does not hold an integer (Redis's own text).
    #[error("ERR hash value is not an integer")]
    HashNotInteger,
}

impl StateError {
    /// A short, stable code for JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            StateError::WrongType => "wrong_type",
            StateError::NotInteger => "not_integer",
            StateError::NotFloat => "not_float",
            StateError::Overflow => "overflow",
            StateError::NanScore => "nan_score",
            StateError::TooLarge { .. } => "too_large",
            StateError::BadExpiry => "bad_expiry",
            StateError::Invalid(_) => "invalid",
            StateError::NotFound { .. } => "not_found",
            StateError::Conflict(_) => "conflict",
            StateError::Forbidden(_) => "forbidden",
            StateError::BadSignature => "bad_signature",
            StateError::HashNotInteger => "not_integer",
        }
    }
}

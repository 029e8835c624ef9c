//! Why a command was refused. A refused command changes nothing.

use serde::{Deserialize, Serialize};

/// A command's error, with a stable code for APIs and a Redis-compatible message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StateError {
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR value is not a valid float")]
    NotFloat,
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    #[error("ERR resulting score is not a number (NaN)")]
    NanScore,
    #[error("ERR {what} of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        what: String,
        len: usize,
        max: usize,
    },
    #[error("ERR invalid expire time")]
    BadExpiry,
    #[error("ERR {0}")]
    Invalid(String),
    #[error("ERR no such {what}: '{id}'")]
    NotFound { what: String, id: String },
    #[error("ERR {0}")]
    Conflict(String),
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

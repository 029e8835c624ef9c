//! Service errors: each has a stable code (for JSON bodies and scripts), an HTTP
//! status, and a message that says what to do. A refused request changed nothing,
//! except a [`ServiceError::Timeout`] whose `may_have_applied` says it might have.

use mesh_state::StateError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// Bad input caught before anything was proposed.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// The state machine refused the command (the log entry changed nothing).
    #[error("{}", .0.to_string().trim_start_matches("ERR "))]
    State(StateError),
    #[error("no such {what}: '{id}'")]
    NotFound { what: &'static str, id: String },
    #[error(
        "read-only: this node reaches {reachable_voters} of {voters} voters, fewer than a quorum; writes are refused until the partition heals"
    )]
    ReadOnly {
        reachable_voters: usize,
        voters: usize,
    },
    #[error(
        "no leader: an election is under way or the log is not bootstrapped yet; retry shortly"
    )]
    NoLeader,
    #[error(
        "timed out; {}; retry with the same request id '{request_id}' to apply it at most once",
        if *.may_have_applied { "the write may still apply" } else { "the write was not applied" }
    )]
    Timeout {
        request_id: String,
        may_have_applied: bool,
    },
    #[error("timed out waiting for a linearizable read point; retry, or read with stale=true")]
    ReadTimeout,
    #[error("the node is stopping: {0}")]
    Stopped(String),
}

impl ServiceError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ServiceError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A short, stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::BadRequest { code, .. } => code,
            ServiceError::State(e) => e.code(),
            ServiceError::NotFound { .. } => "not_found",
            ServiceError::ReadOnly { .. } => "read_only",
            ServiceError::NoLeader => "no_leader",
            ServiceError::Timeout { .. } => "timeout",
            ServiceError::ReadTimeout => "read_timeout",
            ServiceError::Stopped(_) => "node_stopping",
        }
    }

    /// The HTTP status that fits.
    pub fn http_status(&self) -> u16 {
        match self {
            ServiceError::BadRequest { code, .. } if *code == "too_large" => 413,
            ServiceError::BadRequest { .. } => 400,
            ServiceError::State(e) => match e {
                StateError::NotFound { .. } => 404,
                StateError::Conflict(_) => 409,
                StateError::Forbidden(_) => 403,
                StateError::TooLarge { .. } => 413,
                _ => 400,
            },
            ServiceError::NotFound { .. } => 404,
            ServiceError::ReadOnly { .. } | ServiceError::NoLeader | ServiceError::Stopped(_) => {
                503
            }
            ServiceError::Timeout { .. } | ServiceError::ReadTimeout => 504,
        }
    }

    /// Extra fields for the JSON error body.
    pub fn details(&self) -> serde_json::Value {
        match self {
            ServiceError::Timeout {
                request_id,
                may_have_applied,
            } => {
                serde_json::json!({"request_id": request_id, "may_have_applied": may_have_applied})
            }
            ServiceError::ReadOnly {
                reachable_voters,
                voters,
            } => serde_json::json!({"reachable_voters": reachable_voters, "voters": voters}),
            _ => serde_json::Value::Null,
        }
    }
}

impl From<StateError> for ServiceError {
    fn from(e: StateError) -> Self {
        ServiceError::State(e)
    }
}

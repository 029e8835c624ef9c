//! Service errors: each has a stable code (for JSON bodies and scripts), an HTTP
//! status, and a message that says what to do. A refused request changed nothing,
//! except a [`ServiceError::Timeout`] whose `may_have_applied` says it might have.

use mesh_state::StateError;

/// Why a service call was refused or could not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// Bad input caught before anything was proposed.
    #[error("{message}")]
    BadRequest {
        /// Stable code naming the problem (`bad_wait`, `too_large`, ...).
        code: &'static str,
        /// What is wrong, for the client.
        message: String,
    },
    /// The state machine refused the command (the log entry changed nothing).
    #[error("{}", .0.to_string().trim_start_matches("ERR "))]
    State(StateError),
    /// The agent, proposal, barrier, task or key asked for does not exist.
    #[error("no such {what}: '{id}'")]
    NotFound {
        /// What kind of thing was looked up (`agent`, `proposal`, ...).
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// This node reaches fewer voters than a quorum (a partition): writes and
    /// linearizable reads are refused.
    #[error(
        "read-only: this node reaches {reachable_voters} of {voters} voters, fewer than a quorum; writes are refused until the partition heals"
    )]
    ReadOnly {
        /// Voters this node's membership view has not confirmed dead.
        reachable_voters: usize,
        /// Voters in the configuration.
        voters: usize,
    },
    /// No leader (or pBFT primary) emerged before the deadline.
    #[error(
        "no leader: an election is under way or the log is not bootstrapped yet; retry shortly"
    )]
    NoLeader,
    /// A write ran out of time.
    #[error(
        "timed out; {}; retry with the same request id '{request_id}' to apply it at most once",
        if *.may_have_applied { "the write may still apply" } else { "the write was not applied" }
    )]
    Timeout {
        /// The write's request id: retrying with it applies the write at most once.
        request_id: String,
        /// Whether an attempt may have reached the leader, so the write may still apply.
        may_have_applied: bool,
    },
    /// A linearizable read found no read point in time.
    #[error("timed out waiting for a linearizable read point; retry, or read with stale=true")]
    ReadTimeout,
    /// The engine, the messaging runtime or the read-index task is gone (the
    /// node is stopping), or the state machine answered with a reply of the
    /// wrong shape; the text says which.
    #[error("the node is stopping: {0}")]
    Stopped(String),
}

impl ServiceError {
    /// A [`ServiceError::BadRequest`] with this code and message.
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

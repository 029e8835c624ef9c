//! Channel names and subscription patterns.
//!
//! A channel is a printable name of at most [`MAX_CHANNEL_BYTES`] bytes. A
//! pattern is a channel name with Redis glob syntax (`*`, `?`, `[abc]`,
//! `[^a]`, `[a-z]`, `\` escapes); a pattern whose class is never closed or that
//! ends in a lone `\` is refused, because it cannot mean what its author meant.
//!
//! Two prefixes belong to the mesh and cannot be published to directly:
//! - `mesh.` — system events each node derives from its own view (members,
//!   leader, tasks, proposals, topology, mode), see [`system`];
//! - `inbox.` — direct messages: `inbox.agent.<id>`, `inbox.node.<name>` and
//!   `inbox.all` (broadcast), sent with a receipt through [`crate::Messenger::send_direct`].

use crate::wire::Recipient;

/// Longest channel name or pattern, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 256;
/// Largest message payload, in bytes (bigger messages are refused, not cut).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Why a channel name or pattern is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The name or pattern is the empty string.
    #[error("channel name is empty")]
    Empty,
    /// The name or pattern is longer than [`MAX_CHANNEL_BYTES`].
    #[error("channel name is {len} bytes; the limit is {max}")]
    TooLong {
        /// Length of the refused name, in bytes.
        len: usize,
        /// The limit, [`MAX_CHANNEL_BYTES`].
        max: usize,
    },
    /// The name holds a space, a control character or DEL.
    #[error("channel name has a control character or space at byte {at}; use printable characters")]
    NotPrintable {
        /// Byte offset of the first offending character.
        at: usize,
    },
    /// A pattern opens a `[` class that no `]` closes.
    #[error("pattern has a '[' at byte {at} that is never closed with ']'")]
    UnclosedClass {
        /// Byte offset of the unclosed `[`.
        at: usize,
    },
    /// A pattern ends with a `\` that escapes nothing.
    #[error("pattern ends with a lone '\\' (escape what?)")]
    TrailingEscape,
    /// A publish names a channel under the reserved `mesh.` or `inbox.` prefix.
    #[error(
        "channel '{name}' is reserved: 'mesh.*' carries the mesh's own events and 'inbox.*' direct messages (send those as direct messages)"
    )]
    Reserved {
        /// The refused channel name.
        name: String,
    },
}

fn printable(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL_BYTES {
        return Err(ChannelError::TooLong {
            len: name.len(),
            max: MAX_CHANNEL_BYTES,
        });
    }
    if let Some(at) = name.bytes().position(|b| b <= b' ' || b == 0x7f) {
        return Err(ChannelError::NotPrintable { at });
    }
    Ok(())
}

/// True for the mesh's own prefixes (`mesh.`, `inbox.`).
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(system::PREFIX) || name.starts_with(INBOX_PREFIX)
}

/// Checks a channel an application publishes to.
pub fn validate_publish(name: &str) -> Result<(), ChannelError> {
    printable(name)?;
    if is_reserved(name) {
        return Err(ChannelError::Reserved {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Checks a subscription pattern (a plain channel name is a pattern too).
pub fn validate_pattern(pattern: &str) -> Result<(), ChannelError> {
    printable(pattern)?;
    let b = pattern.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 == b.len() => return Err(ChannelError::TrailingEscape),
            b'\\' => i += 2,
            b'[' => {
                let start = i;
                i += 1;
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                // A ']' right after '[' or '[^' is the first member, as in Redis.
                let mut first = true;
                loop {
                    match b.get(i) {
                        None => return Err(ChannelError::UnclosedClass { at: start }),
                        Some(b'\\') => i += 2,
                        Some(b']') if !first => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                    first = false;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// True if `pattern` has no glob syntax, so it names exactly one channel.
pub fn is_literal(pattern: &str) -> bool {
    !pattern
        .bytes()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
}

/// The pattern that matches exactly `channel` (glob syntax escaped), as a
/// Redis `SUBSCRIBE` means it.
pub fn escape(channel: &str) -> String {
    let mut out = String::with_capacity(channel.len());
    for c in channel.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The one channel `pattern` matches, if it has no unescaped glob syntax
/// (`a\*b` is the channel `a*b`); `None` for a real pattern.
pub fn literal_channel(pattern: &str) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '*' | '?' | '[' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// True if `channel` matches `pattern`.
pub fn matches(pattern: &str, channel: &str) -> bool {
    mesh_proto::glob::matches(pattern.as_bytes(), channel.as_bytes())
}

/// Prefix of the direct-message channels.
pub const INBOX_PREFIX: &str = "inbox.";

/// The channel a direct message to `to` is delivered on.
pub fn inbox(to: &Recipient) -> String {
    match to {
        Recipient::Agent(id) => format!("inbox.agent.{id}"),
        Recipient::Node(name) => format!("inbox.node.{name}"),
        Recipient::All => "inbox.all".to_string(),
    }
}

/// The system channels: every node publishes these to its own subscribers
/// from its own view (gossip and the replicated state), so they cost no
/// network traffic and every node tells the same story.
pub mod system {
    /// Prefix of every system channel; applications cannot publish under it.
    pub const PREFIX: &str = "mesh.";
    /// A member joined, rejoined, or came back as a new incarnation.
    pub const MEMBER_JOINED: &str = "mesh.member.joined";
    /// A member stopped answering probes and is suspected.
    pub const MEMBER_SUSPECTED: &str = "mesh.member.suspected";
    /// A member was declared dead.
    pub const MEMBER_FAILED: &str = "mesh.member.failed";
    /// A member left the mesh on purpose.
    pub const MEMBER_LEFT: &str = "mesh.member.left";
    /// The Raft leader or the pBFT primary changed.
    pub const LEADER_CHANGED: &str = "mesh.leader.changed";
    /// Followed by the new state: `mesh.task.ready`, `mesh.task.completed`, ...
    pub const TASK_PREFIX: &str = "mesh.task.";
    /// A proposal was decided in the replicated state.
    pub const PROPOSAL_DECIDED: &str = "mesh.proposal.decided";
    /// An agent's state changed, or agents were orphaned because their node was confirmed dead.
    pub const AGENT_STATE: &str = "mesh.agent.state";
    /// A barrier was released.
    pub const BARRIER_RELEASED: &str = "mesh.barrier.released";
    /// Who is in the mesh changed, or this node's connectivity did.
    pub const TOPOLOGY_UPDATED: &str = "mesh.topology.updated";
    /// This node's write mode changed (read-write with a majority, read-only without).
    pub const MODE_CHANGED: &str = "mesh.mode.changed";
    /// pBFT: a replica holds proof that another one lied.
    pub const PBFT_EVIDENCE: &str = "mesh.pbft.evidence";

    /// Every fixed system channel, for documentation and the dashboard.
    pub const ALL: &[&str] = &[
        MEMBER_JOINED,
        MEMBER_SUSPECTED,
        MEMBER_FAILED,
        MEMBER_LEFT,
        LEADER_CHANGED,
        "mesh.task.<state>",
        PROPOSAL_DECIDED,
        AGENT_STATE,
        BARRIER_RELEASED,
        TOPOLOGY_UPDATED,
        MODE_CHANGED,
        PBFT_EVIDENCE,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_patterns() {
        assert_eq!(validate_publish(""), Err(ChannelError::Empty));
        assert!(matches!(
            validate_publish(&"x".repeat(257)),
            Err(ChannelError::TooLong { len: 257, .. })
        ));
        assert_eq!(
            validate_publish("a b"),
            Err(ChannelError::NotPrintable { at: 1 })
        );
        assert!(matches!(
            validate_publish("mesh.member.joined"),
            Err(ChannelError::Reserved { .. })
        ));
        assert!(matches!(
            validate_publish("inbox.all"),
            Err(ChannelError::Reserved { .. })
        ));
        assert!(validate_publish("jobs.build").is_ok());
        for ok in ["jobs.*", "a?c", "[abc]x", "[]]", "[^]a]", "x\\*", "mesh.*"] {
            assert_eq!(validate_pattern(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_pattern("jobs.[ab"),
            Err(ChannelError::UnclosedClass { at: 5 })
        );
        assert_eq!(validate_pattern("x\\"), Err(ChannelError::TrailingEscape));
        assert!(matches("jobs.*", "jobs.build") && !matches("jobs.*", "job"));
        assert!(is_literal("inbox.agent.a1") && !is_literal("inbox.*"));
        assert_eq!(inbox(&Recipient::Agent("a1".into())), "inbox.agent.a1");
    }

    #[test]
    fn escaped_channels_are_literal_patterns() {
        for ch in ["plain", "a*b", "q?[x]\\y", "é*"] {
            let p = escape(ch);
            assert!(validate_pattern(&p).is_ok(), "{p}");
            assert!(matches(&p, ch), "{p} matches {ch}");
            assert_eq!(literal_channel(&p).as_deref(), Some(ch));
        }
        assert!(!matches(&escape("a*"), "abc"));
        assert_eq!(literal_channel("a*"), None);
        assert_eq!(literal_channel("a[bc]"), None);
        assert_eq!(literal_channel("news.tech"), Some("news.tech".into()));
    }
}

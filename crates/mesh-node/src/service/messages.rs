//! Messaging through the service: pub/sub on any channel, direct messages to
//! an agent, a node or everyone, and subscriptions (including the `mesh.*`
//! system channels). Nothing here goes through the replicated log: messages
//! are for the present; what must not be lost belongs in tasks or keys.
//!
//! A direct message to an agent goes to the node the agent is registered on
//! (read from this replica: a registration a moment old may not be seen yet,
//! and the message is then refused as "no such agent", never misdelivered).

use mesh_membership::MemberState;
use mesh_msg::{DirectReport, MsgError, OpId, PublishReport, Recipient};

use super::{Service, ServiceError};
use crate::messaging::{MessagingError, MessagingStatus, Subscription};

/// Default time to live of a direct message.
pub const DEFAULT_TTL_MS: u64 = 60_000;

impl From<MessagingError> for ServiceError {
    fn from(e: MessagingError) -> Self {
        match e {
            MessagingError::Stopped => ServiceError::Stopped("messaging stopped".into()),
            MessagingError::Refused(e) => {
                let code = match e {
                    MsgError::TooLarge { .. } => "too_large",
                    MsgError::Channel(mesh_msg::ChannelError::Reserved { .. }) => {
                        "reserved_channel"
                    }
                    MsgError::Channel(_) | MsgError::NoPatterns => "bad_channel",
                    MsgError::BadTtl { .. } => "bad_ttl",
                    MsgError::NoSuchSubscription(_) => "not_found",
                };
                ServiceError::bad(code, e.to_string())
            }
        }
    }
}

impl Service {
    /// Publishes `payload` on `channel` to subscribers on every node.
    pub async fn publish(
        &self,
        from: &str,
        channel: &str,
        payload: Vec<u8>,
    ) -> Result<PublishReport, ServiceError> {
        Ok(self.inner.messaging.publish(from, channel, payload).await?)
    }

    /// The nodes that hold `to`'s inbox.
    pub async fn recipient_nodes(&self, to: &Recipient) -> Result<Vec<String>, ServiceError> {
        let members = self.inner.members.borrow().clone();
        let live = |m: &&mesh_membership::MemberInfo| {
            matches!(m.state, MemberState::Alive | MemberState::Suspect)
        };
        match to {
            Recipient::All => Ok(members.iter().filter(live).map(|m| m.id.clone()).collect()),
            Recipient::Node(name) => {
                if members.iter().filter(live).any(|m| &m.id == name) || name == self.node_name() {
                    Ok(vec![name.clone()])
                } else {
                    Err(ServiceError::NotFound {
                        what: "node (alive or suspected)",
                        id: name.clone(),
                    })
                }
            }
            Recipient::Agent(id) => {
                let agent = self.agent(id, true).await?;
                let held = agent.node == self.node_name()
                    || members.iter().filter(live).any(|m| m.id == agent.node);
                if !held {
                    return Err(ServiceError::NotFound {
                        what: "live node for the agent",
                        id: format!(
                            "{id} (registered on {}, which this node does not see alive)",
                            agent.node
                        ),
                    });
                }
                Ok(vec![agent.node])
            }
        }
    }

    /// Sends a direct message; returns its receipt as it stands after the
    /// reachable recipients acknowledged (or a short wait).
    pub async fn send_message(
        &self,
        from: &str,
        to: Recipient,
        payload: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(OpId, DirectReport), ServiceError> {
        let dests = self.recipient_nodes(&to).await?;
        let ttl = ttl_ms.unwrap_or(DEFAULT_TTL_MS);
        Ok(self
            .inner
            .messaging
            .send_direct(from, to, dests, payload, ttl)
            .await?)
    }

    /// The current receipt of a direct message sent through this node.
    pub async fn message_receipt(&self, op: OpId) -> Result<DirectReport, ServiceError> {
        self.inner
            .messaging
            .direct_report(op)
            .await?
            .ok_or_else(|| ServiceError::NotFound {
                what: "message receipt on this node",
                id: op.to_string(),
            })
    }

    /// Subscribes to the channels matching `patterns` on this node (messages
    /// published anywhere in the mesh arrive here). Dropping it unsubscribes.
    pub async fn subscribe_channels(
        &self,
        patterns: Vec<String>,
    ) -> Result<Subscription, ServiceError> {
        Ok(self.inner.messaging.subscribe(patterns).await?)
    }

    /// Subscriptions on every node that answers within a moment (Redis's `PUBSUB`).
    pub async fn mesh_subscriptions(
        &self,
    ) -> Result<crate::messaging::MeshSubscriptions, ServiceError> {
        Ok(self.inner.messaging.mesh_subscriptions().await?)
    }

    /// This node's messaging counters, peer queues and subscriptions.
    pub async fn messaging_status(&self) -> Result<MessagingStatus, ServiceError> {
        Ok(self.inner.messaging.status().await?)
    }
}

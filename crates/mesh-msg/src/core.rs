//! The messenger: subscriptions, mailboxes, publishes and direct messages of
//! one node, over one [`Sender`] per peer and one [`Receiver`] per sender.
//!
//! Data flow: `publish` / `send_direct` deliver to this node's subscribers at
//! once and queue the message on the stream of every peer concerned; `tick`
//! sends and re-sends what is due, expires what outlived its TTL, and closes
//! the wait of calls whose time is up; `handle` takes data (delivering in
//! order) and acks (collecting results). What the runtime must do comes out of
//! [`Messenger::drain_outputs`]: bytes to send, messages to hand to
//! subscribers, and the reports of finished calls.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use crate::channel::{self, ChannelError, MAX_PAYLOAD_BYTES};
use crate::stream::{Pending, Receiver, Sender};
use crate::wire::{Item, ItemResult, Message, MessageId, Recipient, Wire};

/// A subscription of this node.
pub type SubId = u64;
/// A publish or direct send, to match its report.
pub type OpId = u64;

/// Tuning of a messenger; every bound is a limit on memory or time.
#[derive(Debug, Clone)]
pub struct Config {
    /// Re-send an item unacknowledged this long.
    pub rto_ms: u64,
    /// How long a publish or direct send waits for reachable peers' acks
    /// before it reports (peers that did not answer are listed as missing).
    pub wait_ms: u64,
    /// A published message not delivered to a peer within this time is dropped
    /// for it (pub/sub is for the present; use direct messages to wait longer).
    pub pubsub_ttl_ms: u64,
    /// Unacknowledged items in flight per peer.
    pub window: usize,
    /// Items queued per peer, in flight or not; beyond it a peer is skipped.
    pub outbox_max: usize,
    /// Bytes queued per peer (payloads and names); beyond it a peer is skipped.
    pub outbox_max_bytes: usize,
    /// Items a receiver holds that arrived ahead of a gap.
    pub reorder_max: usize,
    /// Messages kept per recipient without a listener.
    pub mailbox_max: usize,
    /// Finished direct-send reports kept for queries.
    pub reports_max: usize,
    /// Items per data message.
    pub batch_max: usize,
    /// Longest TTL a direct message may ask for.
    pub max_ttl_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rto_ms: 500,
            wait_ms: 2_000,
            pubsub_ttl_ms: 10_000,
            window: 4_096,
            outbox_max: 100_000,
            outbox_max_bytes: 64 * 1024 * 1024,
            reorder_max: 4_096,
            mailbox_max: 1_000,
            reports_max: 10_000,
            batch_max: 512,
            max_ttl_ms: 24 * 3600 * 1000,
        }
    }
}

/// A peer as membership sees it. Its incarnation is not part of it: each
/// messenger learns its peers' incarnations from their `Reset` replies (the
/// first data message to a new peer draws one, and so does every restart),
/// because membership's generation changes when a member is renewed after a
/// false death while its messenger stays the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer node's name, as membership knows it.
    pub name: String,
    /// False while it is suspected or unreachable: messages wait for it.
    pub reachable: bool,
}

/// Why a call is refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    /// The channel name or a subscription pattern is refused.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("message is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Payload size, in bytes.
        len: usize,
        /// The limit, [`MAX_PAYLOAD_BYTES`].
        max: usize,
    },
    /// A direct message's TTL is 0 or above [`Config::max_ttl_ms`].
    #[error("ttl must be between 1 ms and {max_ms} ms")]
    BadTtl {
        /// The longest TTL allowed, in milliseconds.
        max_ms: u64,
    },
    /// Unsubscribing a subscription this node does not have.
    #[error("no such subscription: {0}")]
    NoSuchSubscription(SubId),
    /// Subscribing with an empty pattern list.
    #[error("a subscription needs at least one pattern")]
    NoPatterns,
}

/// The result of a publish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublishReport {
    /// The published message's id (`None` only in a default report).
    pub id: Option<MessageId>,
    /// Subscribers of this node that got it.
    pub local: u32,
    /// Subscribers per peer that acknowledged it.
    pub nodes: BTreeMap<String, u32>,
    /// Reachable peers that had not acknowledged it when the wait ended (it
    /// may still reach them within the pub/sub TTL).
    pub missing: Vec<String>,
    /// Peers it could not be sent to now (suspected, or their queue is full);
    /// it reaches them if they come back within the pub/sub TTL.
    pub unreachable: Vec<String>,
}

impl PublishReport {
    /// Subscribers known to have received it, on every node.
    pub fn receivers(&self) -> u32 {
        self.local + self.nodes.values().sum::<u32>()
    }
}

/// Where a direct message stands at one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "listeners", rename_all = "snake_case")]
pub enum DirectStatus {
    /// On its way (the node did not acknowledge yet, or is briefly away).
    Pending,
    /// Handed to this many listeners of the recipient.
    Delivered(u32),
    /// Kept in the recipient's mailbox until a listener comes or the TTL ends.
    Queued,
    /// The recipient's mailbox was full.
    MailboxFull,
    /// Not acknowledged within its TTL.
    Expired,
    /// The node left or failed before acknowledging it.
    Gone,
}

impl DirectStatus {
    /// True for every status but [`DirectStatus::Pending`]: it will not change.
    pub fn is_final(&self) -> bool {
        !matches!(self, DirectStatus::Pending)
    }
}

/// The receipt of a direct message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectReport {
    /// The direct message's id.
    pub id: MessageId,
    /// The recipient as addressed.
    pub to: Recipient,
    /// Status per node it was sent to.
    pub nodes: BTreeMap<String, DirectStatus>,
}

impl DirectReport {
    /// True once every node's status is final (none is pending).
    pub fn is_final(&self) -> bool {
        self.nodes.values().all(DirectStatus::is_final)
    }

    /// Listeners that received it, on every node.
    pub fn listeners(&self) -> u32 {
        self.nodes
            .values()
            .map(|s| match s {
                DirectStatus::Delivered(n) => *n,
                _ => 0,
            })
            .sum()
    }
}

/// What the runtime must do.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send `wire` to the peer node `to`.
    Send {
        /// The peer node's name.
        to: String,
        /// The message for that peer's messenger.
        wire: Wire,
    },
    /// Hand `msg` to these subscriptions.
    Deliver {
        /// This node's subscriptions whose patterns match the channel.
        subs: Vec<SubId>,
        /// The message, shared by every subscription.
        msg: Arc<Message>,
    },
    /// A publish finished: every reachable peer answered, or [`Config::wait_ms`] passed.
    Published {
        /// The publish call's id, as [`Messenger::publish`] returned it.
        op: OpId,
        /// Who received it.
        report: PublishReport,
    },
    /// The first report of a direct send (later changes: [`Messenger::direct_report`]).
    Direct {
        /// The send's id, as [`Messenger::send_direct`] returned it.
        op: OpId,
        /// Status per destination node at this point.
        report: DirectReport,
    },
}

/// Counters, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Publish calls accepted on this node.
    pub published: u64,
    /// Messages handed to this node's subscriptions, one per subscription.
    pub delivered: u64,
    /// Direct sends accepted on this node.
    pub direct_sent: u64,
    /// Items sent again after the retransmission timeout.
    pub retransmitted_items: u64,
    /// Items dropped from a peer's stream because their TTL ran out first.
    pub expired: u64,
    /// Messages dropped for a full peer queue or a full mailbox.
    pub dropped_full: u64,
    /// Items now waiting for a peer's acknowledgement, over every peer.
    pub queued_now: u64,
    /// Direct messages now held in this node's mailboxes.
    pub mailboxed_now: u64,
}

/// One peer's outgoing queue, for status and diagnosis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerQueue {
    /// The peer node's name.
    pub name: String,
    /// The peer's incarnation the stream is addressed to (0 until learned).
    pub epoch: u64,
    /// False while it is suspected or unreachable: its items wait, unsent.
    pub reachable: bool,
    /// Items waiting for its acknowledgement.
    pub queued: usize,
    /// Sequence number of the oldest of them, if any.
    pub oldest_seq: Option<u64>,
}

#[derive(Debug, Clone)]
struct Tag {
    op: OpId,
    direct: bool,
    expires_ms: u64,
}

struct Peer {
    reachable: bool,
    /// Addressed to the peer's incarnation as last learned (0 until learned).
    out: Sender<Tag>,
}

enum Op {
    Publish {
        report: PublishReport,
        waiting: BTreeSet<String>,
        deadline_ms: u64,
    },
    Direct {
        report: DirectReport,
        waiting: BTreeSet<String>,
        deadline_ms: u64,
        reported: bool,
    },
}

struct Mailed {
    expires_ms: u64,
    msg: Arc<Message>,
}

/// One node's messaging state.
pub struct Messenger {
    me: String,
    epoch: u64,
    cfg: Config,
    next_n: u64,
    next_op: OpId,
    next_sub: SubId,
    next_stream: u64,
    peers: BTreeMap<String, Peer>,
    inbound: BTreeMap<String, Receiver>,
    subs: BTreeMap<SubId, Vec<String>>,
    mailboxes: BTreeMap<String, VecDeque<Mailed>>,
    ops: BTreeMap<OpId, Op>,
    finished: VecDeque<(OpId, DirectReport)>,
    stats: Stats,
    out: Vec<Output>,
}

impl Messenger {
    /// `epoch` is this incarnation's number (the node uses its start time): it
    /// must grow across restarts.
    pub fn new(me: impl Into<String>, epoch: u64, cfg: Config) -> Self {
        Self {
            me: me.into(),
            epoch,
            cfg,
            next_n: 0,
            next_op: 0,
            next_sub: 0,
            next_stream: 0,
            peers: BTreeMap::new(),
            inbound: BTreeMap::new(),
            subs: BTreeMap::new(),
            mailboxes: BTreeMap::new(),
            ops: BTreeMap::new(),
            finished: VecDeque::new(),
            stats: Stats::default(),
            out: Vec::new(),
        }
    }

    /// This node's name, the origin of its messages.
    pub fn name(&self) -> &str {
        &self.me
    }

    /// This incarnation's number, as given to [`Messenger::new`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The tuning it runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Takes every output produced since the last call, in order.
    pub fn drain_outputs(&mut self) -> std::vec::Drain<'_, Output> {
        self.out.drain(..)
    }

    /// The counters, with the current queue and mailbox sizes filled in.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.queued_now = self.peers.values().map(|p| p.out.len() as u64).sum();
        s.mailboxed_now = self.mailboxes.values().map(|m| m.len() as u64).sum();
        s
    }

    /// Per peer: its incarnation, whether it is reachable, items waiting for
    /// its acknowledgement and the oldest one's sequence number.
    pub fn peer_queues(&self) -> Vec<PeerQueue> {
        self.peers
            .iter()
            .map(|(name, p)| PeerQueue {
                name: name.clone(),
                epoch: p.out.dest_epoch,
                reachable: p.reachable,
                queued: p.out.len(),
                oldest_seq: p.out.iter().next().map(|x| x.seq),
            })
            .collect()
    }

    /// Subscriptions and their patterns.
    pub fn subscriptions(&self) -> impl Iterator<Item = (SubId, &[String])> {
        self.subs.iter().map(|(k, v)| (*k, v.as_slice()))
    }

    /// The latest report of a direct send, while it is pending or among the
    /// last `reports_max` finished ones.
    pub fn direct_report(&self, op: OpId) -> Option<&DirectReport> {
        match self.ops.get(&op) {
            Some(Op::Direct { report, .. }) => Some(report),
            _ => self.finished.iter().find(|(o, _)| *o == op).map(|(_, r)| r),
        }
    }

    // ----- membership -----

    /// Updates the peer list: new peers get a stream (to an incarnation
    /// learned from their first reset), a peer no longer reachable is not
    /// waited for, a missing peer (it left) loses its stream and its pending
    /// messages are reported gone.
    pub fn set_peers(&mut self, now_ms: u64, peers: &[PeerInfo]) {
        let wanted: BTreeMap<&str, &PeerInfo> = peers
            .iter()
            .filter(|p| p.name != self.me)
            .map(|p| (p.name.as_str(), p))
            .collect();
        let gone: Vec<String> = self
            .peers
            .keys()
            .filter(|k| !wanted.contains_key(k.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut p) = self.peers.remove(&name) {
                for pending in p.out.drain() {
                    self.settle(&name, &pending.tag, Settle::Gone);
                }
            }
            // Its inbound stream state stays: if it comes back as the same
            // incarnation, its stream goes on where it was.
            self.unwait(&name);
        }
        for (name, info) in wanted {
            match self.peers.get_mut(name) {
                None => {
                    self.next_stream += 1;
                    let out = Sender::new(self.epoch, self.next_stream, 0);
                    let reachable = info.reachable;
                    self.peers.insert(name.to_string(), Peer { reachable, out });
                }
                Some(p) => {
                    let lost = p.reachable && !info.reachable;
                    p.reachable = info.reachable;
                    if lost {
                        self.unwait(name);
                    }
                }
            }
        }
        self.flush_sends(now_ms);
        self.close_ops(now_ms);
    }

    /// The peer is (now known to be) incarnation `epoch`: a fresh stream to
    /// it, and every unacknowledged item moves over with what is left of its
    /// TTL. A sender learns of a restart only when it next sends, so items on
    /// the old stream may well have been published after the restart: moving
    /// them loses nothing, at the price that a subscriber of the new
    /// incarnation may get a message published (at most the pub/sub TTL)
    /// before it subscribed.
    fn restarted(&mut self, now_ms: u64, name: &str, epoch: u64) {
        let Some(p) = self.peers.get_mut(name) else {
            return;
        };
        self.next_stream += 1;
        let mut old =
            std::mem::replace(&mut p.out, Sender::new(self.epoch, self.next_stream, epoch));
        let mut moved = Vec::new();
        for pending in old.drain() {
            let alive = pending.tag.expires_ms > now_ms;
            match pending.item {
                // Settled when it expired.
                Item::Skip => {}
                Item::Direct { msg, .. } if alive => {
                    let ttl_ms = pending.tag.expires_ms - now_ms;
                    moved.push((Some(Item::Direct { msg, ttl_ms }), pending.tag));
                }
                Item::Publish(msg) if alive => {
                    moved.push((Some(Item::Publish(msg)), pending.tag));
                }
                _ => moved.push((None, pending.tag)),
            }
        }
        for (item, tag) in moved {
            match item {
                Some(item) => {
                    if let Some(p) = self.peers.get_mut(name) {
                        p.out.push(item, tag);
                    }
                }
                None => {
                    let how = if tag.direct {
                        Settle::Expired
                    } else {
                        Settle::Gone
                    };
                    self.settle(name, &tag, how);
                }
            }
        }
    }

    // ----- subscriptions -----

    /// Subscribes to channels matching any of `patterns`. A literal inbox
    /// channel (`inbox.agent.<id>`) also receives what waits in its mailbox.
    pub fn subscribe(&mut self, now_ms: u64, patterns: Vec<String>) -> Result<SubId, MsgError> {
        if patterns.is_empty() {
            return Err(MsgError::NoPatterns);
        }
        for p in &patterns {
            channel::validate_pattern(p)?;
        }
        self.next_sub += 1;
        let id = self.next_sub;
        for p in patterns.iter().filter(|p| channel::is_literal(p)) {
            if let Some(mail) = self.mailboxes.remove(p) {
                for m in mail.into_iter().filter(|m| m.expires_ms > now_ms) {
                    self.stats.delivered += 1;
                    self.out.push(Output::Deliver {
                        subs: vec![id],
                        msg: m.msg,
                    });
                }
            }
        }
        self.subs.insert(id, patterns);
        Ok(id)
    }

    /// Drops a subscription: nothing more is delivered to it.
    pub fn unsubscribe(&mut self, sub: SubId) -> Result<(), MsgError> {
        self.subs
            .remove(&sub)
            .map(|_| ())
            .ok_or(MsgError::NoSuchSubscription(sub))
    }

    fn matching(&self, channel: &str) -> Vec<SubId> {
        self.subs
            .iter()
            .filter(|(_, ps)| ps.iter().any(|p| channel::matches(p, channel)))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Hands a message to this node's subscribers (or a direct one to its
    /// mailbox when nobody listens).
    fn deliver_here(&mut self, now_ms: u64, msg: Message, ttl_ms: Option<u64>) -> ItemResult {
        let subs = self.matching(&msg.channel);
        if !subs.is_empty() {
            let n = subs.len() as u32;
            self.stats.delivered += n as u64;
            self.out.push(Output::Deliver {
                subs,
                msg: Arc::new(msg),
            });
            return ItemResult::Delivered(n);
        }
        match (ttl_ms, &msg.to) {
            (Some(ttl), Some(Recipient::Agent(_) | Recipient::Node(_))) => {
                let max = self.cfg.mailbox_max;
                let mail = self.mailboxes.entry(msg.channel.clone()).or_default();
                mail.retain(|m| m.expires_ms > now_ms);
                if mail.len() >= max {
                    self.stats.dropped_full += 1;
                    return ItemResult::MailboxFull;
                }
                mail.push_back(Mailed {
                    expires_ms: now_ms.saturating_add(ttl),
                    msg: Arc::new(msg),
                });
                ItemResult::Queued
            }
            _ => ItemResult::Delivered(0),
        }
    }

    // ----- sending -----

    fn next_id(&mut self) -> MessageId {
        self.next_n += 1;
        MessageId {
            origin: self.me.clone(),
            epoch: self.epoch,
            n: self.next_n,
        }
    }

    fn check_payload(payload: &[u8]) -> Result<(), MsgError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(MsgError::TooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(())
    }

    /// Publishes to `channel` on every node. The report comes as
    /// [`Output::Published`] once every reachable peer acknowledged, or after
    /// `wait_ms`.
    pub fn publish(
        &mut self,
        now_ms: u64,
        from: &str,
        channel: &str,
        payload: Vec<u8>,
        sent_unix_ms: u64,
    ) -> Result<OpId, MsgError> {
        channel::validate_publish(channel)?;
        Self::check_payload(&payload)?;
        let msg = Message {
            id: self.next_id(),
            channel: channel.to_string(),
            from: from.to_string(),
            to: None,
            payload,
            sent_unix_ms,
        };
        self.stats.published += 1;
        self.next_op += 1;
        let op = self.next_op;
        let mut report = PublishReport {
            id: Some(msg.id.clone()),
            ..Default::default()
        };
        let mut waiting = BTreeSet::new();
        let tag = Tag {
            op,
            direct: false,
            expires_ms: now_ms.saturating_add(self.cfg.pubsub_ttl_ms),
        };
        let (outbox_max, outbox_bytes) = (self.cfg.outbox_max, self.cfg.outbox_max_bytes);
        let weight = msg.weight();
        for (name, p) in self.peers.iter_mut() {
            if p.out.len() >= outbox_max || p.out.bytes() + weight > outbox_bytes {
                self.stats.dropped_full += 1;
                report.unreachable.push(name.clone());
                continue;
            }
            p.out.push(Item::Publish(msg.clone()), tag.clone());
            if p.reachable {
                waiting.insert(name.clone());
            } else {
                report.unreachable.push(name.clone());
            }
        }
        if let ItemResult::Delivered(n) = self.deliver_here(now_ms, msg, None) {
            report.local = n;
        }
        self.ops.insert(
            op,
            Op::Publish {
                report,
                waiting,
                deadline_ms: now_ms.saturating_add(self.cfg.wait_ms),
            },
        );
        self.flush_sends(now_ms);
        self.close_ops(now_ms);
        Ok(op)
    }

    /// Delivers a system event to this node's subscribers only (every node
    /// derives its own from the same replicated state and gossip). Returns how
    /// many subscribers got it.
    pub fn publish_local(
        &mut self,
        now_ms: u64,
        channel: &str,
        payload: Vec<u8>,
        sent_unix_ms: u64,
    ) -> u32 {
        if self.subs.is_empty() {
            return 0;
        }
        let msg = Message {
            id: self.next_id(),
            channel: channel.to_string(),
            from: self.me.clone(),
            to: None,
            payload,
            sent_unix_ms,
        };
        match self.deliver_here(now_ms, msg, None) {
            ItemResult::Delivered(n) => n,
            _ => 0,
        }
    }

    /// Sends a direct message to `to`, held by the nodes `dests` (the node an
    /// agent is registered on, the named node, or every node for
    /// [`Recipient::All`]). A node not in the peer list is reported gone.
    #[allow(clippy::too_many_arguments)]
    pub fn send_direct(
        &mut self,
        now_ms: u64,
        from: &str,
        to: Recipient,
        dests: &[String],
        payload: Vec<u8>,
        ttl_ms: u64,
        sent_unix_ms: u64,
    ) -> Result<OpId, MsgError> {
        Self::check_payload(&payload)?;
        if ttl_ms == 0 || ttl_ms > self.cfg.max_ttl_ms {
            return Err(MsgError::BadTtl {
                max_ms: self.cfg.max_ttl_ms,
            });
        }
        let msg = Message {
            id: self.next_id(),
            channel: channel::inbox(&to),
            from: from.to_string(),
            to: Some(to.clone()),
            payload,
            sent_unix_ms,
        };
        self.stats.direct_sent += 1;
        self.next_op += 1;
        let op = self.next_op;
        let mut report = DirectReport {
            id: msg.id.clone(),
            to,
            nodes: BTreeMap::new(),
        };
        let mut waiting = BTreeSet::new();
        let tag = Tag {
            op,
            direct: true,
            expires_ms: now_ms.saturating_add(ttl_ms),
        };
        let (outbox_max, outbox_bytes) = (self.cfg.outbox_max, self.cfg.outbox_max_bytes);
        let weight = msg.weight();
        let dests: BTreeSet<&String> = dests.iter().collect();
        for dest in dests {
            if *dest == self.me {
                let r = self.deliver_here(now_ms, msg.clone(), Some(ttl_ms));
                report.nodes.insert(dest.clone(), status_of(r));
                continue;
            }
            let Some(p) = self.peers.get_mut(dest.as_str()) else {
                report.nodes.insert(dest.clone(), DirectStatus::Gone);
                continue;
            };
            if p.out.len() >= outbox_max || p.out.bytes() + weight > outbox_bytes {
                self.stats.dropped_full += 1;
                report.nodes.insert(dest.clone(), DirectStatus::Expired);
                continue;
            }
            p.out.push(
                Item::Direct {
                    msg: msg.clone(),
                    ttl_ms,
                },
                tag.clone(),
            );
            report.nodes.insert(dest.clone(), DirectStatus::Pending);
            if p.reachable {
                waiting.insert(dest.clone());
            }
        }
        self.ops.insert(
            op,
            Op::Direct {
                report,
                waiting,
                deadline_ms: now_ms.saturating_add(self.cfg.wait_ms.min(ttl_ms)),
                reported: false,
            },
        );
        self.flush_sends(now_ms);
        self.close_ops(now_ms);
        Ok(op)
    }

    fn flush_sends(&mut self, now_ms: u64) {
        let (rto, window, batch) = (self.cfg.rto_ms, self.cfg.window, self.cfg.batch_max);
        for (name, p) in self.peers.iter_mut().filter(|(_, p)| p.reachable) {
            let (wires, resent) = p.out.due(now_ms, rto, window, batch);
            self.stats.retransmitted_items += resent as u64;
            for wire in wires {
                self.out.push(Output::Send {
                    to: name.clone(),
                    wire,
                });
            }
        }
    }

    // ----- time -----

    /// Sends what is due, expires what outlived its TTL and closes waits whose
    /// time is up. Call it every few tens of milliseconds.
    pub fn tick(&mut self, now_ms: u64) {
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for name in names {
            let expired = match self.peers.get_mut(&name) {
                Some(p) => p.out.expire(|t| t.expires_ms <= now_ms),
                None => continue,
            };
            for tag in expired {
                self.stats.expired += 1;
                let how = if tag.direct {
                    Settle::Expired
                } else {
                    Settle::Missing
                };
                self.settle(&name, &tag, how);
            }
        }
        for mail in self.mailboxes.values_mut() {
            mail.retain(|m| m.expires_ms > now_ms);
        }
        self.mailboxes.retain(|_, m| !m.is_empty());
        self.flush_sends(now_ms);
        self.close_ops(now_ms);
    }

    // ----- input -----

    /// Takes a wire message from peer `from`.
    pub fn handle(&mut self, now_ms: u64, from: &str, wire: Wire) {
        match wire {
            Wire::Data {
                epoch,
                stream,
                dest_epoch,
                first_seq,
                base,
                items,
            } => {
                if dest_epoch != self.epoch {
                    self.out.push(Output::Send {
                        to: from.to_string(),
                        wire: Wire::Reset {
                            wanted: dest_epoch,
                            current: self.epoch,
                        },
                    });
                    return;
                }
                let known = self.inbound.get(from).map(|r| (r.epoch, r.stream));
                if known.is_some_and(|k| k > (epoch, stream)) {
                    return; // an older stream of that sender
                }
                if known.is_none_or(|k| k < (epoch, stream)) {
                    self.forget_idle_inbound();
                    self.inbound
                        .insert(from.to_string(), Receiver::new(epoch, stream));
                }
                let mut rx = self.inbound.remove(from).expect("inserted above");
                let reorder = self.cfg.reorder_max;
                let ack = rx.accept(
                    self.epoch,
                    first_seq,
                    base,
                    items,
                    reorder,
                    |item| match item {
                        Item::Publish(msg) => self.deliver_here(now_ms, msg, None),
                        Item::Direct { msg, ttl_ms } => {
                            self.deliver_here(now_ms, msg, Some(ttl_ms))
                        }
                        Item::Skip => ItemResult::Skipped,
                    },
                );
                self.inbound.insert(from.to_string(), rx);
                self.out.push(Output::Send {
                    to: from.to_string(),
                    wire: ack,
                });
            }
            Wire::Ack {
                epoch,
                stream,
                dest_epoch,
                upto,
                results,
            } => {
                let Some(p) = self.peers.get_mut(from) else {
                    return;
                };
                if epoch != self.epoch || stream != p.out.stream || dest_epoch != p.out.dest_epoch {
                    return;
                }
                let done = p.out.ack(upto, &results);
                for (pending, result) in done {
                    let Pending { item, tag, .. } = pending;
                    let how = match (item, result) {
                        (Item::Skip, _) => continue, // settled when it expired
                        (_, Some(r)) => Settle::Result(r),
                        // The receiver no longer remembers (it acked far
                        // more since): delivered, count unknown.
                        (_, None) => Settle::Result(ItemResult::Delivered(0)),
                    };
                    self.settle(from, &tag, how);
                }
                self.flush_sends(now_ms);
            }
            Wire::Reset { wanted, current } => {
                let restarted = self
                    .peers
                    .get(from)
                    .is_some_and(|p| p.out.dest_epoch == wanted && current > wanted);
                if restarted {
                    self.restarted(now_ms, from, current);
                    self.flush_sends(now_ms);
                }
            }
            // Subscription queries are answered by the node runtime from
            // `subscriptions`; they carry no stream state.
            Wire::SubsQuery { .. } | Wire::SubsReport { .. } => {}
        }
        self.close_ops(now_ms);
    }

    /// Bounds the receivers kept for senders no longer in the peer list.
    fn forget_idle_inbound(&mut self) {
        const MAX_INBOUND: usize = 4_096;
        if self.inbound.len() < MAX_INBOUND {
            return;
        }
        let idle = self
            .inbound
            .keys()
            .find(|k| !self.peers.contains_key(*k))
            .cloned();
        if let Some(k) = idle {
            self.inbound.remove(&k);
        }
    }

    // ----- bookkeeping of calls -----

    fn settle(&mut self, node: &str, tag: &Tag, how: Settle) {
        let Some(op) = self.ops.get_mut(&tag.op) else {
            return;
        };
        match op {
            Op::Publish {
                report, waiting, ..
            } => {
                waiting.remove(node);
                match how {
                    Settle::Result(ItemResult::Delivered(n)) => {
                        report.nodes.insert(node.to_string(), n);
                    }
                    Settle::Result(_) => {
                        report.nodes.insert(node.to_string(), 0);
                    }
                    Settle::Missing | Settle::Gone | Settle::Expired => {}
                }
            }
            Op::Direct {
                report, waiting, ..
            } => {
                waiting.remove(node);
                let status = match how {
                    Settle::Result(r) => status_of(r),
                    Settle::Expired | Settle::Missing => DirectStatus::Expired,
                    Settle::Gone => DirectStatus::Gone,
                };
                report.nodes.insert(node.to_string(), status);
            }
        }
    }

    /// A peer became unreachable or left: calls stop waiting for it.
    fn unwait(&mut self, node: &str) {
        for op in self.ops.values_mut() {
            match op {
                Op::Publish {
                    report, waiting, ..
                } => {
                    if waiting.remove(node) {
                        report.unreachable.push(node.to_string());
                    }
                }
                Op::Direct { waiting, .. } => {
                    waiting.remove(node);
                }
            }
        }
    }

    fn close_ops(&mut self, now_ms: u64) {
        let ready: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, op)| match op {
                Op::Publish {
                    waiting,
                    deadline_ms,
                    ..
                } => waiting.is_empty() || now_ms >= *deadline_ms,
                Op::Direct {
                    report,
                    waiting,
                    deadline_ms,
                    reported,
                } => {
                    report.is_final()
                        || (!*reported && (waiting.is_empty() || now_ms >= *deadline_ms))
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            match self.ops.remove(&id) {
                Some(Op::Publish {
                    mut report,
                    waiting,
                    ..
                }) => {
                    report.missing = waiting.into_iter().collect();
                    report.unreachable.sort();
                    report.unreachable.dedup();
                    self.out.push(Output::Published { op: id, report });
                }
                Some(Op::Direct {
                    report,
                    waiting,
                    deadline_ms,
                    reported,
                }) => {
                    if !reported {
                        self.out.push(Output::Direct {
                            op: id,
                            report: report.clone(),
                        });
                    }
                    if report.is_final() {
                        if self.finished.len() >= self.cfg.reports_max {
                            self.finished.pop_front();
                        }
                        self.finished.push_back((id, report));
                    } else {
                        self.ops.insert(
                            id,
                            Op::Direct {
                                report,
                                waiting,
                                deadline_ms,
                                reported: true,
                            },
                        );
                    }
                }
                None => {}
            }
        }
    }
}

enum Settle {
    Result(ItemResult),
    /// A published message outlived the pub/sub TTL before reaching the node.
    Missing,
    Expired,
    Gone,
}

fn status_of(r: ItemResult) -> DirectStatus {
    match r {
        ItemResult::Delivered(n) => DirectStatus::Delivered(n),
        ItemResult::Queued => DirectStatus::Queued,
        ItemResult::MailboxFull => DirectStatus::MailboxFull,
        ItemResult::Skipped => DirectStatus::Expired,
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

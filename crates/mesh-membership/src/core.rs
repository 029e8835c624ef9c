//! The membership core: SWIM (foca) plus soft-state gossip, anti-entropy, join,
//! failure confirmation records and quorum mode. Sans-IO.
//!
//! Data flow: the runtime (or the simulator) calls one input method with the
//! current time (`handle_datagram`, `handle_stream`, `handle_timer`, `start`,
//! `set_soft_state`, `leave`), then drains [`Output`]s: packets to send, timers
//! to set, events to report. The core never reads a clock, never draws from an
//! unseeded random source and never touches a socket, so the simulator can drive
//! thousands of them deterministically.
//!
//! Failure detection is SWIM's: a member that misses a direct probe and k indirect
//! ones becomes *suspect*; only the suspecting node may confirm it *dead*, and only
//! if no refutation (a higher incarnation) arrived within the suspicion timeout.
//! On top of foca, this core (1) sends the suspect a direct notice so it can refute
//! within one round trip rather than waiting for gossip (as Lifeguard's "buddy
//! system" does), and (2) gossips who suspected and who confirmed, so every node
//! can show it.

use std::collections::{BTreeMap, HashMap};
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::{Foca, Member, Notification, OwnedNotification, PostcardCodec, State};
use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};

use crate::events::{EventKind, MembershipEvent, Mode};
use crate::identity::MeshIdentity;
use crate::rumor::{DetectionKind, Learned, Rumor, RumorHandler};
use crate::view::{MemberInfo, MemberState};
use crate::wire::{Channel, DigestEntry, Envelope, HEADER_LEN, WireError};
use mesh_proto::{Load, SoftState, Timings};

/// The foca instance this core drives.
pub(crate) type FocaInstance<I> = Foca<I, PostcardCodec, Xoshiro256PlusPlus, RumorHandler<I>>;

/// Static settings of one membership core.
#[derive(Debug, Clone)]
pub struct MembershipConfig<E> {
    /// Probe, gossip, anti-entropy, retention and join-retry timings (from the profile).
    pub timings: Timings,
    /// Seed endpoints to join through (may be empty: a one-node mesh).
    pub seeds: Vec<E>,
    /// Largest datagram, header included.
    pub max_datagram_bytes: usize,
    /// Events kept for status queries.
    pub events_capacity: usize,
}

impl<E> MembershipConfig<E> {
    /// Settings with the standard datagram limit and a 256-event ring.
    pub fn new(timings: Timings, seeds: Vec<E>) -> Self {
        Self {
            timings,
            seeds,
            max_datagram_bytes: mesh_proto::limits::MAX_DATAGRAM_BYTES,
            events_capacity: 256,
        }
    }
}

/// A timer the core asked for; hand it back through [`Membership::handle_timer`].
#[derive(Debug, Clone)]
pub enum CoreTimer<I: MeshIdentity> {
    /// A timer foca scheduled (probe deadline, suspicion timeout, periodic
    /// gossip or announce); it goes back to foca.
    Foca(foca::Timer<I>),
    /// Time to send the joins to the seeds again, if still not connected.
    JoinRetry {
        /// The join round it belongs to; a retry from an older round is ignored.
        epoch: u32,
        /// Retry number within the round, from 1; sets the next (doubled) delay.
        attempt: u32,
    },
    /// Time for a push-pull soft-state sync with one random member.
    AntiEntropy,
    /// Time to resend the direct suspicion notice to a member this node suspects.
    SuspectNotice {
        /// The suspected member.
        subject: I,
        /// Its incarnation under suspicion; the resends stop once it has refuted.
        incarnation: u16,
        /// Resends still to schedule after this one (one per probe RTT).
        remaining: u32,
    },
    /// Time to drop a dead or departed member's record and soft state.
    ForgetDead {
        /// The member at the generation that went down (a newer one is kept).
        subject: I,
    },
}

/// An effect for the runtime to carry out.
#[derive(Debug, Clone)]
pub enum Output<I: MeshIdentity> {
    /// Send a packet.
    Send {
        /// The peer's or seed's endpoint.
        to: I::Endpoint,
        /// As a UDP datagram or as a TCP frame.
        channel: Channel,
        /// The encoded message, header included.
        bytes: Vec<u8>,
    },
    /// Set a timer.
    Timer {
        /// Milliseconds from the time of the input that produced it.
        after_ms: u64,
        /// What to hand back to [`Membership::handle_timer`] when it fires.
        timer: CoreTimer<I>,
    },
    /// Report an event (log it, publish it).
    Event(MembershipEvent),
}

/// Why an input was dropped. `reason()` labels the dropped-packets metric.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The packet's header or body does not decode.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// foca refused a SWIM packet: malformed, undecodable, or over the datagram limit.
    #[error("SWIM packet rejected: {0}")]
    Swim(foca::Error),
    /// An anti-entropy message came as a datagram, or a datagram message on a stream.
    #[error("{kind} sent over the wrong channel")]
    WrongChannel {
        /// Which family the message belongs to (`anti-entropy message`, `datagram message`).
        kind: &'static str,
    },
}

impl InputError {
    /// A short label for the dropped-packets metric.
    pub fn reason(&self) -> &'static str {
        match self {
            InputError::Wire(w) => w.reason(),
            InputError::Swim(foca::Error::DataTooBig) => "oversized",
            InputError::Swim(_) => "bad_swim",
            InputError::WrongChannel { .. } => "wrong_channel",
        }
    }
}

/// Measured per-member data that foca does not keep.
#[derive(Debug, Clone, Default)]
struct MemberMeta {
    /// Local time (µs) of the last state change.
    last_change_us: Option<u64>,
    /// Smoothed round-trip time of direct probes (EWMA, alpha 0.2).
    rtt_ms: Option<f64>,
}

#[derive(Debug, Clone)]
struct DownEntry<I> {
    identity: I,
    left: bool,
}

/// A probe whose ack we wait for, to measure its round-trip time.
#[derive(Debug, Clone)]
struct ProbeSent<K> {
    key: K,
    number: u8,
    at_us: u64,
}

/// A suspicion this node started (its probe failed), whose `ChangeSuspectToDown`
/// timer it owns. Kept so the timer can fire earlier as independent suspicions
/// from other members arrive (Lifeguard's dynamic suspicion timeout).
#[derive(Debug, Clone)]
struct LocalSuspicion<I> {
    timer: foca::Timer<I>,
    generation: u64,
    started_us: u64,
    deadline_us: u64,
}

/// Independent suspicions after which the timeout reaches its minimum (Lifeguard's K).
const SUSPICION_CONFIRMATIONS_K: f64 = 3.0;
/// The shortest suspicion timeout, as a fraction of the full one.
const SUSPICION_MIN_FRACTION: f64 = 0.4;

const MAX_PROBES_TRACKED: usize = 16;
const RTT_EWMA_ALPHA: f64 = 0.2;

/// One node's membership state machine.
pub struct Membership<I: MeshIdentity> {
    foca: FocaInstance<I>,
    identity: I,
    cfg: MembershipConfig<I::Endpoint>,
    rng: Xoshiro256PlusPlus,
    now_us: u64,
    local_soft: SoftState,
    out: Vec<Output<I>>,
    notes: Vec<OwnedNotification<I>>,
    meta: HashMap<I::Addr, MemberMeta>,
    probes: Vec<ProbeSent<I::Addr>>,
    down: BTreeMap<I::Addr, DownEntry<I>>,
    connected: bool,
    join_epoch: u32,
    mode: Mode,
    events: std::collections::VecDeque<MembershipEvent>,
    /// Set while bootstrapping a simulated mesh: no events, no per-member records.
    quiet: bool,
    /// The suspect whose `ChangeSuspectToDown` timer is being handled (we confirm it).
    confirming: Option<I::Addr>,
    suspicions: BTreeMap<I::Addr, LocalSuspicion<I>>,
    applied: (u8, u64),
    has_left: bool,
}

fn foca_config(t: &Timings, members: usize, max_packet: usize) -> foca::Config {
    let period = |ms: u64, n: usize| {
        Some(foca::PeriodicParams {
            frequency: Duration::from_millis(ms),
            num_members: NonZeroUsize::new(n.max(1)).expect("max(1)"),
        })
    };
    foca::Config {
        probe_period: Duration::from_millis(t.probe_period_ms),
        probe_rtt: Duration::from_millis(t.probe_rtt_ms),
        num_indirect_probes: NonZeroUsize::new(t.indirect_probes.max(1)).expect("max(1)"),
        max_transmissions: NonZeroU8::new(t.max_transmissions(members)).expect("at least 3"),
        suspect_to_down_after: Duration::from_millis(t.suspect_to_down_ms(members)),
        remove_down_after: Some(Duration::from_millis(t.dead_retain_ms)),
        max_packet_size: NonZeroUsize::new(max_packet).expect("positive packet size"),
        notify_down_members: true,
        periodic_announce: period(t.announce_interval_ms, 1),
        periodic_announce_to_down_members: period(t.announce_down_interval_ms, 1),
        periodic_gossip: period(t.gossip_interval_ms, t.gossip_fanout),
    }
}

/// foca's runtime, collecting its effects as our outputs.
struct FocaRt<'a, I: MeshIdentity> {
    out: &'a mut Vec<Output<I>>,
    notes: &'a mut Vec<OwnedNotification<I>>,
}

impl<I: MeshIdentity> foca::Runtime<I> for FocaRt<'_, I> {
    fn notify(&mut self, notification: Notification<'_, I>) {
        self.notes.push(notification.to_owned());
    }
    fn send_to(&mut self, to: I, data: &[u8]) {
        self.out.push(Output::Send {
            to: to.endpoint(),
            channel: Channel::Datagram,
            bytes: Envelope::<I>::encode_swim(data),
        });
    }
    fn submit_after(&mut self, event: foca::Timer<I>, after: Duration) {
        self.out.push(Output::Timer {
            after_ms: after.as_millis() as u64,
            timer: CoreTimer::Foca(event),
        });
    }
}

impl<I: MeshIdentity> Membership<I> {
    /// A new core for `identity`. `seed` feeds every random choice (probe order,
    /// gossip targets, anti-entropy peers); `soft` is the node's initial soft state.
    pub fn new(
        identity: I,
        cfg: MembershipConfig<I::Endpoint>,
        seed: u64,
        now_us: u64,
        soft: SoftState,
    ) -> Self {
        let max_packet = cfg.max_datagram_bytes - HEADER_LEN;
        let foca = Foca::with_custom_broadcast(
            identity.clone(),
            foca_config(&cfg.timings, 1, max_packet),
            Xoshiro256PlusPlus::seed_from_u64(seed),
            PostcardCodec,
            RumorHandler::new(identity.key()),
        );
        let mut core = Self {
            foca,
            identity,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            now_us,
            local_soft: SoftState::default(),
            out: Vec::new(),
            notes: Vec::new(),
            meta: HashMap::new(),
            probes: Vec::new(),
            down: BTreeMap::new(),
            connected: false,
            join_epoch: 0,
            mode: Mode::ReadWrite,
            events: std::collections::VecDeque::new(),
            quiet: false,
            confirming: None,
            suspicions: BTreeMap::new(),
            applied: (0, 0),
            has_left: false,
            cfg,
        };
        core.applied = (core.foca_max_tx(1), core.cfg.timings.suspect_to_down_ms(1));
        core.install_soft(soft, false);
        core
    }

    fn foca_max_tx(&self, n: usize) -> u8 {
        self.cfg.timings.max_transmissions(n)
    }

    // ----- inputs -------------------------------------------------------------

    /// Starts the node: contacts the seeds and schedules periodic work.
    pub fn start(&mut self, now_us: u64) {
        self.now_us = now_us;
        let ae = self.jittered(self.cfg.timings.anti_entropy_interval_ms);
        self.schedule(ae, CoreTimer::AntiEntropy);
        if !self.cfg.seeds.is_empty() {
            self.send_joins();
            self.join_epoch += 1;
            let delay = self.cfg.timings.join_retry_initial_ms;
            self.schedule(
                delay,
                CoreTimer::JoinRetry {
                    epoch: self.join_epoch,
                    attempt: 1,
                },
            );
        }
    }

    /// Teaches the core a converged member list without any traffic (simulator
    /// bootstrap of large meshes). No events are reported for these members.
    pub fn bootstrap<It: IntoIterator<Item = I>>(&mut self, now_us: u64, members: It) {
        self.now_us = now_us;
        self.quiet = true;
        let me = self.identity.clone();
        let updates = members.into_iter().filter(|m| *m != me).map(Member::alive);
        let _ = self.foca_call(|foca, rt| foca.apply_many(updates, false, rt));
        self.quiet = false;
    }

    /// A datagram arrived. Errors say why it was dropped; nothing changed then.
    pub fn handle_datagram(&mut self, now_us: u64, bytes: &[u8]) -> Result<(), InputError> {
        self.now_us = now_us;
        if bytes.len() > self.cfg.max_datagram_bytes {
            return Err(InputError::Swim(foca::Error::DataTooBig));
        }
        // The hot path: SWIM packets go to foca without being copied.
        if let Some(body) = crate::wire::swim_body(bytes) {
            return match self.foca_call(|foca, rt| foca.handle_data(body, rt)) {
                Ok(()) => Ok(()),
                Err(
                    e @ (foca::Error::MalformedPacket
                    | foca::Error::Decode(_)
                    | foca::Error::DataTooBig),
                ) => Err(InputError::Swim(e)),
                // Benign protocol conditions (stale data, our own echo, not connected yet).
                Err(_) => Ok(()),
            };
        }
        match Envelope::<I>::decode(bytes)? {
            Envelope::Swim(_) => unreachable!("SWIM packets take the path above"),
            Envelope::Join { from } => {
                if from.key() != self.identity.key() && !self.has_left {
                    let joiner = from.clone();
                    let _ = self.foca_call(|foca, rt| {
                        foca.apply_many(std::iter::once(Member::alive(joiner)), true, rt)
                    });
                    let welcome = Envelope::Welcome {
                        from: self.identity.clone(),
                    }
                    .encode();
                    self.send(from.endpoint(), Channel::Datagram, welcome);
                }
                Ok(())
            }
            Envelope::Welcome { from } => {
                if from.key() != self.identity.key() && !self.has_left {
                    let _ = self.foca_call(|foca, rt| foca.announce(from, rt));
                }
                Ok(())
            }
            Envelope::SuspectNotice { from, incarnation } => {
                if !self.has_left {
                    if incarnation >= self.foca.incarnation() {
                        // Refute: foca raises our incarnation and gossips it.
                        let me = Member::new(self.identity.clone(), incarnation, State::Suspect);
                        let _ = self
                            .foca_call(|foca, rt| foca.apply_many(std::iter::once(me), true, rt));
                    }
                    // Always answer: the announce carries our current (higher)
                    // incarnation in its header straight to the suspecter, even when
                    // an earlier answer was lost.
                    let _ = self.foca_call(|foca, rt| foca.announce(from, rt));
                }
                Ok(())
            }
            _ => Err(InputError::WrongChannel {
                kind: "anti-entropy message",
            }),
        }
    }

    /// A peer address was discovered (mDNS): ask it to let us in, unless it is
    /// already a member. Harmless when repeated.
    pub fn contact(&mut self, now_us: u64, endpoint: I::Endpoint) {
        self.now_us = now_us;
        if self.has_left || endpoint == self.identity.endpoint() {
            return;
        }
        let known = self
            .foca
            .iter_members()
            .any(|m| m.id().endpoint() == endpoint);
        if !known {
            let join = Envelope::Join {
                from: self.identity.clone(),
            }
            .encode();
            self.send(endpoint, Channel::Datagram, join);
        }
    }

    /// A frame arrived on a stream (anti-entropy).
    pub fn handle_stream(&mut self, now_us: u64, bytes: &[u8]) -> Result<(), InputError> {
        self.now_us = now_us;
        self.foca.broadcast_handler_mut().now_ms = now_us / 1000;
        match Envelope::<I>::decode(bytes)? {
            Envelope::SyncDigest { from, digest } => {
                let theirs: HashMap<I::Addr, (u64, u64)> = digest
                    .iter()
                    .map(|d| (d.key.key(), (d.key.generation(), d.version)))
                    .collect();
                let handler = self.foca.broadcast_handler();
                let entries = handler
                    .soft
                    .values()
                    .filter(|k| {
                        theirs
                            .get(&k.identity.key())
                            .is_none_or(|v| *v < (k.identity.generation(), k.state.version))
                    })
                    .map(|k| (k.identity.clone(), k.state.clone()))
                    .collect();
                let want = digest
                    .iter()
                    .filter(|d| {
                        let key = d.key.key();
                        key != self.identity.key()
                            && handler.soft.get(&key).is_none_or(|k| {
                                (k.identity.generation(), k.state.version)
                                    < (d.key.generation(), d.version)
                            })
                    })
                    .map(|d| d.key.key())
                    .collect();
                let reply = Envelope::SyncReply {
                    from: self.identity.clone(),
                    entries,
                    want,
                }
                .encode();
                self.send(from.endpoint(), Channel::Stream, reply);
            }
            Envelope::SyncReply {
                from,
                entries,
                want,
            } => {
                self.apply_soft_entries(&entries);
                let handler = self.foca.broadcast_handler();
                let push: Vec<_> = want
                    .iter()
                    .filter_map(|k| handler.soft.get(k))
                    .map(|k| (k.identity.clone(), k.state.clone()))
                    .collect();
                if !push.is_empty() {
                    let msg = Envelope::SyncPush {
                        from: self.identity.clone(),
                        entries: push,
                    }
                    .encode();
                    self.send(from.endpoint(), Channel::Stream, msg);
                }
            }
            Envelope::SyncPush { entries, .. } => self.apply_soft_entries(&entries),
            _ => {
                return Err(InputError::WrongChannel {
                    kind: "datagram message",
                });
            }
        }
        self.process_learned();
        Ok(())
    }

    /// A timer set earlier fired.
    pub fn handle_timer(&mut self, now_us: u64, timer: CoreTimer<I>) {
        self.now_us = now_us;
        match timer {
            CoreTimer::Foca(t) => {
                if let foca::Timer::ChangeSuspectToDown { member_id, .. } = &t {
                    self.confirming = Some(member_id.key());
                    if self
                        .suspicions
                        .get(&member_id.key())
                        .is_some_and(|s| s.timer == t)
                    {
                        self.suspicions.remove(&member_id.key());
                    }
                }
                let _ = self.foca_call(|foca, rt| foca.handle_timer(t, rt));
                self.confirming = None;
            }
            CoreTimer::JoinRetry { epoch, attempt } => {
                if epoch != self.join_epoch || self.connected || self.has_left {
                    return;
                }
                self.send_joins();
                let t = &self.cfg.timings;
                let next = t
                    .join_retry_initial_ms
                    .saturating_mul(1u64 << attempt.min(20))
                    .min(t.join_retry_max_ms);
                self.event(
                    self.identity.clone(),
                    EventKind::JoinRetry {
                        attempt,
                        next_in_ms: next,
                    },
                    vec![],
                );
                self.schedule(
                    next,
                    CoreTimer::JoinRetry {
                        epoch,
                        attempt: attempt + 1,
                    },
                );
            }
            CoreTimer::AntiEntropy => {
                let ae = self.jittered(self.cfg.timings.anti_entropy_interval_ms);
                self.schedule(ae, CoreTimer::AntiEntropy);
                if self.has_left {
                    return;
                }
                if let Some(peer) = self.random_active_member() {
                    let digest = self
                        .foca
                        .broadcast_handler()
                        .soft
                        .values()
                        .map(|k| DigestEntry {
                            key: k.identity.clone(),
                            version: k.state.version,
                        })
                        .collect();
                    let msg = Envelope::SyncDigest {
                        from: self.identity.clone(),
                        digest,
                    }
                    .encode();
                    self.send(peer.endpoint(), Channel::Stream, msg);
                }
            }
            CoreTimer::SuspectNotice {
                subject,
                incarnation,
                remaining,
            } => {
                let still_suspect = self.foca.iter_membership_state().any(|m| {
                    m.id() == &subject
                        && m.state() == State::Suspect
                        && m.incarnation() == incarnation
                });
                if still_suspect && !self.has_left {
                    self.send_suspect_notice(&subject, incarnation);
                    if remaining > 0 {
                        let every = self.cfg.timings.probe_rtt_ms;
                        self.schedule(
                            every,
                            CoreTimer::SuspectNotice {
                                subject,
                                incarnation,
                                remaining: remaining - 1,
                            },
                        );
                    }
                }
            }
            CoreTimer::ForgetDead { subject } => {
                let key = subject.key();
                if self.down.get(&key).is_some_and(|d| d.identity == subject) {
                    self.down.remove(&key);
                    self.meta.remove(&key);
                    // Its soft state goes too, unless a newer generation wrote it.
                    let handler = self.foca.broadcast_handler_mut();
                    if handler
                        .soft
                        .get(&key)
                        .is_some_and(|k| k.identity.generation() <= subject.generation())
                    {
                        handler.soft.remove(&key);
                    }
                    self.update_mode();
                }
            }
        }
    }

    /// Replaces the operator-controlled part of the soft state (zone, caps, http address).
    pub fn set_soft_state(&mut self, now_us: u64, soft: SoftState) {
        self.now_us = now_us;
        self.install_soft(soft, true);
    }

    /// Records a new load measurement; gossips it only if it changed meaningfully
    /// (CPU by 5 points or more, or running/queued work or slots), to bound gossip volume.
    pub fn update_load(&mut self, now_us: u64, load: Load) {
        self.now_us = now_us;
        let old = &self.local_soft.load;
        let cpu_moved = match (old.cpu_percent, load.cpu_percent) {
            (Some(a), Some(b)) => (a - b).abs() >= 5.0,
            (None, None) => false,
            _ => true,
        };
        if cpu_moved
            || old.running != load.running
            || old.queued != load.queued
            || old.slots != load.slots
        {
            let mut soft = self.local_soft.clone();
            soft.load = load;
            self.install_soft(soft, true);
        }
    }

    /// Leaves the mesh gracefully: peers record `left`, not `dead`.
    pub fn leave(&mut self, now_us: u64) {
        self.now_us = now_us;
        if self.has_left {
            return;
        }
        let me = self.identity.clone();
        let rumor = Rumor::Detection {
            subject: me.clone(),
            incarnation: self.foca.incarnation(),
            kind: DetectionKind::Left,
            by: me,
        };
        self.add_rumor(&rumor);
        let _ = self.foca_call(|foca, rt| foca.leave_cluster(rt));
        self.has_left = true;
    }

    // ----- outputs and queries -------------------------------------------------

    /// Takes the effects produced so far.
    pub fn drain_outputs(&mut self) -> std::vec::Drain<'_, Output<I>> {
        self.out.drain(..)
    }

    /// This node's current identity (its generation changes on forced rejoin).
    pub fn identity(&self) -> &I {
        &self.identity
    }

    /// The write mode: read-write while this node reaches a strict majority of
    /// the last known membership.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// (reachable, known): members reachable including self, and the last known
    /// membership (alive, suspect and dead; left members excluded).
    pub fn reachability(&self) -> (usize, usize) {
        let reachable = self.foca.num_members() + 1;
        let dead = self.down.values().filter(|d| !d.left).count();
        (reachable, reachable + dead)
    }

    /// True once at least one other member is known alive.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// True once [`Membership::leave`] was called: the node ignores joins and notices.
    pub fn has_left(&self) -> bool {
        self.has_left
    }

    /// Active members (alive or suspect), not counting this node.
    pub fn active_count(&self) -> usize {
        self.foca.num_members()
    }

    /// The recent events, oldest first.
    pub fn recent_events(&self) -> impl Iterator<Item = &MembershipEvent> {
        self.events.iter()
    }

    /// The soft-state version this node holds for `key`, if any.
    pub fn soft_version(&self, key: &I::Addr) -> Option<u64> {
        self.foca
            .broadcast_handler()
            .soft
            .get(key)
            .map(|k| k.state.version)
    }

    /// The node's own soft state.
    pub fn local_soft(&self) -> &SoftState {
        &self.local_soft
    }

    /// Current suspicion timeout in milliseconds (grows with log N).
    pub fn suspect_to_down_ms(&self) -> u64 {
        self.applied.1
    }

    /// Every member this node knows, itself first, then by key.
    pub fn members(&self) -> Vec<MemberInfo> {
        let handler = self.foca.broadcast_handler();
        let mut list = Vec::with_capacity(self.foca.num_members() + 1 + self.down.len());
        let soft_of = |key: &I::Addr| handler.soft.get(key).map(|k| &k.state);
        let make = |id: &I, state: MemberState, incarnation: u16, is_self: bool| {
            let key = id.key();
            let meta = self.meta.get(&key);
            let soft = soft_of(&key);
            let record = handler.detection(&key, id.generation());
            MemberInfo {
                id: key.to_string(),
                addr: id.endpoint().to_string(),
                state,
                incarnation,
                generation: id.generation(),
                zone: soft.and_then(|s| s.zone.clone()),
                caps: soft.map(|s| s.caps.clone()).unwrap_or_default(),
                software_version: soft.map(|s| s.software_version.clone()),
                http_addr: soft.and_then(|s| s.http_addr.clone()),
                load: soft.map(|s| s.load.clone()),
                rtt_ms: meta.and_then(|m| m.rtt_ms),
                last_change_ms: meta
                    .and_then(|m| m.last_change_us)
                    .map(|t| self.now_us.saturating_sub(t) / 1000),
                suspected_by: record
                    .map(|r| r.suspected_by.iter().map(|(k, _)| k.to_string()).collect())
                    .unwrap_or_default(),
                confirmed_by: record
                    .map(|r| r.confirmed_by.iter().map(|(k, _)| k.to_string()).collect())
                    .unwrap_or_default(),
                is_self,
            }
        };
        let self_state = if self.has_left {
            MemberState::Left
        } else {
            MemberState::Alive
        };
        list.push(make(
            &self.identity,
            self_state,
            self.foca.incarnation(),
            true,
        ));
        let mut others: Vec<MemberInfo> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.id().key() != self.identity.key())
            .map(|m| {
                let state = match m.state() {
                    State::Alive => MemberState::Alive,
                    State::Suspect => MemberState::Suspect,
                    State::Down => {
                        if self.down.get(&m.id().key()).is_some_and(|d| d.left)
                            || handler.has_left(&m.id().key(), m.id().generation())
                        {
                            MemberState::Left
                        } else {
                            MemberState::Dead
                        }
                    }
                };
                make(m.id(), state, m.incarnation(), false)
            })
            .collect();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        list.extend(others);
        list
    }

    // ----- internals -----------------------------------------------------------

    fn foca_call<F>(&mut self, f: F) -> Result<(), foca::Error>
    where
        F: FnOnce(&mut FocaInstance<I>, &mut FocaRt<'_, I>) -> Result<(), foca::Error>,
    {
        self.foca.broadcast_handler_mut().now_ms = self.now_us / 1000;
        let mut rt = FocaRt {
            out: &mut self.out,
            notes: &mut self.notes,
        };
        let result = f(&mut self.foca, &mut rt);
        self.process_notifications();
        self.process_learned();
        result
    }

    fn process_notifications(&mut self) {
        let mut membership_changed = false;
        // Reuse the buffer: this runs after every input.
        let mut notes = std::mem::take(&mut self.notes);
        for note in notes.drain(..) {
            match note {
                OwnedNotification::MemberUp(id) => {
                    membership_changed = true;
                    let key = id.key();
                    self.suspicions.remove(&key);
                    let was_down = self.down.remove(&key).is_some();
                    if !self.quiet {
                        self.touch(&key);
                        let kind = if was_down {
                            EventKind::Rejoined
                        } else {
                            EventKind::Joined
                        };
                        self.event(id, kind, vec![]);
                    }
                }
                OwnedNotification::MemberDown(id) => {
                    membership_changed = true;
                    let key = id.key();
                    self.suspicions.remove(&key);
                    if self.confirming.as_ref() == Some(&key) {
                        self.report_detection(&id, DetectionKind::Confirmed);
                    }
                    let left = self
                        .foca
                        .broadcast_handler()
                        .has_left(&key, id.generation());
                    self.down.insert(
                        key.clone(),
                        DownEntry {
                            identity: id.clone(),
                            left,
                        },
                    );
                    self.touch(&key);
                    self.schedule(
                        self.cfg.timings.dead_retain_ms,
                        CoreTimer::ForgetDead {
                            subject: id.clone(),
                        },
                    );
                    if left {
                        self.event(id, EventKind::Left, vec![]);
                    } else {
                        let by = self
                            .foca
                            .broadcast_handler()
                            .detection(&key, id.generation())
                            .map(|r| r.confirmed_by.iter().map(|(k, _)| k.to_string()).collect())
                            .unwrap_or_default();
                        self.event(id, EventKind::Dead, by);
                    }
                }
                OwnedNotification::Rename(old, new) => {
                    if !self.quiet {
                        self.touch(&new.key());
                        self.event(
                            new,
                            EventKind::Restarted {
                                previous_generation: old.generation(),
                            },
                            vec![],
                        );
                    }
                }
                OwnedNotification::Active => {
                    self.connected = true;
                    if !self.quiet {
                        self.event(self.identity.clone(), EventKind::Connected, vec![]);
                    }
                }
                OwnedNotification::Idle => {
                    self.connected = false;
                    self.event(self.identity.clone(), EventKind::Isolated, vec![]);
                    if !self.cfg.seeds.is_empty() && !self.has_left {
                        // Alone again: go back to the seeds until someone answers.
                        self.join_epoch += 1;
                        let delay = self.cfg.timings.join_retry_initial_ms;
                        self.schedule(
                            delay,
                            CoreTimer::JoinRetry {
                                epoch: self.join_epoch,
                                attempt: 1,
                            },
                        );
                    }
                }
                OwnedNotification::Defunct => {}
                OwnedNotification::Rejoin(new_id) => {
                    self.identity = new_id.clone();
                    self.foca.broadcast_handler_mut().own_key = new_id.key();
                    self.event(new_id, EventKind::Renewed, vec![]);
                    // Re-announce our soft state under the new generation.
                    let soft = self.local_soft.clone();
                    self.install_soft(soft, true);
                }
                OwnedNotification::DataSent(header) => {
                    if let foca::Message::Ping(number) = header.message {
                        if self.probes.len() >= MAX_PROBES_TRACKED {
                            self.probes.remove(0);
                        }
                        self.probes.push(ProbeSent {
                            key: header.dst.key(),
                            number,
                            at_us: self.now_us,
                        });
                    }
                }
                OwnedNotification::DataReceived(header) => {
                    if let foca::Message::Ack(number) = header.message {
                        let key = header.src.key();
                        if let Some(pos) = self
                            .probes
                            .iter()
                            .position(|p| p.key == key && p.number == number)
                        {
                            let sent = self.probes.remove(pos);
                            let sample = self.now_us.saturating_sub(sent.at_us) as f64 / 1000.0;
                            let meta = self.meta.entry(key).or_default();
                            meta.rtt_ms = Some(match meta.rtt_ms {
                                Some(prev) => prev + RTT_EWMA_ALPHA * (sample - prev),
                                None => sample,
                            });
                        }
                    }
                }
                OwnedNotification::ProbeFailed(_, id) => {
                    // We are the suspecter: record it, tell everyone, and tell the suspect.
                    let incarnation = self.report_detection(&id, DetectionKind::Suspected);
                    self.remember_suspicion(&id);
                    self.send_suspect_notice(&id, incarnation);
                    let every = self.cfg.timings.probe_rtt_ms.max(1);
                    let remaining = (self.applied.1 / every).saturating_sub(1) as u32;
                    self.schedule(
                        every,
                        CoreTimer::SuspectNotice {
                            subject: id,
                            incarnation,
                            remaining,
                        },
                    );
                }
            }
        }
        self.notes = notes;
        if membership_changed && !self.quiet {
            self.reconfigure();
            self.update_mode();
        }
        if membership_changed && self.quiet {
            // Bootstrap: settle the config once at the end (cheap either way).
            self.reconfigure();
        }
    }

    fn process_learned(&mut self) {
        let learned = std::mem::take(&mut self.foca.broadcast_handler_mut().learned);
        for item in learned {
            match item {
                Learned::Soft { origin, version } => {
                    let generation = self
                        .foca
                        .broadcast_handler()
                        .soft
                        .get(&origin)
                        .map(|k| k.identity.generation())
                        .unwrap_or(0);
                    self.out.push(Output::Event(MembershipEvent {
                        at_ms: self.now_us / 1000,
                        subject: origin.to_string(),
                        generation,
                        kind: EventKind::SoftUpdated { version },
                        by: vec![],
                    }));
                }
                Learned::Detection {
                    subject,
                    generation,
                    kind,
                    by,
                } => match kind {
                    DetectionKind::Suspected => {
                        if subject != self.identity.key() {
                            self.shorten_suspicion(&subject, generation);
                            self.touch(&subject);
                            self.push_event(MembershipEvent {
                                at_ms: self.now_us / 1000,
                                subject: subject.to_string(),
                                generation,
                                kind: EventKind::Suspected,
                                by: vec![by.to_string()],
                            });
                        }
                    }
                    DetectionKind::Left => {
                        if let Some(entry) = self.down.get_mut(&subject)
                            && entry.identity.generation() == generation
                            && !entry.left
                        {
                            entry.left = true;
                            self.push_event(MembershipEvent {
                                at_ms: self.now_us / 1000,
                                subject: subject.to_string(),
                                generation,
                                kind: EventKind::Left,
                                by: vec![],
                            });
                            self.update_mode();
                        }
                    }
                    DetectionKind::Confirmed => {}
                },
            }
        }
    }

    /// Records a detection this node made itself and gossips it; returns the
    /// subject's incarnation the report is about.
    fn report_detection(&mut self, id: &I, kind: DetectionKind) -> u16 {
        let incarnation = self
            .foca
            .iter_membership_state()
            .find(|m| m.id() == id)
            .map(|m| m.incarnation())
            .unwrap_or_default();
        let me = self.identity.clone();
        self.foca
            .broadcast_handler_mut()
            .apply_detection(id, incarnation, kind, &me);
        self.add_rumor(&Rumor::Detection {
            subject: id.clone(),
            incarnation,
            kind,
            by: me,
        });
        incarnation
    }

    /// Records the `ChangeSuspectToDown` timer foca just asked for (it is among the
    /// outputs of the call that reported the failed probe).
    fn remember_suspicion(&mut self, id: &I) {
        let found = self.out.iter().rev().find_map(|o| match o {
            Output::Timer {
                after_ms,
                timer: CoreTimer::Foca(t @ foca::Timer::ChangeSuspectToDown { member_id, .. }),
            } if member_id == id => Some((t.clone(), *after_ms)),
            _ => None,
        });
        if let Some((timer, after_ms)) = found {
            self.suspicions.insert(
                id.key(),
                LocalSuspicion {
                    timer,
                    generation: id.generation(),
                    started_us: self.now_us,
                    deadline_us: self.now_us + after_ms * 1000,
                },
            );
        }
    }

    /// Lifeguard's dynamic suspicion timeout (Dadgar, Phillips, Currey, "Lifeguard:
    /// Local Health Awareness for More Accurate Failure Detection", 2018, §IV-B):
    /// each independent suspicion of the same member shortens our own timeout, from
    /// the full value towards `SUSPICION_MIN_FRACTION` of it after K confirmations,
    /// logarithmically. Independent probers failing together are strong evidence;
    /// a refutation still cancels everything, since foca checks the incarnation.
    fn shorten_suspicion(&mut self, subject: &I::Addr, generation: u64) {
        let Some(local) = self.suspicions.get(subject) else {
            return;
        };
        if local.generation != generation {
            return;
        }
        let others = self
            .foca
            .broadcast_handler()
            .detection(subject, generation)
            .map(|r| {
                r.suspected_by
                    .iter()
                    .filter(|(k, _)| *k != self.identity.key())
                    .count()
            })
            .unwrap_or(0) as f64;
        let full = self.applied.1 as f64 * 1000.0;
        let min = full * SUSPICION_MIN_FRACTION;
        let frac = ((others + 1.0).ln() / (SUSPICION_CONFIRMATIONS_K + 1.0).ln()).min(1.0);
        let timeout_us = (full - (full - min) * frac).max(min) as u64;
        let deadline = local.started_us + timeout_us;
        if deadline + 1000 < local.deadline_us {
            let timer = local.timer.clone();
            if let Some(l) = self.suspicions.get_mut(subject) {
                l.deadline_us = deadline;
            }
            let after_ms = deadline.saturating_sub(self.now_us).div_ceil(1000);
            self.schedule(after_ms, CoreTimer::Foca(timer));
        }
    }

    fn reconfigure(&mut self) {
        let n = self.foca.num_members() + 1;
        let wanted = (self.foca_max_tx(n), self.cfg.timings.suspect_to_down_ms(n));
        if wanted != self.applied {
            let max_packet = self.cfg.max_datagram_bytes - HEADER_LEN;
            if self
                .foca
                .set_config(foca_config(&self.cfg.timings, n, max_packet))
                .is_ok()
            {
                self.applied = wanted;
            }
        }
    }

    fn update_mode(&mut self) {
        if self.has_left {
            return;
        }
        let (reachable, known) = self.reachability();
        let mode = if 2 * reachable > known {
            Mode::ReadWrite
        } else {
            Mode::ReadOnly
        };
        if mode != self.mode {
            self.mode = mode;
            self.event(
                self.identity.clone(),
                EventKind::ModeChanged {
                    mode,
                    reachable,
                    known,
                },
                vec![],
            );
        }
    }

    fn install_soft(&mut self, mut soft: SoftState, announce: bool) {
        soft.version = self.local_soft.version + 1;
        soft.software_version = mesh_proto::SOFTWARE_VERSION.to_string();
        self.local_soft = soft.clone();
        let me = self.identity.clone();
        let handler = self.foca.broadcast_handler_mut();
        handler.now_ms = self.now_us / 1000;
        handler.soft.insert(
            me.key(),
            crate::rumor::KnownSoft {
                identity: me.clone(),
                state: soft.clone(),
                received_at_ms: self.now_us / 1000,
            },
        );
        if announce {
            self.add_rumor(&Rumor::Soft {
                origin: me,
                state: soft,
            });
        }
    }

    fn add_rumor(&mut self, rumor: &Rumor<I>) {
        let bytes = postcard::to_allocvec(rumor).expect("encoding to a Vec cannot fail");
        // Too large to piggyback (a long capability list): anti-entropy over TCP carries it.
        let _ = self.foca.add_broadcast(&bytes);
    }

    fn apply_soft_entries(&mut self, entries: &[(I, SoftState)]) {
        let own = self.identity.key();
        let handler = self.foca.broadcast_handler_mut();
        handler.now_ms = self.now_us / 1000;
        for (identity, state) in entries {
            if identity.key() != own {
                handler.apply_soft(identity, state);
            }
        }
    }

    fn send_joins(&mut self) {
        let join = Envelope::Join {
            from: self.identity.clone(),
        }
        .encode();
        for seed in self.cfg.seeds.clone() {
            self.send(seed, Channel::Datagram, join.clone());
        }
    }

    fn send_suspect_notice(&mut self, subject: &I, incarnation: u16) {
        let notice = Envelope::SuspectNotice {
            from: self.identity.clone(),
            incarnation,
        }
        .encode();
        self.send(subject.endpoint(), Channel::Datagram, notice);
    }

    fn random_active_member(&mut self) -> Option<I> {
        let n = self.foca.num_members();
        if n == 0 {
            return None;
        }
        let pick = self.rng.random_range(0..n);
        self.foca.iter_members().nth(pick).map(|m| m.id().clone())
    }

    fn jittered(&mut self, ms: u64) -> u64 {
        // +-10% so periodic work of many nodes does not synchronise.
        let spread = ms / 10;
        if spread == 0 {
            return ms;
        }
        ms - spread + self.rng.random_range(0..=2 * spread)
    }

    fn touch(&mut self, key: &I::Addr) {
        if !self.quiet {
            self.meta.entry(key.clone()).or_default().last_change_us = Some(self.now_us);
        }
    }

    fn send(&mut self, to: I::Endpoint, channel: Channel, bytes: Vec<u8>) {
        self.out.push(Output::Send { to, channel, bytes });
    }

    fn schedule(&mut self, after_ms: u64, timer: CoreTimer<I>) {
        self.out.push(Output::Timer { after_ms, timer });
    }

    fn event(&mut self, subject: I, kind: EventKind, by: Vec<String>) {
        let ev = MembershipEvent {
            at_ms: self.now_us / 1000,
            subject: subject.key().to_string(),
            generation: subject.generation(),
            kind,
            by,
        };
        self.push_event(ev);
    }

    fn push_event(&mut self, ev: MembershipEvent) {
        if self.events.len() >= self.cfg.events_capacity {
            self.events.pop_front();
        }
        self.events.push_back(ev.clone());
        self.out.push(Output::Event(ev));
    }
}

//! One direction of a reliable, ordered stream between two node incarnations.
//!
//! The [`Sender`] numbers items from 1, keeps them until acknowledged, sends at
//! most `window` unacknowledged items, and re-sends those unacknowledged for
//! longer than the retransmission timeout. The [`Receiver`] delivers items in
//! sequence order exactly once, holds up to `reorder_max` items that arrived
//! early, and answers every data message with a cumulative ack carrying the
//! results it remembers for the acknowledged range, so a lost ack costs a
//! retransmission but never a result.
//!
//! A stream is bound to both incarnations (`epoch`, `dest_epoch`): when either
//! side restarts, the owner drops the stream and starts a new one at 1, so a
//! restarted receiver is never asked to continue a sequence it cannot know.

use std::collections::{BTreeMap, VecDeque};

use crate::wire::{Item, ItemResult, Wire};

/// Payload bytes per data message (frames stay well under the node's 8 MiB cap).
pub const BATCH_MAX_BYTES: usize = 1024 * 1024;

/// An item waiting for its acknowledgement, with the owner's tag.
#[derive(Debug, Clone)]
pub struct Pending<T> {
    /// Its sequence number in the stream, from 1.
    pub seq: u64,
    /// What is sent ([`Item::Skip`] once it expired).
    pub item: Item,
    /// The owner's bookkeeping for it (the messenger's call and expiry).
    pub tag: T,
    /// When it was last sent (`None`: never sent).
    pub sent_ms: Option<u64>,
}

/// The sending half.
#[derive(Debug)]
pub struct Sender<T> {
    /// The sending node's incarnation.
    pub epoch: u64,
    /// This stream's number among the sender's streams.
    pub stream: u64,
    /// The receiver's incarnation it is addressed to (0 while unknown).
    pub dest_epoch: u64,
    next_seq: u64,
    unacked: VecDeque<Pending<T>>,
    /// Sum of the queued items' weights.
    bytes: usize,
}

impl<T> Sender<T> {
    /// An empty stream from incarnation `epoch` to the receiver's `dest_epoch`.
    pub fn new(epoch: u64, stream: u64, dest_epoch: u64) -> Self {
        Self {
            epoch,
            stream,
            dest_epoch,
            next_seq: 1,
            unacked: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Roughly the bytes queued (see [`Item::weight`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Items waiting for their acknowledgement, sent or not.
    pub fn len(&self) -> usize {
        self.unacked.len()
    }

    /// True when every item was acknowledged.
    pub fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }

    /// Queues an item; returns its sequence number.
    pub fn push(&mut self, item: Item, tag: T) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += item.weight();
        self.unacked.push_back(Pending {
            seq,
            item,
            tag,
            sent_ms: None,
        });
        seq
    }

    /// The data messages to send now: every item of the window never sent or
    /// unacknowledged for `rto_ms`, in runs of at most `batch_max` items and
    /// about [`BATCH_MAX_BYTES`] (one item may exceed it alone). A run
    /// from the first such item to the last may re-send a few items in between;
    /// the receiver drops duplicates. Also how many of them were sent before
    /// (re-sends).
    pub fn due(
        &mut self,
        now_ms: u64,
        rto_ms: u64,
        window: usize,
        batch_max: usize,
    ) -> (Vec<Wire>, usize) {
        let due = |p: &Pending<T>| p.sent_ms.is_none_or(|at| now_ms >= at + rto_ms);
        let limit = window.min(self.unacked.len());
        let mut out = Vec::new();
        let mut resent = 0;
        let mut i = 0;
        while i < limit {
            if !due(&self.unacked[i]) {
                i += 1;
                continue;
            }
            let start = i;
            let mut end = i + 1;
            let mut bytes = self.unacked[start].item.weight();
            while end < limit && end - start < batch_max && due(&self.unacked[end]) {
                bytes += self.unacked[end].item.weight();
                if bytes > BATCH_MAX_BYTES {
                    break;
                }
                end += 1;
            }
            let first_seq = self.unacked[start].seq;
            let base = self.unacked[0].seq;
            let items = (start..end)
                .map(|k| {
                    resent += self.unacked[k].sent_ms.is_some() as usize;
                    self.unacked[k].sent_ms = Some(now_ms);
                    self.unacked[k].item.clone()
                })
                .collect();
            out.push(Wire::Data {
                epoch: self.epoch,
                stream: self.stream,
                dest_epoch: self.dest_epoch,
                first_seq,
                base,
                items,
            });
            i = end;
        }
        (out, resent)
    }

    /// Takes every item up to `upto`, each with its result if the ack carried it.
    pub fn ack(
        &mut self,
        upto: u64,
        results: &[(u64, ItemResult)],
    ) -> Vec<(Pending<T>, Option<ItemResult>)> {
        let found: BTreeMap<u64, ItemResult> = results.iter().copied().collect();
        let mut done = Vec::new();
        while self.unacked.front().is_some_and(|p| p.seq <= upto) {
            let p = self.unacked.pop_front().expect("checked above");
            self.bytes -= p.item.weight();
            let r = found.get(&p.seq).copied();
            done.push((p, r));
        }
        done
    }

    /// Replaces the items `expired` picks with [`Item::Skip`], returning their
    /// tags; the sequence stays contiguous.
    pub fn expire(&mut self, mut expired: impl FnMut(&T) -> bool) -> Vec<T>
    where
        T: Clone,
    {
        let mut out = Vec::new();
        for p in self.unacked.iter_mut() {
            if !matches!(p.item, Item::Skip) && expired(&p.tag) {
                self.bytes -= p.item.weight() - Item::Skip.weight();
                p.item = Item::Skip;
                out.push(p.tag.clone());
            }
        }
        out
    }

    /// Empties the stream (its receiver is gone), returning what was pending.
    pub fn drain(&mut self) -> Vec<Pending<T>> {
        self.bytes = 0;
        self.unacked.drain(..).collect()
    }

    /// The unacknowledged items, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Pending<T>> {
        self.unacked.iter()
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct Receiver {
    /// The sender's incarnation.
    pub epoch: u64,
    /// The sender's stream number.
    pub stream: u64,
    next: u64,
    ahead: BTreeMap<u64, Item>,
    recent: VecDeque<(u64, ItemResult)>,
}

impl Receiver {
    /// A fresh receiving half for stream `stream` of sender incarnation
    /// `epoch`, expecting sequence number 1.
    pub fn new(epoch: u64, stream: u64) -> Self {
        Self {
            epoch,
            stream,
            next: 1,
            ahead: BTreeMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// The last sequence number delivered.
    pub fn delivered_upto(&self) -> u64 {
        self.next - 1
    }

    /// Takes a run of items starting at `first_seq`, delivers what is now in
    /// order through `deliver`, and returns the ack to send back, with the
    /// results of items from `base` on.
    #[allow(clippy::too_many_arguments)]
    pub fn accept(
        &mut self,
        dest_epoch: u64,
        first_seq: u64,
        base: u64,
        items: Vec<Item>,
        reorder_max: usize,
        mut deliver: impl FnMut(Item) -> ItemResult,
    ) -> Wire {
        for (k, item) in items.into_iter().enumerate() {
            let seq = first_seq.saturating_add(k as u64);
            if seq < self.next {
                continue; // a duplicate
            }
            if seq > self.next {
                if seq - self.next <= reorder_max as u64 {
                    self.ahead.entry(seq).or_insert(item);
                }
                continue;
            }
            let r = deliver(item);
            self.remember(seq, r, reorder_max);
            self.next += 1;
            while let Some(item) = self.ahead.remove(&self.next) {
                let r = deliver(item);
                self.remember(self.next, r, reorder_max);
                self.next += 1;
            }
        }
        let upto = self.next - 1;
        // `recent` is in sequence order: start at the first wanted, not at
        // the oldest remembered (it holds up to a window of results).
        let from = self
            .recent
            .partition_point(|(s, _)| *s < base.min(first_seq));
        let results = self
            .recent
            .range(from..)
            .take_while(|(s, _)| *s <= upto)
            .copied()
            .collect();
        Wire::Ack {
            epoch: self.epoch,
            stream: self.stream,
            dest_epoch,
            upto,
            results,
        }
    }

    fn remember(&mut self, seq: u64, r: ItemResult, keep: usize) {
        if self.recent.len() >= keep.max(1) {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Item> {
        (0..n).map(|_| Item::Skip).collect()
    }

    #[test]
    fn window_retransmission_and_acks() {
        let mut s: Sender<u32> = Sender::new(1, 1, 7);
        for t in 0..5 {
            s.push(Item::Skip, t);
        }
        let (w, resent) = s.due(0, 100, 3, 2);
        assert_eq!(resent, 0);
        // Window 3 in runs of 2: seqs 1-2, then 3.
        assert!(
            matches!(&w[..], [Wire::Data { first_seq: 1, items: a, .. }, Wire::Data { first_seq: 3, items: b, .. }] if a.len() == 2 && b.len() == 1)
        );
        assert!(
            s.due(50, 100, 3, 2).0.is_empty(),
            "nothing due before the timeout"
        );
        let (w, resent) = s.due(100, 100, 3, 8);
        assert_eq!(w.len(), 1, "all three re-sent in one run");
        assert_eq!(resent, 3);
        let done = s.ack(2, &[(1, ItemResult::Delivered(2))]);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].1, Some(ItemResult::Delivered(2)));
        assert_eq!(done[1].1, None);
        // Seqs 4 and 5 enter the window.
        let (w, _) = s.due(100, 100, 3, 8);
        assert!(matches!(&w[..], [Wire::Data { first_seq: 4, items, .. }] if items.len() == 2));
    }

    #[test]
    fn receiver_orders_dedups_and_remembers_results() {
        let mut r = Receiver::new(1, 1);
        let mut got = Vec::new();
        let mut n = 0u32;
        let mut deliver = |_: Item| {
            n += 1;
            got.push(n);
            ItemResult::Delivered(n)
        };
        // 3-4 arrive before 1-2.
        let a = r.accept(7, 3, 3, items(2), 16, &mut deliver);
        assert!(matches!(a, Wire::Ack { upto: 0, .. }));
        let a = r.accept(7, 1, 1, items(2), 16, &mut deliver);
        match a {
            Wire::Ack { upto, results, .. } => {
                assert_eq!(upto, 4);
                assert_eq!(results.len(), 4);
            }
            _ => unreachable!(),
        }
        // A duplicate of 2-3 delivers nothing and re-reports their results.
        let a = r.accept(7, 2, 2, items(2), 16, &mut deliver);
        match a {
            Wire::Ack { upto, results, .. } => {
                assert_eq!(upto, 4);
                assert_eq!(
                    results,
                    vec![
                        (2, ItemResult::Delivered(2)),
                        (3, ItemResult::Delivered(3)),
                        (4, ItemResult::Delivered(4))
                    ]
                );
            }
            _ => unreachable!(),
        }
        // Too far ahead is dropped (the sender will re-send).
        let _ = r.accept(7, 100, 100, items(1), 16, &mut deliver);
        assert!(r.ahead.is_empty());
        assert_eq!(got, vec![1, 2, 3, 4]);
    }

    #[test]
    fn expiry_keeps_the_sequence_contiguous() {
        let mut s: Sender<u64> = Sender::new(1, 1, 1);
        s.push(Item::Skip, 10);
        s.push(
            Item::Publish(crate::wire::Message {
                id: crate::wire::MessageId {
                    origin: "a".into(),
                    epoch: 1,
                    n: 1,
                },
                channel: "c".into(),
                from: "x".into(),
                to: None,
                payload: vec![],
                sent_unix_ms: 0,
            }),
            20,
        );
        assert_eq!(s.expire(|t| *t >= 20), vec![20]);
        assert!(s.iter().all(|p| matches!(p.item, Item::Skip)));
        assert_eq!(
            s.expire(|_| true),
            Vec::<u64>::new(),
            "a skip is not expired twice"
        );
        assert_eq!(s.len(), 2);
    }
}

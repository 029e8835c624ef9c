//! The tasks themselves, keyed by their submission number, with an index from
//! task id to that number.
//!
//! The table's queues and ordered sets hold submission numbers (`u64`), not
//! ids: copying and comparing a number costs nothing, where a set keyed by id
//! strings compares bytes at each level of its tree and allocates a copy per
//! entry, a cost that shows in profiles under load. The id index is a hash
//! map, never iterated, so its order cannot leak into what replicas decide; it
//! is not part of the serialized state and is rebuilt when a snapshot is loaded.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::Task;

/// Every task the table remembers, by submission number, with an index by id.
#[derive(Debug, Clone, Default)]
pub struct TaskStore {
    by_seq: BTreeMap<u64, Task>,
    ids: HashMap<String, u64>,
}

impl TaskStore {
    /// How many tasks it holds.
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Whether it holds no task.
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// The submission number of task `id`.
    pub fn key(&self, id: &str) -> Option<u64> {
        self.ids.get(id).copied()
    }

    /// Whether a task with id `id` is remembered.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// The task with id `id`, if remembered.
    pub fn get(&self, id: &str) -> Option<&Task> {
        self.by_seq.get(&self.key(id)?)
    }

    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        let k = self.key(id)?;
        self.by_seq.get_mut(&k)
    }

    pub(crate) fn try_at(&self, k: u64) -> Option<&Task> {
        self.by_seq.get(&k)
    }

    /// The task with submission number `k`, which the caller knows exists
    /// (it came from one of the table's queues).
    pub fn at(&self, k: u64) -> &Task {
        &self.by_seq[&k]
    }

    pub(crate) fn at_mut(&mut self, k: u64) -> &mut Task {
        self.by_seq.get_mut(&k).expect("task exists")
    }

    /// Adds a task under its submission number (`task.seq`).
    pub fn insert(&mut self, task: Task) {
        self.ids.insert(task.id.clone(), task.seq);
        self.by_seq.insert(task.seq, task);
    }

    pub(crate) fn remove(&mut self, k: u64) -> Option<Task> {
        let t = self.by_seq.remove(&k)?;
        self.ids.remove(&t.id);
        Some(t)
    }

    /// Every task, in submission order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Task> {
        self.by_seq.values()
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Task> {
        self.by_seq.values_mut()
    }
}

impl std::ops::Index<&str> for TaskStore {
    type Output = Task;

    fn index(&self, id: &str) -> &Task {
        self.get(id)
            .unwrap_or_else(|| panic!("no task with id {id:?}"))
    }
}

impl PartialEq for TaskStore {
    fn eq(&self, other: &Self) -> bool {
        // The index follows from the tasks.
        self.by_seq == other.by_seq
    }
}

impl Serialize for TaskStore {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.by_seq.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TaskStore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let by_seq = BTreeMap::<u64, Task>::deserialize(d)?;
        let ids = by_seq.iter().map(|(k, t)| (t.id.clone(), *k)).collect();
        Ok(TaskStore { by_seq, ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, seq: u64) -> Task {
        let spec =
            super::super::model::TaskSpec::new(super::super::model::Payload::Bytes(Vec::new()));
        Task::new(
            id.into(),
            &spec,
            seq,
            0,
            super::super::model::Route::Capability,
        )
    }

    #[test]
    fn index_follows_inserts_removals_and_a_serde_round_trip() {
        let mut s = TaskStore::default();
        s.insert(task("b", 1));
        s.insert(task("a", 2));
        assert_eq!(s.key("a"), Some(2));
        assert_eq!(s["b"].seq, 1);
        // Submission order, not id order.
        let ids: Vec<&str> = s.values().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        let back: TaskStore = postcard::from_bytes(&postcard::to_allocvec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.key("a"), Some(2));
        assert!(s.remove(1).is_some());
        assert!(!s.contains("b"));
        assert_eq!(s.get("b"), None);
    }
}

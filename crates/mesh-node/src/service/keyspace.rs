//! The keyspace without namespaces, for the Redis endpoint: whole keys (a
//! namespaced key `ns:k` of [`super::kv`] is the Redis key `ns:k`), batches of
//! writes as one log entry, reads with Redis's semantics, transactions, and
//! waiting for the keyspace to change (blocking pops).
//!
//! The limits are the state machine's (`mesh_state::limits`): a key of at most
//! 4 KiB, a value or element of at most 4 MiB; a command over them is refused
//! in its own slot and changes nothing.

use std::hash::{BuildHasher, Hasher};

use mesh_consensus::Ordering as _;
use mesh_state::read::ReadCmd;
use mesh_state::{Command, KvCmd, Reply, StateError, TxOp};

use super::{Service, ServiceError};

/// A seed nobody can predict, for reads that choose at random (`SRANDMEMBER`)
/// outside the log.
fn random_seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

impl Service {
    /// Orders `cmds` as one log entry (one command alone, several as a
    /// `Multi`): every reply in its slot, a refused command's error in its own
    /// (the others still apply, as a pipeline of them would in Redis).
    pub async fn kv_write_batch(&self, mut cmds: Vec<KvCmd>) -> Result<Vec<Reply>, ServiceError> {
        if cmds.len() == 1 {
            let cmd = cmds.pop().expect("one command");
            let applied = self.write(Command::Kv(cmd), None).await?;
            return Ok(vec![applied.reply.unwrap_or_else(Reply::Error)]);
        }
        let n = cmds.len();
        let applied = self.write(Command::Multi(cmds), None).await?;
        match applied.reply {
            Ok(Reply::Array(replies)) if replies.len() == n => Ok(replies),
            Ok(other) => Err(ServiceError::Stopped(format!(
                "a batch of {n} writes got the reply {other:?}"
            ))),
            Err(e) => Ok(vec![Reply::Error(e); n]),
        }
    }

    /// A transaction (`MULTI ... EXEC`): `None` if a watched key's digest
    /// changed (nothing ran), else each operation's reply in its slot.
    pub async fn kv_exec(
        &self,
        watch: Vec<(Vec<u8>, u64)>,
        ops: Vec<TxOp>,
    ) -> Result<Option<Vec<Reply>>, ServiceError> {
        let applied = self.write(Command::Exec { watch, ops }, None).await?;
        match applied.reply {
            Ok(Reply::Nil) => Ok(None),
            Ok(Reply::Array(replies)) => Ok(Some(replies)),
            Ok(other) => Err(ServiceError::Stopped(format!(
                "a transaction got the reply {other:?}"
            ))),
            Err(e) => Err(ServiceError::State(e)),
        }
    }

    /// Evaluates reads against one state of the replica (linearizable unless
    /// `stale`): every reply or error in its slot.
    pub async fn kv_read_batch(
        &self,
        stale: bool,
        cmds: &[ReadCmd],
    ) -> Result<Vec<Result<Reply, StateError>>, ServiceError> {
        let seed = random_seed();
        self.read(stale, |sm| {
            let now = Service::read_clock(sm);
            cmds.iter()
                .enumerate()
                .map(|(i, c)| c.eval(&sm.keyspace, now, seed.wrapping_add(i as u64)))
                .collect()
        })
        .await
    }

    /// The digests `WATCH` keeps ([`mesh_state::Keyspace::watch_digest`]).
    pub async fn kv_watch_digests(
        &self,
        stale: bool,
        keys: &[Vec<u8>],
    ) -> Result<Vec<u64>, ServiceError> {
        self.read(stale, |sm| {
            let now = Service::read_clock(sm);
            keys.iter()
                .map(|k| sm.keyspace.watch_digest(k, now))
                .collect()
        })
        .await
    }

    /// For a blocking pop: whether one of `keys` holds a non-empty list on
    /// this replica now, and the log index it has applied. Wrong types count
    /// as ready, so the pop itself reports `WRONGTYPE`.
    pub fn kv_lists_ready(&self, keys: &[Vec<u8>]) -> (bool, u64) {
        let state = self.inner.engine.state();
        let sm = state.read().unwrap_or_else(|e| e.into_inner());
        let now = Service::read_clock(&sm);
        let ready = keys
            .iter()
            .any(|k| sm.keyspace.list(k, now).map_or(true, |l| l.is_some()));
        (ready, sm.applied_index)
    }

    /// Waits until this replica applies a log entry after `index`, or `until`;
    /// returns whether it did.
    pub async fn kv_wait_applied_after(&self, index: u64, until: tokio::time::Instant) -> bool {
        self.inner.engine.wait_applied(index + 1, until).await
    }
}

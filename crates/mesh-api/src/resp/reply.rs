//! State-machine replies and service errors as RESP replies.
//!
//! Service errors use the prefixes Redis clients know: `READONLY` for a write
//! on the minority side of a partition (what a replica answers), `TRYAGAIN`
//! while a leader is elected, `CLUSTERDOWN` for a linearizable read without a
//! quorum (`READONLY` on the connection opts in to local reads).

use mesh_node::service::ServiceError;
use mesh_state::Reply as SReply;

use super::frame::Reply;
use super::plan::Shape;

/// One state-machine reply, shaped.
pub fn convert(r: SReply, shape: &Shape, resp3: bool) -> Reply {
    match (shape, r) {
        (_, SReply::Error(e)) => Reply::Error(e.to_string()),
        (Shape::NilArray, SReply::Nil) => Reply::NilArray,
        (Shape::OkAsOne, SReply::Ok) => Reply::Int(1),
        (Shape::OkAsOne, SReply::Nil) => Reply::Int(0),
        (Shape::Map, SReply::Array(items)) => {
            let mut it = items.into_iter().map(plain);
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            Reply::Map(out)
        }
        (Shape::Set, SReply::Array(items)) => Reply::Set(items.into_iter().map(plain).collect()),
        (Shape::Score, SReply::Bulk(b)) => score(b),
        (Shape::Status, SReply::Bulk(b)) => Reply::Simple(String::from_utf8_lossy(&b).into_owned()),
        (Shape::WithScores(true), SReply::Array(items)) if resp3 => pairs(items),
        (Shape::ZPop { count }, SReply::Array(items)) if resp3 => {
            if *count {
                pairs(items)
            } else {
                let mut out: Vec<Reply> = Vec::with_capacity(2);
                let mut it = items.into_iter();
                if let (Some(m), Some(SReply::Bulk(s))) = (it.next(), it.next()) {
                    out.push(plain(m));
                    out.push(score(s));
                }
                Reply::Array(out)
            }
        }
        (_, r) => plain(r),
    }
}

/// Several writes that reply `OK` together: the first error, or `OK`.
pub fn all_ok(replies: Vec<SReply>) -> Reply {
    replies
        .into_iter()
        .find_map(|r| match r {
            SReply::Error(e) => Some(Reply::Error(e.to_string())),
            _ => None,
        })
        .unwrap_or_else(Reply::ok)
}

fn score(b: Vec<u8>) -> Reply {
    match std::str::from_utf8(&b)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        Some(d) => Reply::Double(d),
        None => Reply::Bulk(b),
    }
}

/// `[member, score, member, score]` as `[[member, score], ...]` with doubles.
fn pairs(items: Vec<SReply>) -> Reply {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(m), Some(s)) = (it.next(), it.next()) {
        let s = match s {
            SReply::Bulk(b) => score(b),
            other => plain(other),
        };
        out.push(Reply::Array(vec![plain(m), s]));
    }
    Reply::Array(out)
}

/// A reply as is.
pub fn plain(r: SReply) -> Reply {
    match r {
        SReply::Ok => Reply::ok(),
        SReply::Nil => Reply::Nil,
        SReply::Int(i) => Reply::Int(i),
        SReply::Bulk(b) => Reply::Bulk(b),
        SReply::Double(d) => Reply::Double(d),
        SReply::Array(items) => Reply::Array(items.into_iter().map(plain).collect()),
        SReply::Error(e) => Reply::Error(e.to_string()),
        SReply::Task(_) => Reply::err("ERR a task reply on the Redis endpoint"),
    }
}

/// A service error, for a write (`write`) or a read.
pub fn service_error(e: &ServiceError, write: bool) -> Reply {
    match e {
        ServiceError::ReadOnly {
            reachable_voters,
            voters,
        } if write => Reply::err(format!(
            "READONLY You can't write against a read only replica. (this node reaches {reachable_voters} of {voters} voters, fewer than a quorum: writes resume when the partition heals)"
        )),
        ServiceError::ReadOnly {
            reachable_voters,
            voters,
        } => Reply::err(format!(
            "CLUSTERDOWN no quorum: this node reaches {reachable_voters} of {voters} voters, so a linearizable read is impossible; send READONLY on this connection to read this node's replica (possibly stale)"
        )),
        ServiceError::NoLeader => Reply::err(format!("TRYAGAIN {e}")),
        ServiceError::ReadTimeout => Reply::err(format!("TRYAGAIN {e}")),
        ServiceError::Timeout {
            may_have_applied: false,
            ..
        } => Reply::err("TRYAGAIN timed out; the write was not applied"),
        ServiceError::Timeout { .. } => {
            Reply::err("ERR timed out; the write may still apply (do not assume either way)")
        }
        ServiceError::State(s) => Reply::Error(s.to_string()),
        other => Reply::err(format!("ERR {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_state::StateError;

    fn b(s: &str) -> SReply {
        SReply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn shapes_in_both_protocols() {
        assert_eq!(
            convert(SReply::Nil, &Shape::NilArray, false),
            Reply::NilArray
        );
        assert_eq!(convert(SReply::Ok, &Shape::OkAsOne, false), Reply::Int(1));
        assert_eq!(convert(SReply::Nil, &Shape::OkAsOne, true), Reply::Int(0));
        assert_eq!(
            convert(SReply::Array(vec![b("f"), b("v")]), &Shape::Map, true),
            Reply::Map(vec![(Reply::bulk("f"), Reply::bulk("v"))])
        );
        assert_eq!(convert(b("1.5"), &Shape::Score, false), Reply::Double(1.5));
        let ws = SReply::Array(vec![b("a"), b("1"), b("b"), b("2.5")]);
        assert_eq!(
            convert(ws.clone(), &Shape::WithScores(true), true),
            Reply::Array(vec![
                Reply::Array(vec![Reply::bulk("a"), Reply::Double(1.0)]),
                Reply::Array(vec![Reply::bulk("b"), Reply::Double(2.5)]),
            ])
        );
        assert_eq!(
            convert(ws, &Shape::WithScores(true), false),
            Reply::Array(vec![
                Reply::bulk("a"),
                Reply::bulk("1"),
                Reply::bulk("b"),
                Reply::bulk("2.5")
            ])
        );
        assert_eq!(
            convert(SReply::Error(StateError::WrongType), &Shape::Plain, false),
            Reply::err("WRONGTYPE Operation against a key holding the wrong kind of value")
        );
        assert_eq!(
            all_ok(vec![SReply::Ok, SReply::Error(StateError::NotInteger)]),
            Reply::err("ERR value is not an integer or out of range")
        );
    }

    #[test]
    fn a_minority_write_is_readonly() {
        let e = ServiceError::ReadOnly {
            reachable_voters: 1,
            voters: 3,
        };
        let Reply::Error(w) = service_error(&e, true) else {
            panic!()
        };
        assert!(w.starts_with("READONLY You can't write against a read only replica."));
        let Reply::Error(r) = service_error(&e, false) else {
            panic!()
        };
        assert!(r.starts_with("CLUSTERDOWN"));
    }
}

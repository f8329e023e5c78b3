//! What Redis sends back, read into the hub's types: live events from a room's channel,
//! history entries from its stream, and the join script's reply. Anything that does not have
//! the expected shape is an error, never a panic: Redis is shared, and another program (or
//! another version of the hub) may have written to it.

use redis::Value;
use serde::Deserialize;

use crate::feed::{RoomEvent, Snapshot};
use crate::protocol::{ChatMessage, PresenceEvent};

/// Something Redis sent that the hub cannot read.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from Redis: {0}")]
pub(crate) struct BadReply(pub(crate) String);

/// An event from a room's channel, with the epoch of a message (presence events have none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveEvent {
    pub(crate) event: RoomEvent,
    pub(crate) epoch: Option<String>,
}

/// The JSON the scripts publish (short keys: it crosses Redis once per node per event).
#[derive(Debug, Deserialize)]
struct Published {
    k: String,
    #[serde(default)]
    s: u64,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    f: String,
    #[serde(default)]
    t: u64,
    #[serde(default)]
    x: String,
    #[serde(default)]
    o: String,
    #[serde(default)]
    p: String,
    #[serde(default)]
    v: String,
    #[serde(default)]
    n: String,
    #[serde(default)]
    c: usize,
    #[serde(default)]
    q: u64,
}

/// Reads one event of `room`'s channel. `local` maps a member id to this node's connection,
/// if it is one.
pub(crate) fn live_event(
    room: &str,
    payload: &[u8],
    local: impl Fn(&str) -> Option<u64>,
) -> Result<LiveEvent, BadReply> {
    let p: Published =
        serde_json::from_slice(payload).map_err(|e| BadReply(format!("event: {e}")))?;
    match p.k.as_str() {
        "m" => Ok(LiveEvent {
            event: RoomEvent::Message {
                msg: ChatMessage {
                    room: room.to_owned(),
                    seq: p.s,
                    from: p.f,
                    time: p.t,
                    text: p.x,
                },
                sender: local(&p.o),
                plain_sender: p.p == "1",
            },
            epoch: p.e,
        }),
        "p" => {
            let event = match p.v.as_str() {
                "joined" => PresenceEvent::Joined,
                "left" => PresenceEvent::Left,
                other => return Err(BadReply(format!("presence event {other:?}"))),
            };
            Ok(LiveEvent {
                event: RoomEvent::Presence {
                    event,
                    name: p.n,
                    count: p.c,
                    subject: local(&p.o),
                    pseq: p.q,
                },
                epoch: None,
            })
        }
        other => Err(BadReply(format!("event kind {other:?}"))),
    }
}

/// A stored message, with who sent it (a member id) and whether it spoke plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) msg: ChatMessage,
    pub(crate) origin: String,
    pub(crate) plain_sender: bool,
}

/// Reads the entries of an `XRANGE`/`XREVRANGE` reply (`[[id, [field, value, ...]], ...]`).
pub(crate) fn entries(room: &str, value: Value) -> Result<Vec<Entry>, BadReply> {
    array(value, "stream entries")?
        .into_iter()
        .map(|entry| stream_entry(room, entry))
        .collect()
}

fn stream_entry(room: &str, value: Value) -> Result<Entry, BadReply> {
    let mut parts = array(value, "stream entry")?.into_iter();
    let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
        return Err(BadReply("stream entry without id and fields".into()));
    };
    let id = string(id, "entry id")?;
    let seq = id
        .split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BadReply(format!("entry id {id:?}")))?;
    let mut msg = ChatMessage {
        room: room.to_owned(),
        seq,
        from: String::new(),
        time: 0,
        text: String::new(),
    };
    let mut plain_sender = false;
    let mut origin = String::new();
    let mut fields = array(fields, "entry fields")?.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let value = string(value, "entry field")?;
        match string(name, "entry field name")?.as_str() {
            "f" => msg.from = value,
            "t" => msg.time = value.parse().unwrap_or(0),
            "x" => msg.text = value,
            "p" => plain_sender = value == "1",
            "o" => origin = value,
            _ => {}
        }
    }
    Ok(Entry {
        msg,
        origin,
        plain_sender,
    })
}

/// The join script's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinReply {
    pub(crate) snapshot: Snapshot,
    pub(crate) count: usize,
    pub(crate) pseq: u64,
    /// Names of the members present, in order of arrival.
    pub(crate) members: Vec<String>,
}

/// Reads `{epoch, last, first, count, pseq, {"<joined> <name>", ...}, entries}`; a `recent`
/// replay comes newest first and is put in order here.
pub(crate) fn join_reply(
    room: &str,
    value: Value,
    newest_first: bool,
) -> Result<JoinReply, BadReply> {
    let mut parts = array(value, "join reply")?.into_iter();
    let mut next = |what: &str| {
        parts
            .next()
            .ok_or_else(|| BadReply(format!("join reply without {what}")))
    };
    let epoch = string(next("epoch")?, "epoch")?;
    let last_seq = int(next("last seq")?)?;
    let first_seq = int(next("first seq")?)?;
    let count = int(next("count")?)? as usize;
    let pseq = int(next("pseq")?)?;
    let mut present: Vec<(u64, String)> = array(next("members")?, "members")?
        .into_iter()
        // A member whose name entry is missing (written by something else) is skipped.
        .filter_map(|v| string(v, "member").ok())
        .filter_map(|entry| {
            let (joined, name) = entry.split_once(' ')?;
            Some((joined.parse().unwrap_or(0), name.to_owned()))
        })
        .collect();
    present.sort_by_key(|(joined, _)| *joined);
    let mut messages: Vec<ChatMessage> = entries(room, next("messages")?)?
        .into_iter()
        .map(|e| e.msg)
        .collect();
    if newest_first {
        messages.reverse();
    }
    Ok(JoinReply {
        snapshot: Snapshot {
            epoch,
            last_seq,
            first_seq,
            messages,
        },
        count,
        pseq,
        members: present.into_iter().map(|(_, name)| name).collect(),
    })
}

fn array(value: Value, what: &str) -> Result<Vec<Value>, BadReply> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(BadReply(format!("{what}: {other:?}"))),
    }
}

pub(crate) fn string(value: Value, what: &str) -> Result<String, BadReply> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|_| BadReply(format!("{what}: not UTF-8")))
        }
        Value::SimpleString(s) => Ok(s),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(BadReply(format!("{what}: {other:?}"))),
    }
}

pub(crate) fn int(value: Value) -> Result<u64, BadReply> {
    match value {
        Value::Int(n) => Ok(n.max(0) as u64),
        Value::BulkString(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| BadReply("not a number".into())),
        Value::Nil => Ok(0),
        other => Err(BadReply(format!("number: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_published_message_reads_with_its_sender_when_local() {
        let payload = br#"{"k":"m","s":7,"e":"ab","f":"ann","t":1700000000000,"x":"hi \/ there","o":"n1:4","p":"0"}"#;
        let local = |o: &str| o.strip_prefix("n1:").and_then(|id| id.parse().ok());
        let live = live_event("lobby", payload, local).unwrap();
        assert_eq!(live.epoch.as_deref(), Some("ab"));
        let RoomEvent::Message {
            msg,
            sender,
            plain_sender,
        } = live.event
        else {
            panic!("a message");
        };
        assert_eq!(
            (msg.seq, msg.text.as_str(), msg.room.as_str()),
            (7, "hi / there", "lobby")
        );
        assert_eq!((sender, plain_sender), (Some(4), false));
        let elsewhere = live_event("lobby", br#"{"k":"m","s":1,"o":"n2:4"}"#, local).unwrap();
        assert!(matches!(
            elsewhere.event,
            RoomEvent::Message { sender: None, .. }
        ));
    }

    #[test]
    fn presence_events_read_and_garbage_is_an_error() {
        let payload = br#"{"k":"p","v":"left","n":"bob","c":3,"o":"n2:9","q":12}"#;
        let live = live_event("lobby", payload, |_| None).unwrap();
        assert_eq!(
            live.event,
            RoomEvent::Presence {
                event: PresenceEvent::Left,
                name: "bob".into(),
                count: 3,
                subject: None,
                pseq: 12
            }
        );
        assert!(live_event("lobby", b"not json", |_| None).is_err());
        assert!(live_event("lobby", br#"{"k":"z"}"#, |_| None).is_err());
        assert!(live_event("lobby", br#"{"k":"p","v":"waved"}"#, |_| None).is_err());
    }

    #[test]
    fn a_join_reply_reads_members_in_order_of_arrival_and_history_in_order() {
        let entry = |seq: &str, text: &str| {
            Value::Array(vec![
                bulk(&format!("{seq}-0")),
                Value::Array(vec![
                    bulk("f"),
                    bulk("ann"),
                    bulk("t"),
                    bulk("5"),
                    bulk("x"),
                    bulk(text),
                    bulk("p"),
                    bulk("0"),
                ]),
            ])
        };
        let reply = Value::Array(vec![
            bulk("e1"),
            Value::Int(9),
            Value::Int(8),
            Value::Int(2),
            Value::Int(4),
            Value::Array(vec![bulk("20 bob"), Value::Nil, bulk("10 ann smith")]),
            Value::Array(vec![entry("9", "nine"), entry("8", "eight")]),
        ]);
        let join = join_reply("lobby", reply, true).unwrap();
        assert_eq!(join.members, ["ann smith", "bob"]);
        assert_eq!((join.count, join.pseq), (2, 4));
        assert_eq!((join.snapshot.last_seq, join.snapshot.first_seq), (9, 8));
        let seqs: Vec<u64> = join.snapshot.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [8, 9]);
        assert_eq!(join.snapshot.messages[0].text, "eight");
        assert!(join_reply("lobby", Value::Array(vec![bulk("e1")]), false).is_err());
    }
}

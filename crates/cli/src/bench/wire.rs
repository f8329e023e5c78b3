//! What the cross-node workload says and reads on the two chat protocols it speaks: the hub's
//! JSON (`duplex.v1`) and Socket.IO 4 (socket.io-protocol v5 packets in engine.io v4 packets,
//! one per WebSocket text frame).
//!
//! Pure functions over frame texts, so both protocols are tested with strings only; the
//! connections that carry them are in [`super::crossnode`]. Reading a delivery looks up the
//! chat text's field instead of parsing the whole JSON: the generator reads every delivery of
//! every subscriber, and must stay cheaper than the servers it measures. The texts the
//! workload sends hold digits, spaces and letters only, so no escape can hide a quote.

use std::fmt;

use clap::ValueEnum;

/// A chat protocol the cross-node workload speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protocol {
    /// `duplex serve`'s JSON protocol (subprotocol `duplex.v1`).
    Duplex,
    /// Socket.IO 4 over its WebSocket transport (bench/peers/socketio/server.js).
    Socketio,
}

/// The Socket.IO endpoint of a server, when a URL names no path.
pub(crate) const SOCKETIO_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// What a received frame means to the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// A chat message; the text that was sent.
    Chat(&'a str),
    /// An engine.io ping: answer with [`Protocol::pong`].
    Ping,
    /// engine.io's open packet (its JSON: sid, pingInterval, ...).
    Open(&'a str),
    /// Socket.IO's connect acknowledgement of the main namespace.
    Connected,
    /// The server refused or ended the session (a Socket.IO connect error or disconnect, an
    /// engine.io close, a duplex error reply): why.
    Refused(&'a str),
    /// Anything else (presence, history, acknowledgements, noops).
    Other,
}

impl Protocol {
    /// The protocol's name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Protocol::Duplex => "duplex",
            Protocol::Socketio => "socketio",
        }
    }

    /// The subprotocol to offer in the upgrade request.
    pub(crate) fn subprotocol(self) -> Option<&'static str> {
        match self {
            Protocol::Duplex => Some("duplex.v1"),
            Protocol::Socketio => None,
        }
    }

    /// The URL to connect to: `url` itself, or for Socket.IO the engine.io WebSocket endpoint
    /// when `url` names no path (`ws://host:port` or `ws://host:port/`).
    pub(crate) fn endpoint(self, url: &url::Url) -> String {
        match self {
            Protocol::Socketio if url.path() == "/" && url.query().is_none() => {
                let mut base = url.as_str().trim_end_matches('/').to_owned();
                base.push_str(SOCKETIO_PATH);
                base
            }
            _ => url.as_str().to_owned(),
        }
    }

    /// Whether the protocol opens with a handshake of its own after the WebSocket one
    /// (engine.io's open packet, then a namespace connect).
    pub(crate) fn has_session_handshake(self) -> bool {
        self == Protocol::Socketio
    }

    /// The frame that connects to the main namespace, sent after engine.io's open packet.
    pub(crate) fn connect(self) -> &'static str {
        "40"
    }

    /// The answer to an engine.io ping.
    pub(crate) fn pong(self) -> &'static str {
        "3"
    }

    /// The frame that joins `room` under `name` (Socket.IO's join names no user: the server
    /// names the sender after its socket id).
    pub(crate) fn join(self, room: &str, name: &str) -> String {
        match self {
            Protocol::Duplex => format!(r#"{{"type":"join","room":"{room}","name":"{name}"}}"#),
            Protocol::Socketio => format!(r#"42["join","{room}"]"#),
        }
    }

    /// The frame that says `text` in `room`.
    pub(crate) fn send(self, room: &str, text: &str) -> String {
        match self {
            Protocol::Duplex => format!(r#"{{"type":"send","room":"{room}","text":"{text}"}}"#),
            Protocol::Socketio => format!(r#"42["send",{{"room":"{room}","text":"{text}"}}]"#),
        }
    }

    /// What a received text frame means.
    pub(crate) fn parse(self, frame: &str) -> Incoming<'_> {
        match self {
            Protocol::Duplex => parse_duplex(frame),
            Protocol::Socketio => match engineio(frame) {
                Ok(packet) => packet.incoming(),
                Err(_) => Incoming::Refused(frame),
            },
        }
    }
}

/// A duplex.v1 server message: serde writes the `type` tag first.
fn parse_duplex(frame: &str) -> Incoming<'_> {
    if frame.starts_with(r#"{"type":"message""#) {
        match string_field(frame, "text") {
            Some(text) => Incoming::Chat(text),
            None => Incoming::Other,
        }
    } else if frame.starts_with(r#"{"type":"error""#) {
        Incoming::Refused(frame)
    } else {
        Incoming::Other
    }
}

/// An engine.io v4 packet, as one WebSocket text frame carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnginePacket<'a> {
    /// `0{json}`: the session's parameters.
    Open(&'a str),
    /// `1`: the server ends the session.
    Close,
    /// `2[probe]`: answer with a pong.
    Ping(&'a str),
    /// `3[probe]`.
    Pong(&'a str),
    /// `4...`: a Socket.IO packet.
    Message(SocketPacket<'a>),
    /// `5`: transport upgrade (not used over a WebSocket opened directly).
    Upgrade,
    /// `6`.
    Noop,
}

/// A Socket.IO v5 packet (the payload of an engine.io message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SocketPacket<'a> {
    /// `0[/nsp,][{json}]`: connected to a namespace.
    Connect {
        /// The namespace (`/` when absent).
        namespace: &'a str,
    },
    /// `1[/nsp,]`: disconnected from a namespace.
    Disconnect,
    /// `2[/nsp,][id]["name",...]`: an event.
    Event {
        /// The event's name.
        name: &'a str,
        /// The rest of the event's JSON array after the name (`{...}]`, or `]`).
        data: &'a str,
        /// The acknowledgement id the sender asks for.
        ack: Option<u64>,
    },
    /// `3[/nsp,]id[...]`: the answer to an event sent with an acknowledgement id.
    Ack {
        /// The id.
        id: u64,
    },
    /// `4[/nsp,]{json}`: a namespace refused the connection.
    ConnectError(&'a str),
    /// `5` and `6`: binary events and acks, whose attachments follow in binary frames.
    Binary,
}

/// Why a frame is not an engine.io / Socket.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(&'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WireError {}

/// Parses one engine.io v4 packet from a text frame.
pub(crate) fn engineio(frame: &str) -> Result<EnginePacket<'_>, WireError> {
    let mut chars = frame.chars();
    let kind = chars.next().ok_or(WireError("an empty frame"))?;
    let rest = chars.as_str();
    Ok(match kind {
        '0' => EnginePacket::Open(rest),
        '1' => EnginePacket::Close,
        '2' => EnginePacket::Ping(rest),
        '3' => EnginePacket::Pong(rest),
        '4' => EnginePacket::Message(socketio(rest)?),
        '5' => EnginePacket::Upgrade,
        '6' => EnginePacket::Noop,
        _ => return Err(WireError("not an engine.io packet type")),
    })
}

/// Parses one Socket.IO v5 packet (an engine.io message's payload).
pub(crate) fn socketio(packet: &str) -> Result<SocketPacket<'_>, WireError> {
    let mut chars = packet.chars();
    let kind = chars.next().ok_or(WireError("an empty Socket.IO packet"))?;
    let mut rest = chars.as_str();
    let mut namespace = "/";
    if rest.starts_with('/') {
        let (nsp, after) = rest.split_once(',').unwrap_or((rest, ""));
        namespace = nsp;
        rest = after;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (id, rest) = rest.split_at(digits);
    let id = if id.is_empty() {
        None
    } else {
        Some(
            id.parse::<u64>()
                .map_err(|_| WireError("an acknowledgement id out of range"))?,
        )
    };
    Ok(match kind {
        '0' => SocketPacket::Connect { namespace },
        '1' => SocketPacket::Disconnect,
        '2' => {
            let body = rest.strip_prefix("[\"").ok_or(WireError(
                "an event that is not an array of a name and data",
            ))?;
            let (name, data) = body
                .split_once('"')
                .ok_or(WireError("an event name without its closing quote"))?;
            let data = data.strip_prefix(',').unwrap_or(data);
            SocketPacket::Event {
                name,
                data,
                ack: id,
            }
        }
        '3' => SocketPacket::Ack {
            id: id.ok_or(WireError("an acknowledgement without an id"))?,
        },
        '4' => SocketPacket::ConnectError(rest),
        '5' | '6' => SocketPacket::Binary,
        _ => return Err(WireError("not a Socket.IO packet type")),
    })
}

impl<'a> EnginePacket<'a> {
    /// What the packet means to the workload.
    fn incoming(self) -> Incoming<'a> {
        match self {
            EnginePacket::Open(json) => Incoming::Open(json),
            EnginePacket::Close => Incoming::Refused("engine.io close"),
            EnginePacket::Ping(_) => Incoming::Ping,
            EnginePacket::Message(SocketPacket::Connect { namespace: "/" }) => Incoming::Connected,
            EnginePacket::Message(SocketPacket::Event {
                name: "message",
                data,
                ..
            }) => match string_field(data, "text") {
                Some(text) => Incoming::Chat(text),
                None => Incoming::Other,
            },
            EnginePacket::Message(SocketPacket::ConnectError(why)) => Incoming::Refused(why),
            EnginePacket::Message(SocketPacket::Disconnect) => {
                Incoming::Refused("Socket.IO disconnect")
            }
            _ => Incoming::Other,
        }
    }
}

/// The value of the string field `name` of a JSON object, when it holds no escape (the texts
/// the workload sends never do).
pub(crate) fn string_field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(at) = json[from..].find(name) {
        let start = from + at;
        let key_open = start
            .checked_sub(1)
            .is_some_and(|i| &json[i..start] == "\"");
        let after = &json[start + name.len()..];
        if key_open {
            if let Some(value) = after.strip_prefix("\":\"") {
                let end = value.find('"')?;
                let text = &value[..end];
                return (!text.contains('\\')).then_some(text);
            }
        }
        from = start + name.len();
    }
    None
}

/// A chat text the workload sent: `PUBLISHER SEQ STAMP padding`, where a sequence number of 0
/// marks a probe (whose stamp is then the probe's number) and the stamp of a measured message
/// is its send time in nanoseconds since the generator's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The publisher's index.
    pub(crate) publisher: usize,
    /// The message's number at its publisher, from 1; 0 for a probe.
    pub(crate) seq: u64,
    /// Nanoseconds since the epoch, or the probe's number.
    pub(crate) stamp: u64,
}

impl Stamp {
    /// The text of this stamp, padded with `x` to `size` bytes.
    pub(crate) fn text(self, size: usize) -> String {
        let mut text = format!("{} {} {} ", self.publisher, self.seq, self.stamp);
        if text.len() < size {
            text.extend(std::iter::repeat_n('x', size - text.len()));
        }
        text
    }

    /// Reads a stamp from a chat text; `None` for a text someone else sent.
    pub(crate) fn parse(text: &str) -> Option<Stamp> {
        let mut fields = text.split(' ');
        let publisher = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        let stamp = fields.next()?.parse().ok()?;
        Some(Stamp {
            publisher,
            seq,
            stamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// engine.io protocol v4, "Packet encoding": one type digit, then the data.
    #[test]
    fn engineio_packet_types() {
        let open = r#"{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(engineio(&format!("0{open}")), Ok(EnginePacket::Open(open)));
        assert_eq!(engineio("1"), Ok(EnginePacket::Close));
        assert_eq!(engineio("2"), Ok(EnginePacket::Ping("")));
        assert_eq!(engineio("3probe"), Ok(EnginePacket::Pong("probe")));
        assert_eq!(engineio("5"), Ok(EnginePacket::Upgrade));
        assert_eq!(engineio("6"), Ok(EnginePacket::Noop));
        assert!(engineio("").is_err());
        assert!(engineio("9").is_err());
        assert!(engineio("x").is_err());
    }

    /// socket.io-protocol v5, "Packet encoding": type, namespace, ack id, JSON.
    #[test]
    fn socketio_packets() {
        assert_eq!(
            engineio(r#"40{"sid":"wZX3oN0bSVIhsaknAAAI"}"#),
            Ok(EnginePacket::Message(SocketPacket::Connect {
                namespace: "/"
            }))
        );
        assert_eq!(
            socketio(r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#),
            Ok(SocketPacket::Connect {
                namespace: "/admin"
            })
        );
        assert_eq!(socketio("1"), Ok(SocketPacket::Disconnect));
        assert_eq!(
            socketio(r#"2["message",{"room":"bench","text":"hi"}]"#),
            Ok(SocketPacket::Event {
                name: "message",
                data: r#"{"room":"bench","text":"hi"}]"#,
                ack: None
            })
        );
        assert_eq!(
            socketio(r#"2/chat,12["join","bench"]"#),
            Ok(SocketPacket::Event {
                name: "join",
                data: r#""bench"]"#,
                ack: Some(12)
            })
        );
        assert_eq!(
            socketio("3[]"),
            Err(WireError("an acknowledgement without an id"))
        );
        assert_eq!(socketio("312[]"), Ok(SocketPacket::Ack { id: 12 }));
        assert_eq!(
            socketio(r#"4{"message":"Invalid namespace"}"#),
            Ok(SocketPacket::ConnectError(
                r#"{"message":"Invalid namespace"}"#
            ))
        );
        assert_eq!(
            socketio(r#"51-["file",{"_placeholder":true,"num":0}]"#),
            Ok(SocketPacket::Binary)
        );
        assert!(socketio("2{}").is_err());
        assert!(socketio("2[\"open").is_err());
        assert!(socketio("299999999999999999999999[]").is_err());
        assert!(socketio("").is_err());
        assert!(socketio("7").is_err());
    }

    #[test]
    fn what_socketio_frames_mean() {
        let p = Protocol::Socketio;
        assert_eq!(p.parse("2"), Incoming::Ping);
        assert_eq!(p.parse(r#"0{"sid":"a"}"#), Incoming::Open(r#"{"sid":"a"}"#));
        assert_eq!(p.parse(r#"40{"sid":"b"}"#), Incoming::Connected);
        assert_eq!(
            p.parse(
                r#"42["message",{"room":"bench","from":"guest-x","text":"0 3 17 xx","time":1}]"#
            ),
            Incoming::Chat("0 3 17 xx")
        );
        assert_eq!(p.parse(r#"42["other",{"text":"no"}]"#), Incoming::Other);
        assert_eq!(
            p.parse(r#"44{"message":"nope"}"#),
            Incoming::Refused(r#"{"message":"nope"}"#)
        );
        assert!(matches!(p.parse("1"), Incoming::Refused(_)));
        assert!(matches!(p.parse("41"), Incoming::Refused(_)));
        assert!(matches!(p.parse("garbage"), Incoming::Refused(_)));
        assert_eq!(p.join("bench", "s1"), r#"42["join","bench"]"#);
        assert_eq!(
            p.send("bench", "0 1 2 x"),
            r#"42["send",{"room":"bench","text":"0 1 2 x"}]"#
        );
        // The frames the workload sends parse back as what they are.
        assert_eq!(
            socketio(&p.send("bench", "t")[1..]),
            Ok(SocketPacket::Event {
                name: "send",
                data: r#"{"room":"bench","text":"t"}]"#,
                ack: None
            })
        );
    }

    #[test]
    fn what_duplex_frames_mean() {
        let p = Protocol::Duplex;
        let message = r#"{"type":"message","room":"bench","seq":4,"from":"p0","time":1700000000000,"text":"0 5 123 xxx"}"#;
        assert_eq!(p.parse(message), Incoming::Chat("0 5 123 xxx"));
        // History replays old texts: not deliveries.
        let history = r#"{"type":"history","room":"bench","messages":[{"room":"bench","seq":1,"from":"p0","time":1,"text":"0 1 1 x"}]}"#;
        assert_eq!(p.parse(history), Incoming::Other);
        assert_eq!(
            p.parse(r#"{"type":"presence","room":"bench","event":"joined","name":"s1","count":2}"#),
            Incoming::Other
        );
        assert!(matches!(
            p.parse(r#"{"type":"error","code":"not_joined","message":"join first"}"#),
            Incoming::Refused(_)
        ));
        assert_eq!(
            p.join("bench", "s1"),
            r#"{"type":"join","room":"bench","name":"s1"}"#
        );
        assert_eq!(
            p.send("bench", "hi"),
            r#"{"type":"send","room":"bench","text":"hi"}"#
        );
    }

    #[test]
    fn endpoints() {
        let url = |s: &str| url::Url::parse(s).expect("a URL");
        assert_eq!(
            Protocol::Socketio.endpoint(&url("ws://127.0.0.1:3000")),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            Protocol::Socketio.endpoint(&url("ws://h:1/io/?EIO=4&transport=websocket")),
            "ws://h:1/io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            Protocol::Duplex.endpoint(&url("ws://127.0.0.1:8080/")),
            "ws://127.0.0.1:8080/"
        );
    }

    #[test]
    fn string_fields() {
        assert_eq!(string_field(r#"{"a":"1","text":"hi"}"#, "text"), Some("hi"));
        // A value that contains the name is not the key.
        assert_eq!(
            string_field(r#"{"from":"text","text":"yes"}"#, "text"),
            Some("yes")
        );
        assert_eq!(string_field(r#"{"context":"no"}"#, "text"), None);
        assert_eq!(string_field(r#"{"text":5}"#, "text"), None);
        assert_eq!(string_field(r#"{"text":"a\"b"}"#, "text"), None);
        assert_eq!(string_field(r#"{"text":"open"#, "text"), None);
    }

    #[test]
    fn stamps() {
        let s = Stamp {
            publisher: 1,
            seq: 42,
            stamp: 123_456_789,
        };
        let text = s.text(64);
        assert_eq!(text.len(), 64);
        assert!(text.starts_with("1 42 123456789 xxx"));
        assert_eq!(Stamp::parse(&text), Some(s));
        // Shorter than its numbers: not padded, not cut.
        assert_eq!(s.text(4), "1 42 123456789 ");
        assert_eq!(Stamp::parse("hello there"), None);
        assert_eq!(Stamp::parse("1 2"), None);
    }
}

//! `duplex chat URL`: a chat client with line editing. Connects, asks for a user
//! name (unless `--name`), then sends each line as a chat message and shows the room as
//! `[time] name: text`, with presence and history when the server speaks `duplex.v1`, or as
//! plain text lines when it does not.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::process::ExitCode;

use chrono::{DateTime, Local};
use clap::Args;
use duplex::Message;
use duplex_hub::protocol::{clean_name, valid_room, ChatMessage, PresenceEvent, ServerMessage};
use duplex_hub::protocol::{MAX_NAME_CHARS, SUBPROTOCOL};
use tokio::sync::mpsc;

use crate::connect::args::{ClientArgs, Connector};
use crate::connect::display::{BinaryFormat, Sink, Style};
use crate::connect::exit::Failure;
use crate::connect::interactive::{self, Read};
use crate::connect::session::{self, Backoff, Input, Options, Session};
use crate::connect::{finish, pipe};

/// Options of `duplex chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The chat server: ws://HOST:PORT/ (room "general" on `duplex serve`) or
    /// ws://HOST:PORT/rooms/NAME.
    url: String,
    /// Your name in the room; asked for when not given (in a pipe: the first line of stdin),
    /// unless a token is given: a hub with signed tokens (JWT) takes the name from the token
    /// (and refuses another), so with --token or --token-file no name is asked for.
    #[arg(long)]
    name: Option<String>,
    /// The room to join (duplex.v1 servers; default: the URL's room).
    #[arg(long)]
    room: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `duplex chat`; the exit code says how it ended.
pub async fn run(args: ChatArgs) -> ExitCode {
    finish(chat(args).await)
}

/// The question the seeds' client asks.
const ASK_NAME: &str = "Please enter user name:";

async fn chat(args: ChatArgs) -> Result<(), Failure> {
    if let Some(room) = &args.room {
        if !valid_room(room) {
            return Err(Failure::usage(format!(
                "--room {room:?}: 1-64 of A-Z a-z 0-9 - _ ."
            )));
        }
    }
    let given_name = match &args.name {
        Some(name) => Some(clean_name(name).ok_or_else(|| Failure::usage(bad_name(name)))?),
        None => None,
    };
    let connector = Connector::new(&args.url, &args.client, vec![SUBPROTOCOL.to_owned()])?;
    let mut out = Sink::Pipe {
        raw: false,
        format: BinaryFormat::Hex,
    };
    let ws = connector.connect(&mut out).await?;
    // With a token the hub may know who this is: the join then goes without a name, and the
    // hub's `identity` message says which one it is (see `Chat::show`).
    let has_token = args.client.token.is_some() || args.client.token_file.is_some();
    let given_name = match given_name {
        None if has_token => Some(String::new()),
        other => other,
    };
    let opts = Options {
        keep_open: false,
        replies: None,
        show_ping_pong: args.client.show_ping_pong,
        reconnect: args
            .client
            .reconnect
            .then(|| Backoff::new(args.client.reconnect_attempts)),
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let terminal = if interactive {
        interactive::start()
    } else {
        None
    };

    if let Some((mut reader, printer, guard)) = terminal {
        let style = Style::new(args.client.no_color);
        let mut out = Sink::Terminal {
            printer: printer.clone(),
            style,
            format: BinaryFormat::Hex,
        };
        out.note("Connected to server");
        let name = match given_name {
            Some(name) => name,
            None => loop {
                match reader.read(&format!("{ASK_NAME} ")).await {
                    Read::Line(line) => match clean_name(&line) {
                        Some(name) => break name,
                        None => out.warn(&bad_name(&line)),
                    },
                    Read::End => {
                        guard.finish();
                        return Ok(());
                    }
                }
            },
        };
        welcome(&mut out, &name);
        let mut chat = Chat::new(name.clone(), args.room.clone(), true);
        let (tx, mut input) = mpsc::channel::<Input>(16);
        let prompt = if name.is_empty() {
            style.sent("> ")
        } else {
            style.sent(&format!("{name}> "))
        };
        let forwarder = tokio::spawn(interactive::forward(reader, prompt, tx, printer, style));
        let result = session::run(&connector, ws, &mut chat, &mut input, &mut out, opts).await;
        forwarder.abort();
        guard.finish();
        return result;
    }

    let mut input = pipe::stdin(false);
    out.note("Connected to server");
    let name = match given_name {
        Some(name) => name,
        None => {
            out.note(ASK_NAME);
            match input.recv().await {
                Some(Input::Line(line)) => {
                    clean_name(&line).ok_or_else(|| Failure::usage(bad_name(&line)))?
                }
                Some(Input::Fail(f)) => return Err(f),
                // No name, nothing to say.
                _ => return Ok(()),
            }
        }
    };
    welcome(&mut out, &name);
    let mut chat = Chat::new(name, args.room.clone(), false);
    session::run(&connector, ws, &mut chat, &mut input, &mut out, opts).await
}

/// Why a name was refused.
fn bad_name(name: &str) -> String {
    format!("{name:?} cannot be a name: 1 to {MAX_NAME_CHARS} characters, no control characters")
}

/// The seeds' greeting.
fn welcome(out: &mut Sink, name: &str) {
    if name.is_empty() {
        out.note("Welcome! You can start chatting now.");
    } else {
        out.note(&format!("Welcome {name}! You can start chatting now."));
    }
    out.note("Type your message and press Enter to send:");
}

/// The chat protocol on top of a connection.
#[derive(Debug)]
struct Chat {
    name: String,
    room: Option<String>,
    /// Whether a person is typing at a prompt, which already shows what they sent.
    interactive: bool,
    /// The server speaks `duplex.v1` (JSON); else plain text lines.
    json: bool,
    /// Connections opened so far.
    connections: u32,
    /// The last sequence number seen: a rejoin asks for what came after it.
    last_seq: Option<u64>,
    /// The room history's epoch `last_seq` belongs to (sent back with it on a rejoin).
    epoch: Option<String>,
    /// Whether the join's first history batch is still to come.
    history_pending: bool,
    /// Texts sent and not yet seen coming back: on a terminal the prompt line already shows
    /// them, so the server's copy is not printed again; in a pipe, the end of stdin waits
    /// for them, so that a script's last message is delivered (and printed with its time).
    echoes: VecDeque<String>,
}

/// At most this many sent texts are remembered for [`Chat::echoes`]: a server that does not
/// send them back must not make the list grow.
const MAX_ECHOES: usize = 64;

impl Chat {
    fn new(name: String, room: Option<String>, interactive: bool) -> Chat {
        Chat {
            name,
            room,
            interactive,
            json: false,
            connections: 0,
            last_seq: None,
            epoch: None,
            history_pending: false,
            echoes: VecDeque::new(),
        }
    }

    /// Shows a JSON message from the server.
    fn show(&mut self, msg: ServerMessage, out: &mut Sink) -> std::io::Result<()> {
        let style = out.style();
        match msg {
            ServerMessage::History {
                room,
                messages,
                epoch,
                gap,
                first_seq,
            } => {
                if !epoch.is_empty() && self.epoch.as_ref() != Some(&epoch) {
                    // Numbers of another history mean nothing in this one.
                    if self.epoch.is_some() {
                        self.last_seq = None;
                    }
                    self.epoch = Some(epoch);
                }
                if gap {
                    let from =
                        first_seq.map_or(String::new(), |s| format!(" (history resumes at #{s})"));
                    out.warn(&format!(
                        "--- messages in {room} were lost or trimmed and cannot be replayed{from} ---"
                    ));
                }
                if std::mem::take(&mut self.history_pending) && !messages.is_empty() {
                    let what = if self.connections > 1 {
                        "missed while disconnected"
                    } else {
                        "recent history"
                    };
                    out.note(&format!("--- {what} in {room} ---"));
                }
                for m in &messages {
                    self.chat_line(m, out)?;
                }
            }
            ServerMessage::Message(m) => {
                let own = m.from == self.name && self.echoes.front().is_some_and(|t| *t == m.text);
                if own {
                    self.echoes.pop_front();
                }
                if own && self.interactive {
                    self.seen(m.seq);
                } else {
                    self.chat_line(&m, out)?;
                }
            }
            ServerMessage::Presence {
                room,
                event,
                name,
                count,
                members,
            } => {
                let verb = match event {
                    PresenceEvent::Joined => "joined",
                    PresenceEvent::Left => "left",
                };
                let here = match members {
                    Some(members) => format!("here: {}", name_list(&members)),
                    None => format!("{count} here"),
                };
                out.note(&format!("* {name} {verb} {room} ({here})"));
            }
            ServerMessage::Rooms { rooms, next } => {
                let mut list: Vec<String> = rooms
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.members))
                    .collect();
                // One page of the hub's list: say that it goes on rather than look complete.
                if next.is_some() {
                    list.push("... and more".to_owned());
                }
                out.note(&format!("rooms: {}", list.join(", ")));
            }
            ServerMessage::Identity { name, .. } => {
                // The token's name is the one the hub shows: own messages come back under it.
                if name != self.name {
                    out.note(&format!("signed in as {name} (from the token)"));
                }
                self.name = name;
            }
            ServerMessage::Error { code, message } => {
                // The message that caused it will not come back.
                self.echoes.clear();
                out.warn(&format!("{} ({code})", style.error(&message)));
            }
        }
        Ok(())
    }

    /// `[time] name: text`.
    fn chat_line(&mut self, m: &ChatMessage, out: &mut Sink) -> std::io::Result<()> {
        self.seen(m.seq);
        let style = out.style();
        out.data(&format!(
            "[{}] {}: {}",
            format_time(m.time),
            style.name(&m.from),
            m.text
        ))
    }

    fn seen(&mut self, seq: u64) {
        self.last_seq = Some(self.last_seq.map_or(seq, |s| s.max(seq)));
    }
}

impl Session for Chat {
    fn opened(&mut self, protocol: Option<&str>, out: &mut Sink) -> Vec<Message> {
        self.connections += 1;
        self.json = protocol == Some(SUBPROTOCOL);
        self.echoes.clear();
        if !self.json {
            if self.room.is_some() && self.connections == 1 {
                out.warn(
                    "the server speaks plain text: --room is ignored (the URL picks the room)",
                );
            }
            return Vec::new();
        }
        self.history_pending = true;
        let mut join = serde_json::json!({ "type": "join" });
        // Without a name the hub uses the token's (and refuses the join if it has none).
        if !self.name.is_empty() {
            join["name"] = self.name.as_str().into();
        }
        if let Some(room) = &self.room {
            join["room"] = room.as_str().into();
        }
        // Resume: the server replays what this client has not seen, and nothing twice.
        if let Some(seq) = self.last_seq {
            join["since"] = seq.into();
            if let Some(epoch) = &self.epoch {
                join["epoch"] = epoch.as_str().into();
            }
        }
        vec![Message::text(join.to_string())]
    }

    fn line(&mut self, line: String, _out: &mut Sink) -> Option<Message> {
        if !self.json {
            // The seeds' convention for plain-text chat: "name: text".
            if self.name.is_empty() {
                // A hub with signed tokens names plain clients itself.
                return Some(Message::text(line));
            }
            return Some(Message::text(format!("{}: {line}", self.name)));
        }
        let mut send = serde_json::json!({ "type": "send", "text": line });
        if let Some(room) = &self.room {
            send["room"] = room.as_str().into();
        }
        if self.echoes.len() == MAX_ECHOES {
            self.echoes.pop_front();
        }
        self.echoes.push_back(line);
        Some(Message::text(send.to_string()))
    }

    fn received(&mut self, msg: &Message, out: &mut Sink) -> std::io::Result<()> {
        match msg {
            Message::Text(text) if self.json => {
                match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(parsed) => self.show(parsed, out),
                    // Something this client does not know: show it as it came.
                    Err(_) => out.data(text.as_str()),
                }
            }
            Message::Text(text) => out.data(&format!(
                "[{}] {}",
                format_time(now_millis()),
                text.as_str()
            )),
            other => out.message(other),
        }
    }

    fn pending(&self) -> bool {
        // The join's history, and the messages sent: a script that only reads the history
        // (empty stdin) or says one thing gets its answer before the client closes.
        self.json && (self.history_pending || !self.echoes.is_empty())
    }
}

/// Names shown on joining a room; a bigger room shows these and how many more.
const NAMES_SHOWN: usize = 20;

/// "alice, bob", or "alice, bob, ... and 9,980 more" for a big room.
fn name_list(members: &[String]) -> String {
    if members.len() <= NAMES_SHOWN {
        return members.join(", ");
    }
    let rest = members.len() - NAMES_SHOWN;
    format!("{} and {rest} more", members[..NAMES_SHOWN].join(", "))
}

/// Milliseconds since the Unix epoch, now.
fn now_millis() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}

/// A message's time in local time: "14:03", or "2026-01-01 14:03" when not today.
fn format_time(millis: u64) -> String {
    let Some(utc) = i64::try_from(millis)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
    else {
        return "?".to_owned();
    };
    let local = utc.with_timezone(&Local);
    if local.date_naive() == Local::now().date_naive() {
        local.format("%H:%M").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> Sink {
        Sink::Pipe {
            raw: false,
            format: BinaryFormat::Hex,
        }
    }

    fn text(msg: &Message) -> serde_json::Value {
        serde_json::from_str(msg.as_text().expect("text")).expect("json")
    }

    #[test]
    fn joins_then_resumes_from_the_last_seq() {
        let mut chat = Chat::new("alice".into(), Some("dev".into()), false);
        let mut out = pipe();
        let join = chat.opened(Some(SUBPROTOCOL), &mut out);
        assert_eq!(
            text(&join[0]),
            serde_json::json!({"type": "join", "name": "alice", "room": "dev"})
        );
        let history = r#"{"type":"history","room":"dev","messages":[{"room":"dev","seq":7,"from":"bob","time":0,"text":"hi"}]}"#;
        chat.received(&Message::text(history), &mut out)
            .expect("shown");
        let rejoin = chat.opened(Some(SUBPROTOCOL), &mut out);
        assert_eq!(text(&rejoin[0])["since"], 7);
        assert!(text(&rejoin[0]).get("epoch").is_none(), "no epoch was seen");
    }

    #[test]
    fn a_rejoin_names_the_epoch_and_a_new_epoch_starts_over() {
        let mut chat = Chat::new("alice".into(), None, false);
        let mut out = pipe();
        chat.opened(Some(SUBPROTOCOL), &mut out);
        let history = r#"{"type":"history","room":"general","epoch":"e1","messages":[{"room":"general","seq":7,"from":"bob","time":0,"text":"hi"}]}"#;
        chat.received(&Message::text(history), &mut out)
            .expect("shown");
        let rejoin = chat.opened(Some(SUBPROTOCOL), &mut out);
        assert_eq!(text(&rejoin[0])["since"], 7);
        assert_eq!(text(&rejoin[0])["epoch"], "e1");
        let lost = r#"{"type":"history","room":"general","epoch":"e2","gap":true,"first_seq":1,"messages":[{"room":"general","seq":1,"from":"bob","time":0,"text":"again"}]}"#;
        chat.received(&Message::text(lost), &mut out)
            .expect("shown");
        assert_eq!(chat.last_seq, Some(1), "numbering restarted with the epoch");
        assert_eq!(chat.epoch.as_deref(), Some("e2"));
    }

    #[test]
    fn a_big_room_is_not_listed_in_full() {
        let members: Vec<String> = (0..1000).map(|i| format!("user{i}")).collect();
        let shown = name_list(&members);
        assert!(shown.starts_with("user0, user1, "), "{shown}");
        assert!(shown.ends_with("user19 and 980 more"), "{shown}");
    }

    #[test]
    fn lines_become_send_messages_or_plain_text() {
        let mut chat = Chat::new("alice".into(), None, false);
        let mut out = pipe();
        chat.opened(Some(SUBPROTOCOL), &mut out);
        let msg = chat.line("hello".into(), &mut out).expect("a message");
        assert_eq!(
            text(&msg),
            serde_json::json!({"type": "send", "text": "hello"})
        );
        chat.opened(None, &mut out);
        let msg = chat.line("hello".into(), &mut out).expect("a message");
        assert_eq!(msg.as_text(), Some("alice: hello"));
    }

    #[test]
    fn own_messages_are_not_shown_twice_at_a_prompt() {
        let mut chat = Chat::new("alice".into(), None, true);
        let mut out = pipe();
        chat.opened(Some(SUBPROTOCOL), &mut out);
        chat.line("hello".into(), &mut out);
        assert_eq!(chat.echoes.len(), 1);
        let echo =
            r#"{"type":"message","room":"general","seq":3,"from":"alice","time":0,"text":"hello"}"#;
        chat.received(&Message::text(echo), &mut out)
            .expect("shown");
        assert!(chat.echoes.is_empty());
        assert_eq!(chat.last_seq, Some(3));
    }

    #[test]
    fn times_are_local_and_dated_when_not_today() {
        assert_eq!(format_time(now_millis()).len(), 5);
        assert_eq!(format_time(0).len(), 16);
    }
}

//! How messages are shown: markers and colours on a terminal, plain lines (or raw bytes) in a
//! pipe, binary data as hex or base64.

use std::io::{self, Write};

use base64::Engine;
use duplex::Message;

use super::printer::Printer;

/// Terminal colours, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    color: bool,
}

impl Style {
    /// Colours unless `--no-color` was given or `NO_COLOR` is set to anything
    /// (https://no-color.org).
    pub fn new(no_color_flag: bool) -> Style {
        let env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color_flag && !env,
        }
    }

    /// No colours at all (pipes).
    pub fn plain() -> Style {
        Style { color: false }
    }

    fn paint(&self, sgr: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{sgr}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }

    /// Something this side sent (green).
    pub fn sent(&self, s: &str) -> String {
        self.paint("32", s)
    }

    /// Something the server sent (cyan).
    pub fn received(&self, s: &str) -> String {
        self.paint("36", s)
    }

    /// Information about the connection (dim).
    pub fn info(&self, s: &str) -> String {
        self.paint("2", s)
    }

    /// Something gone wrong (red).
    pub fn error(&self, s: &str) -> String {
        self.paint("31", s)
    }

    /// A name in a chat (bold).
    pub fn name(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

/// How binary data is written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryFormat {
    /// Lower-case hex, two digits a byte.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

impl BinaryFormat {
    /// `data` as text.
    pub fn encode(self, data: &[u8]) -> String {
        match self {
            BinaryFormat::Hex => hex(data),
            BinaryFormat::Base64 => base64::engine::general_purpose::STANDARD.encode(data),
        }
    }
}

/// Lower-case hex, two digits a byte.
pub fn hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses hex digits ("48656c6c6f", "48 65 6c", "0x48656c"), for `/binary`.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: String = s.split_whitespace().collect();
    let digits = digits.strip_prefix("0x").unwrap_or(&digits);
    if !digits.len().is_multiple_of(2) {
        return Err("an odd number of hex digits".into());
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            digits
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{:?} is not hex", digits.get(i..i + 2).unwrap_or("")))
        })
        .collect()
}

/// "ping", "ping \"hello\"", "ping (3 bytes: 010203)".
pub fn control_text(kind: &str, payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok("") => kind.to_owned(),
        Ok(text) if !text.chars().any(char::is_control) => format!("{kind} {text:?}"),
        _ => format!("{kind} ({} bytes: {})", payload.len(), hex(payload)),
    }
}

/// Where output goes.
#[derive(Debug)]
pub enum Sink {
    /// Pipe mode: data on stdout, notes on stderr.
    Pipe {
        /// Binary messages written as they are (`--binary`), else as one line of text.
        raw: bool,
        /// How binary messages are written as text.
        format: BinaryFormat,
    },
    /// Interactive mode: everything printed above the prompt, with markers and colours.
    Terminal {
        /// Prints above the line being edited.
        printer: Printer,
        /// Colours.
        style: Style,
        /// How binary messages are shown.
        format: BinaryFormat,
    },
}

impl Sink {
    /// The colours in use (none in a pipe).
    pub fn style(&self) -> Style {
        match self {
            Sink::Pipe { .. } => Style::plain(),
            Sink::Terminal { style, .. } => *style,
        }
    }

    /// Whether a person is watching (interactive mode).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Sink::Terminal { .. })
    }

    /// A line of output: stdout in a pipe, above the prompt on a terminal.
    pub fn data(&mut self, line: &str) -> io::Result<()> {
        match self {
            Sink::Pipe { .. } => {
                let mut out = io::stdout().lock();
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
                out.flush()
            }
            Sink::Terminal { printer, .. } => {
                printer.print(line.to_owned());
                Ok(())
            }
        }
    }

    /// A line about the connection: stderr in a pipe (stdout stays data only), above the
    /// prompt on a terminal.
    pub fn note(&mut self, line: &str) {
        match self {
            Sink::Pipe { .. } => eprintln!("{line}"),
            Sink::Terminal { printer, style, .. } => printer.print(style.info(line)),
        }
    }

    /// A warning or error that does not end the session.
    pub fn warn(&mut self, line: &str) {
        match self {
            Sink::Pipe { .. } => eprintln!("duplex: {line}"),
            Sink::Terminal { printer, style, .. } => printer.print(style.error(line)),
        }
    }

    /// Shows a received text or binary message: one line (`< ` and colour on a terminal), or
    /// the raw bytes with `--binary`.
    pub fn message(&mut self, msg: &Message) -> io::Result<()> {
        match self {
            Sink::Pipe { raw: true, .. } => {
                let mut out = io::stdout().lock();
                match msg {
                    Message::Text(t) => out.write_all(t.as_bytes())?,
                    Message::Binary(b) => out.write_all(b)?,
                    _ => return Ok(()),
                }
                out.flush()
            }
            Sink::Pipe { format, .. } => match msg {
                Message::Text(t) => self.data(t.as_str()),
                Message::Binary(b) => {
                    let line = format.encode(b);
                    self.data(&line)
                }
                _ => Ok(()),
            },
            Sink::Terminal {
                printer,
                style,
                format,
            } => {
                let line = match msg {
                    Message::Text(t) => format!("< {}", t.as_str()),
                    Message::Binary(b) => binary_line("<", b, *format),
                    _ => return Ok(()),
                };
                printer.print(style.received(&line));
                Ok(())
            }
        }
    }

    /// Shows something sent that the prompt line does not already show (binary data, a
    /// ping, a close), marker included; nothing in a pipe.
    pub fn sent(&mut self, line: &str) {
        if let Sink::Terminal { printer, style, .. } = self {
            printer.print(style.sent(line));
        }
    }

    /// How binary data is shown.
    pub fn format(&self) -> BinaryFormat {
        match self {
            Sink::Pipe { format, .. } | Sink::Terminal { format, .. } => *format,
        }
    }
}

/// "< [binary 5 bytes] 68656c6c6f".
pub fn binary_line(marker: &str, data: &[u8], format: BinaryFormat) -> String {
    let unit = if data.len() == 1 { "byte" } else { "bytes" };
    format!(
        "{marker} [binary {} {unit}] {}",
        data.len(),
        format.encode(data)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(b"\x00\xffA"), "00ff41");
        assert_eq!(parse_hex("00ff41"), Ok(vec![0, 255, 65]));
        assert_eq!(parse_hex("0x00 FF 41"), Ok(vec![0, 255, 65]));
        assert_eq!(parse_hex(""), Ok(vec![]));
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("é1").is_err());
    }

    #[test]
    fn binary_is_shown_as_hex_or_base64() {
        assert_eq!(
            binary_line("<", b"hi", BinaryFormat::Hex),
            "< [binary 2 bytes] 6869"
        );
        assert_eq!(
            binary_line("<", b"hi", BinaryFormat::Base64),
            "< [binary 2 bytes] aGk="
        );
    }

    #[test]
    fn control_payloads_are_readable() {
        assert_eq!(control_text("ping", b""), "ping");
        assert_eq!(control_text("pong", b"hi"), "pong \"hi\"");
        assert_eq!(control_text("ping", b"\x01\x02"), "ping (2 bytes: 0102)");
    }

    #[test]
    fn colours_can_be_off() {
        assert_eq!(Style::plain().sent("x"), "x");
        assert_eq!(Style { color: true }.sent("x"), "\x1b[32mx\x1b[0m");
    }
}

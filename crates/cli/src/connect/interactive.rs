//! Interactive mode: line editing and history with rustyline, messages printed above the line
//! being typed, and the `/` commands.
//!
//! rustyline blocks, so it runs on a thread of its own and hands lines over a channel; the
//! async side asks for each line with the prompt to show. Output goes through a [`Printer`]:
//! a message that arrives mid-line leaves the line intact.

use std::io::{IsTerminal, Write};
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use duplex::{CloseCode, CloseFrame};
use nix::sys::termios::{tcgetattr, tcsetattr, SetArg, Termios};
use rustyline::error::ReadlineError;
use tokio::sync::mpsc;

use super::display::{parse_hex, Style};
use super::printer::Printer;
use super::session::Input;

/// What the editor read.
#[derive(Debug)]
pub enum Read {
    /// A line, without its newline.
    Line(String),
    /// Ctrl-D or Ctrl-C: the user is done.
    End,
}

/// Asks the editor thread for lines.
#[derive(Debug)]
pub struct LineReader {
    prompts: std_mpsc::Sender<String>,
    reads: mpsc::UnboundedReceiver<Read>,
}

impl LineReader {
    /// Shows `prompt` and waits for the next line. The editor is idle between calls, so text
    /// is only edited while someone waits for it.
    pub async fn read(&mut self, prompt: &str) -> Read {
        if self.prompts.send(prompt.to_owned()).is_err() {
            return Read::End;
        }
        self.reads.recv().await.unwrap_or(Read::End)
    }
}

/// The terminal's mode as it was before the editor changed it; restored by
/// [`TerminalGuard::finish`].
pub struct TerminalGuard {
    saved: Option<Termios>,
    printer: Printer,
}

impl std::fmt::Debug for TerminalGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalGuard")
            .field("saved", &self.saved.is_some())
            .finish_non_exhaustive()
    }
}

impl TerminalGuard {
    /// Prints what is still queued, puts the terminal back as it was and clears the prompt
    /// line, so that what is printed next starts on a clean line.
    ///
    /// The editor thread may be in the middle of reading a line, with the terminal in raw
    /// mode: it cannot be interrupted, and the process ends without it, so its own cleanup
    /// never runs; this is that cleanup.
    pub fn finish(self) {
        self.printer.flush();
        // The editor shows a line it was handed between two reads of the keyboard: give it a
        // moment to do so before the terminal changes under it.
        thread::sleep(Duration::from_millis(50));
        if let Some(saved) = &self.saved {
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, saved);
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"\r\x1b[K");
        let _ = out.flush();
    }
}

/// The terminal's current mode, if stdin is one.
fn save_mode() -> Option<Termios> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    tcgetattr(stdin).ok()
}

/// Starts the editor and printing threads; `None` if the terminal cannot do line editing
/// (TERM=dumb, say), in which case the caller falls back to pipe mode.
pub fn start() -> Option<(LineReader, Printer, TerminalGuard)> {
    let saved = save_mode();
    let (prompt_tx, prompt_rx) = std_mpsc::channel::<String>();
    let (read_tx, read_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std_mpsc::channel();
    thread::Builder::new()
        .name("readline".into())
        .spawn(move || {
            let config = rustyline::Config::builder().auto_add_history(true).build();
            let mut editor = match rustyline::DefaultEditor::with_config(config) {
                Ok(editor) => editor,
                Err(_) => return,
            };
            match editor.create_external_printer() {
                Ok(printer) => {
                    if ready_tx.send(printer).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
            while let Ok(prompt) = prompt_rx.recv() {
                let read = loop {
                    match editor.readline(&prompt) {
                        Ok(line) => break Read::Line(line),
                        // A window resize interrupts the read; the line is redrawn.
                        Err(ReadlineError::Signal(_)) => continue,
                        Err(_) => break Read::End,
                    }
                };
                let end = matches!(read, Read::End);
                if read_tx.send(read).is_err() || end {
                    break;
                }
            }
        })
        .ok()?;
    // The editor thread drops the sender without a printer when it cannot edit lines.
    let printer = Printer::start(ready_rx.recv().ok()?)?;
    Some((
        LineReader {
            prompts: prompt_tx,
            reads: read_rx,
        },
        printer.clone(),
        TerminalGuard { saved, printer },
    ))
}

/// The help shown by `/help`.
pub const HELP: &str = "commands: /ping [text]  /close [code] [reason]  /binary <hex>  /quit  \
                        (//text sends \"/text\"; Ctrl-D quits)";

/// What a typed line means.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Something to send, or to do with the connection.
    Input(InputKind),
    /// Nothing to send; show this.
    Show(String),
}

/// [`Input`] without its non-comparable parts, for tests.
#[derive(Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A line of text.
    Line(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping.
    Ping(Vec<u8>),
    /// A close frame.
    Close(Option<CloseFrame>),
}

impl From<InputKind> for Input {
    fn from(kind: InputKind) -> Input {
        match kind {
            InputKind::Line(l) => Input::Line(l),
            InputKind::Binary(b) => Input::Binary(Bytes::from(b)),
            InputKind::Ping(p) => Input::Ping(Bytes::from(p)),
            InputKind::Close(f) => Input::Close(f),
        }
    }
}

/// Reads a typed line: a `/` command, or text to send.
pub fn parse_command(line: &str) -> Command {
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Input(InputKind::Line(line.to_owned()));
    };
    if rest.starts_with('/') {
        return Command::Input(InputKind::Line(rest.to_owned()));
    }
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((name, arg)) => (name, arg.trim()),
        None => (rest, ""),
    };
    match name {
        "ping" => Command::Input(InputKind::Ping(arg.as_bytes().to_vec())),
        "quit" | "exit" => Command::Input(InputKind::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            "",
        )))),
        "binary" => match parse_hex(arg) {
            Ok(data) => Command::Input(InputKind::Binary(data)),
            Err(why) => Command::Show(format!("/binary: {why} (try /binary 48656c6c6f)")),
        },
        "close" => parse_close(arg),
        "help" | "?" => Command::Show(HELP.to_owned()),
        _ => Command::Show(format!("unknown command /{name}; {HELP}")),
    }
}

/// `/close`, `/close 1000`, `/close 4000 see you`.
fn parse_close(arg: &str) -> Command {
    if arg.is_empty() {
        return Command::Input(InputKind::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            "",
        ))));
    }
    let (code, reason) = match arg.split_once(char::is_whitespace) {
        Some((code, reason)) => (code, reason.trim()),
        None => (arg, ""),
    };
    let Ok(code) = code.parse::<u16>() else {
        return Command::Show(format!(
            "/close: {code:?} is not a close code (e.g. /close 1000 bye)"
        ));
    };
    let frame = CloseFrame::new(CloseCode(code), reason.to_owned());
    match frame.validate() {
        Ok(()) => Command::Input(InputKind::Close(Some(frame))),
        Err(e) => Command::Show(format!("/close: {e}")),
    }
}

/// Turns typed lines into [`Input`] until the user quits; runs as a task of its own.
pub async fn forward(
    mut reader: LineReader,
    prompt: String,
    tx: mpsc::Sender<Input>,
    printer: Printer,
    style: Style,
) {
    loop {
        let line = match reader.read(&prompt).await {
            Read::Line(line) => line,
            Read::End => {
                let bye = Input::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")));
                let _ = tx.send(bye).await;
                return;
            }
        };
        // An empty Enter sends nothing: easy to hit by accident, and never what is meant.
        if line.is_empty() {
            continue;
        }
        match parse_command(&line) {
            Command::Input(kind) => {
                let quit = matches!(kind, InputKind::Close(_));
                if tx.send(kind.into()).await.is_err() || quit {
                    return;
                }
            }
            Command::Show(text) => printer.print(style.info(&text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(line: &str) -> InputKind {
        match parse_command(line) {
            Command::Input(kind) => kind,
            Command::Show(text) => panic!("{line:?} showed {text:?}"),
        }
    }

    #[test]
    fn text_and_escaped_slashes_are_sent() {
        assert_eq!(input("hello"), InputKind::Line("hello".into()));
        assert_eq!(input("//etc/passwd"), InputKind::Line("/etc/passwd".into()));
    }

    #[test]
    fn commands_parse() {
        assert_eq!(input("/ping"), InputKind::Ping(vec![]));
        assert_eq!(
            input("/ping are you there"),
            InputKind::Ping(b"are you there".to_vec())
        );
        assert_eq!(input("/binary 01 ff"), InputKind::Binary(vec![1, 255]));
        assert_eq!(
            input("/quit"),
            InputKind::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
        );
        assert_eq!(
            input("/close 4001 see you"),
            InputKind::Close(Some(CloseFrame::new(CloseCode(4001), "see you")))
        );
        assert_eq!(
            input("/close"),
            InputKind::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")))
        );
    }

    #[test]
    fn bad_commands_are_explained_not_sent() {
        for line in ["/binary xyz", "/close abc", "/close 1005", "/nope", "/help"] {
            assert!(matches!(parse_command(line), Command::Show(_)), "{line}");
        }
    }
}

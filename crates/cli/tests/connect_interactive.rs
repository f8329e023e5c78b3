//! Interactive mode under a pseudo-terminal, as a person would see it: the client's output is
//! fed to a terminal emulator (vt100) and the tests read the screen.
//!
//! - `duplex connect`: a typed line is sent (`> `) and its echo shown (`< `, in colour), the
//!   `/` commands work, history recalls lines, `/close` with a code exits 0.
//! - `duplex chat`: a message pushed by another client while a line is half typed is printed
//!   above it, and the half-typed line stays intact: finishing it sends the whole line.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{run, Serve, BIN};

const ROWS: u16 = 30;
const COLS: u16 = 100;
/// How long any expected screen may take to appear.
const PATIENCE: Duration = Duration::from_secs(15);

/// What the terminal received so far.
struct Received {
    screen: vt100::Parser,
    raw: Vec<u8>,
}

/// `duplex ARGS` on a pseudo-terminal of its own.
struct Pty {
    child: Child,
    master: File,
    received: Arc<Mutex<Received>>,
}

impl Pty {
    fn spawn(args: &[&str]) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into the integers passed; the name and
        // termios pointers may be null, and the window size is read only.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nothing else.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec: the child gets a session
        // of its own, with the pty (its stdin) as the controlling terminal, as under a shell.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start duplex on a pty");
        drop(cmd); // closes the parent's copies of the slave side
        let received = Arc::new(Mutex::new(Received {
            screen: vt100::Parser::new(
                std::num::NonZeroU16::new(ROWS).expect("rows"),
                std::num::NonZeroU16::new(COLS).expect("cols"),
                0,
            ),
            raw: Vec::new(),
        }));
        let sink = received.clone();
        let mut reader = master.try_clone().expect("dup");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child and every copy of the slave side are gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut r = sink.lock().unwrap();
                r.screen.process(&buf[..n]);
                r.raw.extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            received,
        }
    }

    /// Types `keys`.
    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("type");
        self.master.flush().expect("flush");
    }

    /// The screen's rows, trailing blanks removed.
    fn rows(&self) -> Vec<String> {
        let r = self.received.lock().unwrap();
        r.screen
            .screen()
            .rows(0, COLS)
            .map(|row| row.trim_end().to_owned())
            .collect()
    }

    /// The row the cursor is on.
    fn cursor_row(&self) -> String {
        let r = self.received.lock().unwrap();
        let (row, _) = r.screen.screen().cursor_position();
        let text = r
            .screen
            .screen()
            .rows(0, COLS)
            .nth(usize::from(row))
            .unwrap_or_default();
        text.trim_end().to_owned()
    }

    /// Waits until `ok` holds for the screen, failing with the screen shown.
    fn wait_for(&self, what: &str, ok: impl Fn(&Pty) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            if start.elapsed() > PATIENCE {
                panic!("waited for {what}; screen:\n{}", self.rows().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until some row is exactly `row`.
    fn wait_row(&self, row: &str) {
        self.wait_for(&format!("the row {row:?}"), |p| {
            p.rows().iter().any(|r| r == row)
        });
    }

    /// Waits for the client to exit; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            if start.elapsed() > PATIENCE {
                panic!(
                    "the client did not exit; screen:\n{}",
                    self.rows().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the terminal is back in the mode a shell expects: lines edited by the terminal
    /// (ICANON) and echoed (ECHO), not the raw mode of the line editor.
    fn is_cooked(&self) -> bool {
        use std::os::fd::AsRawFd;
        // SAFETY: termios is plain data; tcgetattr fills it in from the pty, whose settings
        // the master side reads as the slave side's.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            assert_eq!(libc::tcgetattr(self.master.as_raw_fd(), &mut t), 0);
            t.c_lflag & libc::ICANON != 0 && t.c_lflag & libc::ECHO != 0
        }
    }

    fn raw(&self) -> Vec<u8> {
        self.received.lock().unwrap().raw.clone()
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_typed_line_is_sent_and_its_echo_shown_with_markers_and_commands_work() {
    let serve = Serve::start(&[]);
    let mut pty = Pty::spawn(&["connect", &serve.echo]);
    pty.wait_for("the banner", |p| {
        p.rows().iter().any(|r| r.starts_with("connected to ws://"))
    });
    pty.wait_for("the prompt", |p| p.cursor_row() == ">");
    assert!(!pty.is_cooked(), "the line editor is in raw mode");

    pty.type_keys("hello there\r");
    pty.wait_row("< hello there");
    pty.wait_row("> hello there");
    // Received messages are in colour (cyan) unless NO_COLOR.
    assert!(contains(&pty.raw(), b"\x1b[36m< hello there"));

    pty.type_keys("/binary 0001ff\r");
    pty.wait_row("> [binary 3 bytes] 0001ff");
    pty.wait_row("< [binary 3 bytes] 0001ff");

    pty.type_keys("/ping are you there\r");
    pty.wait_for("the pong", |p| {
        p.rows()
            .iter()
            .any(|r| r.starts_with("< pong \"are you there\" in ") && r.ends_with(" ms"))
    });

    // History: the up arrow brings the last line back.
    pty.type_keys("\x1b[A");
    pty.wait_for("the recalled line", |p| {
        p.cursor_row() == "> /ping are you there"
    });
    pty.type_keys("\x15"); // Ctrl-U clears it

    pty.type_keys("/nonsense\r");
    pty.wait_for("the help", |p| {
        p.rows()
            .iter()
            .any(|r| r.starts_with("unknown command /nonsense"))
    });

    pty.type_keys("/close 4001 done here\r");
    pty.wait_row("> close 4001 done here");
    pty.wait_for("the server's answer", |p| {
        p.rows().iter().any(|r| r.starts_with("closed: 4001"))
    });
    assert_eq!(pty.exit_code(), Some(0), "{}", pty.rows().join("\n"));
    assert!(pty.is_cooked());
}

#[test]
fn the_server_closing_shows_code_and_reason_and_restores_the_terminal() {
    let serve = Serve::start(&["--rate-limit", "1"]);
    let mut pty = Pty::spawn(&[
        "connect",
        "--no-color",
        "--subprotocol",
        "duplex.v1",
        &serve.ws,
    ]);
    pty.wait_for("the prompt", |p| p.cursor_row() == ">");
    // Join, then send faster than one message a second (bursts of 2 allowed): the hub
    // closes with 1008.
    pty.type_keys("{\"type\":\"join\",\"name\":\"fast\"}\r");
    for i in 0..6 {
        pty.type_keys(&format!("{{\"type\":\"send\",\"text\":\"{i}\"}}\r"));
    }
    assert_eq!(pty.exit_code(), Some(6));
    // It exited while the editor was reading a line, in raw mode: the mode was put back.
    assert!(pty.is_cooked());
    pty.wait_for("the close code", |p| {
        p.rows()
            .iter()
            .any(|r| r.starts_with("duplex: closed by the server: 1008 (policy violation)"))
    });
    // --no-color: no colour codes at all.
    assert!(!contains(&pty.raw(), b"\x1b[36m"));
}

#[test]
fn a_message_arriving_mid_line_leaves_the_typed_text_intact() {
    let serve = Serve::start(&[]);
    let room = serve.room("pty");
    let mut pty = Pty::spawn(&["chat", "--no-color", &room]);
    pty.wait_for("the name question", |p| {
        p.cursor_row() == "Please enter user name:"
    });
    pty.type_keys("alice\r");
    pty.wait_row("Welcome alice! You can start chatting now.");
    pty.wait_for("alice's prompt", |p| p.cursor_row() == "alice>");

    // Half a line, not yet sent.
    pty.type_keys("hello wor");
    pty.wait_for("the half line", |p| p.cursor_row() == "alice> hello wor");

    // Someone else speaks meanwhile.
    let out = run(
        &["chat", "--name", "bob", &room],
        b"pushed while alice types\n",
        Duration::from_secs(15),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    pty.wait_for("bob's message above the prompt", |p| {
        p.rows()
            .iter()
            .any(|r| r.ends_with("] bob: pushed while alice types"))
    });
    // The line being typed is redrawn below it, untouched, the cursor at its end.
    pty.wait_for("the half line redrawn", |p| {
        p.cursor_row() == "alice> hello wor"
    });
    let rows = pty.rows();
    let bob = rows
        .iter()
        .position(|r| r.ends_with("] bob: pushed while alice types"))
        .expect("bob's row");
    let prompt = rows
        .iter()
        .rposition(|r| r == "alice> hello wor")
        .expect("the prompt row");
    assert!(bob < prompt, "{}", rows.join("\n"));

    // Finishing the line sends all of it.
    pty.type_keys("ld\r");
    pty.wait_row("alice> hello world");
    let history = run(
        &["chat", "--name", "carol", &room],
        b"",
        Duration::from_secs(15),
    );
    assert!(
        history
            .out()
            .lines()
            .any(|l| l.ends_with("] alice: hello world")),
        "{}",
        history.out()
    );

    pty.type_keys("\x04"); // Ctrl-D
    assert_eq!(pty.exit_code(), Some(0));
}

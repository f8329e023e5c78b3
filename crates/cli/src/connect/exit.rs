//! The exit codes of `duplex connect` and `duplex chat`, and the one line printed for each
//! failure. Scripts branch on the code; people read the line.

use std::io;
use std::process::ExitCode;

use duplex::proxy::ProxyError;
use duplex::tls::TlsError;
use duplex::{CloseCode, CloseFrame, Error};

/// How a run ended, as a process exit code (documented in README.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The session ended as asked: end of input, `/quit`, `-x` got its replies, or the server
    /// closed normally.
    Ok = 0,
    /// A bad option or argument, or any failure without a code of its own.
    Other = 1,
    /// Nothing accepted the connection: refused, or the host or network is unreachable.
    Refused = 2,
    /// The host name did not resolve.
    Dns = 3,
    /// The server (or the proxy) answered the upgrade with an HTTP error status, or the
    /// handshake failed.
    Rejected = 4,
    /// The TLS handshake failed, usually because the server's certificate is not trusted.
    Tls = 5,
    /// The server closed the connection with an error code (not 1000 or 1001), dropped it
    /// without a close frame, or closed before `-x` got its replies.
    Closed = 6,
    /// A timeout: connecting, the handshake, `-x --timeout`, or an unanswered keepalive ping.
    Timeout = 7,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// A failure: the exit code and the single line that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The exit code.
    pub exit: Exit,
    /// What happened, on one line.
    pub message: String,
    /// Whether trying again might succeed (`--reconnect`).
    pub retryable: bool,
}

impl Failure {
    /// A failure with this code and message.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: one_line(&message.into()),
            // A bad option or an untrusted certificate stays so; the rest can clear up.
            retryable: !matches!(exit, Exit::Ok | Exit::Other | Exit::Tls),
        }
    }

    /// A bad option or argument.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(Exit::Other, message)
    }

    /// A failure to connect to `url`, classified by what the library reports.
    pub fn connect(url: &str, err: &Error) -> Self {
        let (exit, what) = classify(err);
        let message = match err {
            Error::Handshake(duplex::proto::handshake::HandshakeError::Status { status, body }) => {
                if body.is_empty() {
                    format!("{url} rejected the upgrade: {status}")
                } else {
                    format!("{url} rejected the upgrade: {status}: {body}")
                }
            }
            _ => format!("cannot connect to {url}: {what}"),
        };
        let mut failure = Failure::new(exit, message);
        if let Some(status) = err.http_status() {
            // 408, 429 and 5xx can clear up; other 4xx (401, 403, 404) mean the same request
            // will be refused again.
            failure.retryable = !status.is_client_error()
                || status == http::StatusCode::REQUEST_TIMEOUT
                || status == http::StatusCode::TOO_MANY_REQUESTS;
        }
        failure
    }

    /// A failure of a connection that was open.
    pub fn session(err: &Error) -> Self {
        let (exit, what) = match err {
            // A transport that ends without a close frame is what browsers report as 1006: the
            // server (or the path to it) went away; for a script that is the server's doing.
            Error::AbnormalClosure => (Exit::Closed, err.to_string()),
            _ => classify(err),
        };
        Failure::new(exit, format!("connection failed: {what}"))
    }

    /// The server closed the connection with `frame`: `None` when that is a normal end.
    pub fn closed_by_server(frame: Option<&CloseFrame>) -> Option<Self> {
        let frame = frame?;
        if is_normal(frame.code) {
            return None;
        }
        Some(Failure::new(
            Exit::Closed,
            format!("closed by the server: {}", describe_close(Some(frame))),
        ))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether a close code ends a session normally: 1000 (done) and 1001 (going away, e.g. a
/// server restarting) are not errors.
pub fn is_normal(code: CloseCode) -> bool {
    code == CloseCode::NORMAL || code == CloseCode::GOING_AWAY
}

/// "1008 (policy violation) rate limit exceeded", "no close code".
pub fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        None => "no close code".to_owned(),
        Some(f) => {
            let mut s = format!("{}", f.code);
            if let Some(name) = close_code_name(f.code) {
                s.push_str(&format!(" ({name})"));
            }
            if !f.reason.as_str().is_empty() {
                s.push(' ');
                s.push_str(f.reason.as_str());
            }
            one_line(&s)
        }
    }
}

/// The RFC 6455 name of a registered close code.
fn close_code_name(code: CloseCode) -> Option<&'static str> {
    Some(match code.0 {
        1000 => "normal",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data",
        1007 => "invalid data",
        1008 => "policy violation",
        1009 => "message too big",
        1010 => "extension required",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later",
        1014 => "bad gateway",
        _ => return None,
    })
}

/// The exit code of a library error, and what to say about it.
fn classify(err: &Error) -> (Exit, String) {
    let exit = match err {
        Error::Io(e) => io_exit(e),
        Error::Timeout(_) | Error::KeepaliveTimeout(_) | Error::WriteBufferFull => Exit::Timeout,
        Error::Handshake(_) | Error::Rejected(_) => Exit::Rejected,
        Error::Tls(tls) => match tls {
            // Reading the CA file named by --ca is a local mistake, not the server's.
            TlsError::Read { .. }
            | TlsError::Pem { .. }
            | TlsError::NoCertificates { .. }
            | TlsError::NoPrivateKey { .. }
            | TlsError::NativeRoots(_) => Exit::Other,
            TlsError::Handshake { error, .. } if error.kind() == io::ErrorKind::TimedOut => {
                Exit::Timeout
            }
            _ => Exit::Tls,
        },
        Error::Proxy(p) => match p {
            ProxyError::Io(e) => io_exit(e),
            ProxyError::Resolve(_) => Exit::Dns,
            ProxyError::Refused { .. } => Exit::Rejected,
            ProxyError::Socks(_) => Exit::Refused,
            _ => Exit::Other,
        },
        Error::AbnormalClosure => Exit::Other,
        _ => Exit::Other,
    };
    let what = match err {
        Error::Io(e) => io_message(e),
        Error::Proxy(ProxyError::Io(e)) => format!("proxy: {}", io_message(e)),
        other => other.to_string(),
    };
    (exit, what)
}

/// The exit code of a transport error.
fn io_exit(e: &io::Error) -> Exit {
    match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable
        | io::ErrorKind::AddrNotAvailable => Exit::Refused,
        io::ErrorKind::TimedOut => Exit::Timeout,
        _ => Exit::Other,
    }
}

/// "connection refused" rather than "Connection refused (os error 111)".
fn io_message(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        io::ErrorKind::TimedOut => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

/// Collapses line breaks and runs of blanks, so that any message (an HTML error page in a
/// rejection's body) prints as one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex::proto::handshake::HandshakeError;

    #[test]
    fn refused_and_unreachable_are_2() {
        let err = Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        let f = Failure::connect("ws://127.0.0.1:1/", &err);
        assert_eq!(f.exit, Exit::Refused);
        assert_eq!(
            f.message,
            "cannot connect to ws://127.0.0.1:1/: connection refused"
        );
        let err = Error::Proxy(ProxyError::Io(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(Failure::connect("ws://x/", &err).exit, Exit::Refused);
    }

    #[test]
    fn a_rejection_shows_status_and_body_on_one_line() {
        let err = Error::Handshake(HandshakeError::Status {
            status: http::StatusCode::UNAUTHORIZED,
            body: "missing token\n  try again".into(),
        });
        let f = Failure::connect("ws://h/", &err);
        assert_eq!(f.exit, Exit::Rejected);
        assert_eq!(
            f.message,
            "ws://h/ rejected the upgrade: 401 Unauthorized: missing token try again"
        );
        assert!(!f.retryable);
        let busy = Error::Handshake(HandshakeError::Status {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            body: String::new(),
        });
        assert!(Failure::connect("ws://h/", &busy).retryable);
    }

    #[test]
    fn timeouts_are_7() {
        assert_eq!(
            Failure::connect("ws://h/", &Error::Timeout("connect")).exit,
            Exit::Timeout
        );
        let keepalive = Error::KeepaliveTimeout(std::time::Duration::from_secs(1));
        assert_eq!(Failure::session(&keepalive).exit, Exit::Timeout);
    }

    #[test]
    fn server_closes_with_an_error_code_are_6_and_normal_ones_are_not_failures() {
        let policy = CloseFrame::new(CloseCode::POLICY, "slow down");
        let f = Failure::closed_by_server(Some(&policy)).expect("a failure");
        assert_eq!(f.exit, Exit::Closed);
        assert_eq!(
            f.message,
            "closed by the server: 1008 (policy violation) slow down"
        );
        assert_eq!(Failure::closed_by_server(None), None);
        let bye = CloseFrame::new(CloseCode::GOING_AWAY, "restart");
        assert_eq!(Failure::closed_by_server(Some(&bye)), None);
        let custom = CloseFrame::new(CloseCode(4000), "");
        assert_eq!(describe_close(Some(&custom)), "4000");
    }

    #[test]
    fn a_dropped_connection_is_6() {
        assert_eq!(Failure::session(&Error::AbnormalClosure).exit, Exit::Closed);
    }
}

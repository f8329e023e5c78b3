//! The close codes the hub sends, in one place so the README, the page and the tests agree.
//!
//! | code | when |
//! |---|---|
//! | 1000 | the client closed; the hub answers with the same code |
//! | 1001 | the server is shutting down (SIGINT/SIGTERM) |
//! | 1003 | a binary message on a chat connection (chat is text only) |
//! | 1008 | the client sent messages faster than `--rate-limit` allows |
//! | 1009 | a message larger than `--max-message-size` |
//! | 1013 | a plain-text client's message could not be stored: the shared store of a multi-node hub (Redis) is unreachable; try again later |
//! | 4000 | the client read too slowly: its send queue filled up; reconnect and resume |

/// Close code for a recipient that fell `send_queue` messages behind. It is in the 4000-4999
/// range that RFC 6455 leaves to applications; 1008 would also fit, but a distinct code lets a
/// client tell "reconnect and resume" apart from "you broke a rule".
///
/// ```
/// assert_eq!(duplex_hub::CLOSE_TOO_SLOW, 4000);
/// ```
pub const CLOSE_TOO_SLOW: u16 = 4000;

/// Close code for a client over the message rate limit (policy violation, RFC 6455 7.4.1).
///
/// ```
/// assert_eq!(duplex_hub::CLOSE_RATE_LIMITED, 1008);
/// ```
pub const CLOSE_RATE_LIMITED: u16 = 1008;

/// Close code sent to everyone during a graceful shutdown ("going away").
///
/// ```
/// assert_eq!(duplex_hub::CLOSE_SHUTDOWN, 1001);
/// ```
pub const CLOSE_SHUTDOWN: u16 = 1001;

/// Close code for a binary message on a chat connection ("unsupported data").
///
/// ```
/// assert_eq!(duplex_hub::CLOSE_BINARY, 1003);
/// ```
pub const CLOSE_BINARY: u16 = 1003;

/// Close code for a plain-text client whose message could not be stored because a multi-node
/// hub cannot reach Redis ("try again later", RFC 6455 7.4.1 as registered with IANA). JSON
/// clients get an `unavailable` error instead and stay connected.
///
/// ```
/// assert_eq!(duplex_hub::CLOSE_TRY_AGAIN, 1013);
/// ```
pub const CLOSE_TRY_AGAIN: u16 = 1013;

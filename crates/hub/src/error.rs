//! The hub's error type.

use std::path::PathBuf;

/// What can stop a hub from starting or from shutting down cleanly. Errors on single
/// connections are not here: they end that connection and are logged.
///
/// ```
/// let err = duplex_hub::HubError::NoListener("localhost:8080".into());
/// assert!(err.to_string().contains("localhost:8080"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// None of the addresses could be listened on.
    #[error("cannot listen on {0}")]
    NoListener(String),
    /// A socket operation failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The data directory cannot be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The history database failed.
    #[error("history storage: {0}")]
    Storage(#[from] rusqlite::Error),
    /// The Redis URL of a multi-node hub is not usable (the hub starts while Redis itself is
    /// unreachable, and reports itself degraded until it can reach it).
    #[error("Redis: {0}")]
    Redis(String),
    /// The thread that owns rooms and storage stopped unexpectedly.
    #[error("the room broker stopped unexpectedly")]
    BrokerGone,
}

/// The result type of this crate.
pub type Result<T, E = HubError> = std::result::Result<T, E>;

//! The browser chat page, embedded in the binary: plain HTML, CSS and JavaScript with no
//! build step, served at `/` (and at `/rooms/<name>`, which opens that room). Its script
//! speaks the protocol through the JavaScript client library (`clients/js`), served too, so
//! that any page of the hub's origin can import it.

/// The page (`GET /`).
pub(crate) const INDEX_HTML: &str = include_str!("../assets/index.html");
/// Its script (`GET /chat.js`).
pub(crate) const CHAT_JS: &str = include_str!("../assets/chat.js");
/// Its style sheet (`GET /chat.css`).
pub(crate) const CHAT_CSS: &str = include_str!("../assets/chat.css");
/// The JavaScript client library (`GET /duplex-client.js`), an ES module: the very file of the
/// npm package in `clients/js`, so the page and the package cannot drift apart.
pub(crate) const CLIENT_JS: &str = include_str!("../../../clients/js/duplex-client.js");

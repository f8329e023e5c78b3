//! The browser chat page, embedded in the binary: plain HTML, CSS and JavaScript with no
//! build step, served at `/` (and at `/rooms/<name>`, which opens that room).

/// The page (`GET /`).
pub(crate) const INDEX_HTML: &str = include_str!("../assets/index.html");
/// Its script (`GET /chat.js`).
pub(crate) const CHAT_JS: &str = include_str!("../assets/chat.js");
/// Its style sheet (`GET /chat.css`).
pub(crate) const CHAT_CSS: &str = include_str!("../assets/chat.css");

//! The close codes a session ends with (RFC 6455 section 7.4, and the control plane's own).

/// The server is shutting down.
pub const GOING_AWAY: u16 = 1001;
/// The client broke the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text message that is not UTF-8.
pub const INVALID_DATA: u16 = 1007;
/// The client stopped answering pings.
pub const POLICY_VIOLATION: u16 = 1008;
/// An inbound message over `MAX_INBOUND_BYTES`.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The event log could not be read.
pub const INTERNAL_ERROR: u16 = 1011;
/// The subscriber fell behind its backlog bound or out of the ring; the reason says where to
/// resume (`lagged; resume with since=<seq>`).
pub const LAGGED: u16 = 4008;
/// `since` is older than the log's oldest retained event.
pub const RETENTION_EXHAUSTED: u16 = 4410;

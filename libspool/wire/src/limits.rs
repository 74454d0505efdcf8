//! Every limit of the toolkit, named once. Each is documented in README.md ("Limits") and tested.

#![forbid(unsafe_code)]

use std::time::Duration;

/// RFC 2449 §4: a command line is at most 255 octets including the CRLF. Longer lines are
/// answered `-ERR` and discarded up to the next LF.
pub const MAX_COMMAND_LINE: usize = 255;

/// RFC 1939 §3: the autologout timer must be at least 10 minutes. Default idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Once the first byte of a command line has arrived, the rest of the line must arrive within
/// this time: a client dripping one byte a second cannot hold a session forever.
pub const DEFAULT_LINE_DEADLINE: Duration = Duration::from_secs(60);

/// A client that sends this many bad commands in a row is disconnected.
pub const DEFAULT_MAX_BAD_COMMANDS: u32 = 10;

/// How long a second session waits for the session lock before `-ERR [IN-USE]`.
pub const SESSION_LOCK_WAIT: Duration = Duration::from_millis(1000);

/// How long we wait for the mailbox content lock (dotlock + fcntl) before `[SYS/TEMP]`.
pub const CONTENT_LOCK_WAIT: Duration = Duration::from_secs(20);

/// A dotlock older than this, while the mailbox has not changed for as long, is stale and is
/// broken (and logged). Postfix uses 500 s, procmail 17 min; we break only after 10 min.
pub const STALE_DOTLOCK_AGE: Duration = Duration::from_secs(600);

/// Writes to the client that make no progress for this long end the session (nothing deleted).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(600);

/// Largest mailbox message count a session presents (the u32 message number space).
pub const MAX_MESSAGES: usize = u32::MAX as usize;

/// Largest UIDL length (RFC 1939 §7: 1 to 70 characters in the range 0x21-0x7E).
pub const MAX_UIDL_LEN: usize = 70;

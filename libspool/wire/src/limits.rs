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

/// The longest a pop-serve session may last, counted from its greeting. Checked only when a
/// command is read or about to be served, so a RETR under way always finishes; the next
/// command is answered `-ERR` and the session ends without UPDATE (nothing deleted, and the
/// mailbox lock is released). One hour moves 450 MB at 1 Mbit/s and 4.5 GB at 10 Mbit/s, and
/// a session cut short loses nothing: the client's next session sees the same messages.
/// What it bounds is a client that never stops (a NOOP every few seconds, or a line dripped
/// a byte at a time) holding the mailbox lock so the owner's other clients get `[IN-USE]`.
pub const DEFAULT_MAX_SESSION: Duration = Duration::from_secs(3600);

/// A client whose TCP connection has gone silent (a phone that changed network, a peer
/// switched off) is dropped about this long after its last sign of life: keepalive probes
/// start after half of it and `TCP_USER_TIMEOUT` is all of it (see `sock::KeepAlive::within`;
/// for 120 s: `TCP_KEEPIDLE` 60 s, `TCP_KEEPINTVL` 10 s, `TCP_KEEPCNT` 6,
/// `TCP_USER_TIMEOUT` 120 s). Two minutes rides out a short radio gap or a NAT rebinding,
/// yet frees the mailbox lock long before the idle timeout would.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(120);

/// Keepalive probes sent before a silent peer is given up (`TCP_KEEPCNT`).
pub const TCP_KEEPALIVE_PROBES: u32 = 6;

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

/// `RLIMIT_NOFILE` of a confined pop-serve session (soft and hard). A session holds at most
/// about a dozen descriptors at once: stdin, stdout, stderr, the syslog socket, the lock
/// broker's socket, the mailbox and its lock duplicate, the session lock, the journal and its
/// `.tmp`, the index and its `.tmp`, a directory to fsync, and for a Maildir its directories
/// and one message per measuring thread (at most four). 64 leaves room, and bounds what a
/// subverted session could hold open.
pub const SERVE_MAX_OPEN_FILES: u64 = 64;

/// Under `--proxy-protocol`, the whole PROXY header (v1 or v2) must arrive within this time
/// of the connection's start, else the connection is refused. The proxy sends it at once, in
/// the same segment as its connection's first bytes or before them, so a longer wait means
/// a peer that is not the proxy.
pub const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A PROXY v1 header is at most 107 bytes with its CRLF (the protocol's own bound: `PROXY
/// UNKNOWN` followed by two full IPv6 addresses and two 5-digit ports); a longer line is
/// refused.
pub const PROXY_V1_MAX_LINE: usize = 107;

/// Largest PROXY v2 header accepted, its 16 fixed bytes included: the addresses (36 bytes
/// for IPv6) and TLVs, which are skipped. HAProxy's `send-proxy-v2` with its TLS and
/// unique-id TLVs sends a few hundred bytes; a longer announced length is refused before
/// any of it is read.
pub const PROXY_V2_MAX_HEADER: usize = 2048;

/// `RLIMIT_NOFILE` of a confined pop-deliver (soft and hard), for its fixed needs: stdin,
/// stdout, stderr, the syslog socket, the temporary file, one mailbox with its directory,
/// dotlock, journal, `.tmp` and index, or a Maildir's four directories and one message. The
/// limit is this plus [`DELIVER_OPEN_FILES_PER_TARGET`] for each target.
pub const DELIVER_MAX_OPEN_FILES: u64 = 32;

/// What each target of pop-deliver adds to [`DELIVER_MAX_OPEN_FILES`]: the directory root
/// holds open for an explicit target, or the socket of its lock broker.
pub const DELIVER_OPEN_FILES_PER_TARGET: u64 = 2;

/// `RLIMIT_NOFILE` of a confined pop-spool (soft and hard): it works on one mailbox at a time
/// (two for migrate), each with its lock, journal, index and their temporary files, and a
/// directory walk a few levels deep.
pub const SPOOL_MAX_OPEN_FILES: u64 = 64;

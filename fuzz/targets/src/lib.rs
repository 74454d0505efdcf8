//! Fuzz targets: one plain `fn(&[u8])` per parser of untrusted or on-disk bytes, each
//! asserting properties (no panic on any input, round trips where a format has a writer,
//! sizes and counts equal to a simple reference computation). Two drivers call them: the
//! cargo-fuzz binaries in `fuzz/fuzz_targets/` (nightly, libFuzzer) and the stable
//! `spool-fuzz` driver that CI runs over the seed corpus in `fuzz/corpus/<target>/`.
//!
//! This crate depends on both the login and the store crates; no program does, so the
//! programs' reach (tests/tests/reach.rs) is unchanged.
//!
//! Targets that read files work in a private scratch directory ([`remove_scratch`] deletes
//! it). Inputs made of two files (a mailbox and its index or journal) are split by
//! [`split::two`]: a flags byte, a 16-bit little-endian length, the first file, the rest.

pub mod accounts;
pub mod auth_http;
pub mod checkpw_fd3;
pub mod command_parse;
pub mod line_buffer;
pub mod maildir_index;
pub mod maildir_names;
pub mod mbox_index;
pub mod mbox_journal;
pub mod mbox_scan;
pub mod sasl;
mod scratch;
pub mod split;

pub use scratch::remove_scratch;

/// A named target.
pub struct Target {
    /// Also the corpus directory's name and the cargo-fuzz binary's.
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order the driver runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "line_buffer",
        run: line_buffer::run,
    },
    Target {
        name: "command_parse",
        run: command_parse::run,
    },
    Target {
        name: "mbox_scan",
        run: mbox_scan::run,
    },
    Target {
        name: "mbox_index",
        run: mbox_index::run,
    },
    Target {
        name: "mbox_journal",
        run: mbox_journal::run,
    },
    Target {
        name: "maildir_names",
        run: maildir_names::run,
    },
    Target {
        name: "maildir_index",
        run: maildir_index::run,
    },
    Target {
        name: "sasl",
        run: sasl::run,
    },
    Target {
        name: "accounts",
        run: accounts::run,
    },
    Target {
        name: "checkpw_fd3",
        run: checkpw_fd3::run,
    },
    Target {
        name: "auth_http",
        run: auth_http::run,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

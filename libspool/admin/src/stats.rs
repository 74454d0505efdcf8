//! `pop-spool stats [--json]`: messages and bytes per mailbox, the largest mailboxes, totals.
//!
//! Read-only and lock-free: a mailbox being appended to may be counted without its newest
//! message, which is good enough for statistics and never delays delivery.

use super::{json, show, AdminError, Layout, Ui};
use spool_store::canon::CanonOptions;
use spool_store::mbox;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;

/// How many mailboxes "largest" lists.
pub const TOP_N: usize = 10;

/// One mailbox's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxStats {
    pub user: String,
    pub messages: u64,
    pub bytes: u64,
}

/// The whole spool's numbers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Sorted by user name.
    pub boxes: Vec<BoxStats>,
    pub messages: u64,
    pub bytes: u64,
    /// Mailboxes that could not be read (reported as warnings).
    pub errors: usize,
}

impl Stats {
    /// The [`TOP_N`] largest by bytes (ties by name).
    pub fn largest(&self) -> Vec<&BoxStats> {
        let mut v: Vec<&BoxStats> = self.boxes.iter().collect();
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.user.cmp(&b.user)));
        v.truncate(TOP_N);
        v
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let w = self
            .boxes
            .iter()
            .map(|b| b.user.len())
            .max()
            .unwrap_or(4)
            .max(4);
        s.push_str(&format!(
            "{:<w$} {:>10} {:>14}\n",
            "USER", "MESSAGES", "BYTES"
        ));
        for b in &self.boxes {
            s.push_str(&format!(
                "{:<w$} {:>10} {:>14}\n",
                b.user, b.messages, b.bytes
            ));
        }
        s.push_str(&format!("\nlargest {TOP_N}:\n"));
        for b in self.largest() {
            s.push_str(&format!(
                "{:<w$} {:>10} {:>14}\n",
                b.user, b.messages, b.bytes
            ));
        }
        s.push_str(&format!(
            "\ntotal: {} mailboxes, {} messages, {} bytes\n",
            self.boxes.len(),
            self.messages,
            self.bytes
        ));
        s
    }

    pub fn json(&self) -> String {
        let one = |b: &BoxStats| {
            json::object(&[
                ("user", json::string(&b.user)),
                ("messages", b.messages.to_string()),
                ("bytes", b.bytes.to_string()),
            ])
        };
        let users: Vec<String> = self.boxes.iter().map(one).collect();
        let largest: Vec<String> = self.largest().into_iter().map(one).collect();
        let total = json::object(&[
            ("mailboxes", self.boxes.len().to_string()),
            ("messages", self.messages.to_string()),
            ("bytes", self.bytes.to_string()),
            ("errors", self.errors.to_string()),
        ]);
        let mut s = json::object(&[
            ("users", json::array(&users)),
            ("largest", json::array(&largest)),
            ("total", total),
        ]);
        s.push('\n');
        s
    }
}

/// Counts every mailbox of the spool.
pub fn stats(layout: &Layout, ui: &mut Ui<'_>) -> Result<Stats, AdminError> {
    let w = super::walk(layout)?;
    let mut st = Stats::default();
    let total = w.mailboxes.len();
    for (i, (user, path)) in w.mailboxes.iter().enumerate() {
        ui.tick("stats", i, total);
        match count(path) {
            Ok((messages, bytes)) => {
                st.messages += messages;
                st.bytes += bytes;
                st.boxes.push(BoxStats {
                    user: show(user),
                    messages,
                    bytes,
                });
            }
            Err(e) => {
                st.errors += 1;
                ui.warn(&format!("{}: {e}", path.display()));
            }
        }
    }
    ui.done();
    st.boxes.sort_by(|a, b| a.user.cmp(&b.user));
    Ok(st)
}

fn count(path: &std::path::Path) -> io::Result<(u64, u64)> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let len = f.metadata()?.len();
    let canon = CanonOptions {
        quoting: Some(mbox::Quoting::Mboxrd),
        hide_spool_headers: true,
    };
    // A file that shrank while being scanned (a session's QUIT) is simply scanned again.
    let scanned = match mbox::scan::scan(&f, len, canon) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            let len = f.metadata()?.len();
            mbox::scan::scan(&f, len, canon)?
        }
        r => r?,
    };
    Ok((scanned.len() as u64, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_and_json() {
        let mut st = Stats::default();
        for i in 0..12u64 {
            st.boxes.push(BoxStats {
                user: format!("u{i:02}\"\\"),
                messages: i,
                bytes: i * 100,
            });
            st.messages += i;
            st.bytes += i * 100;
        }
        let l = st.largest();
        assert_eq!(l.len(), TOP_N);
        assert_eq!(l[0].bytes, 1100);
        assert_eq!(l[9].bytes, 200);
        let j = st.json();
        assert!(j.contains("\"user\":\"u00\\\"\\\\\""), "{j}");
        assert!(j.contains("\"total\":{\"mailboxes\":12,\"messages\":66,\"bytes\":6600"));
        assert!(st
            .text()
            .contains("total: 12 mailboxes, 66 messages, 6600 bytes"));
    }
}

//! The listing of a Maildir in memory: one name arena and a 16-byte record per message.
//!
//! * **Arena.** All file names live in one `Vec<u8>`; a message is a [`Rec`] of 16 bytes
//!   (offset, name length, leading timestamp, size, flags). The UIDL is a prefix of the name
//!   (the unique part), so it is never copied. 150,000 messages cost about 9 MB instead of
//!   the 40 MB of one boxed name, one `String` cache key and one hash-set slot each.
//! * **Sizes** are the exact octets RETR sends. A size that took reading the file is kept
//!   and believed at the next session when the stored (LF) length still matches: taken from
//!   `,S=` in the name when it equals the length measured (Maildir files are immutable by
//!   convention, so no `stat` is needed: what Dovecot and Courier rely on too), otherwise
//!   from an `lstat` whose length and mtime (seconds and nanoseconds) must both match.

#![forbid(unsafe_code)]

use super::names::{cmp_unique, leading_timestamp, name_field, plain_uidl, unique_part};
use std::fs::{self};
use std::os::unix::fs::MetadataExt;

/// Largest POP3 size a record holds (40 bits, 1 TiB); a larger message is refused with a
/// warning rather than listed with a wrong size.
pub const MAX_RECORD_SIZE: u64 = (1 << 40) - 1;

/// Largest name arena: offsets are `u32`. At 60-byte names that is 70 million messages.
pub const MAX_ARENA_LEN: usize = u32::MAX as usize;

/// Record flag: the file is in `cur/` (else `new/`).
pub const F_CUR: u8 = 1;

/// Record flag: the POP3 size is known.
pub const F_SIZED: u8 = 2;

/// Record flag: the size is validated by `lstat` (length and mtime kept aside).
pub const F_STAT: u8 = 4;

/// In memory only: the unique part is not a valid UIDL, so the UIDL is a `sha256:` fallback.
/// Decided when the name is pushed, while its bytes are in the cache.
pub const F_FALLBACK: u8 = 8;

/// One listed message, 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    pub(super) off: u32,
    /// Leading decimal timestamp of the name, saturated; `u32::MAX` when there is none.
    pub(super) ts: u32,
    size_lo: u32,
    size_hi: u8,
    pub flags: u8,
    pub(super) len: u16,
}

impl Rec {
    pub fn in_cur(&self) -> bool {
        self.flags & F_CUR != 0
    }
    pub fn sized(&self) -> bool {
        self.flags & F_SIZED != 0
    }
    pub fn by_stat(&self) -> bool {
        self.flags & F_STAT != 0
    }
    /// The POP3 size (0 until sized).
    pub fn size(&self) -> u64 {
        u64::from(self.size_lo) | u64::from(self.size_hi) << 32
    }
    /// Stable for the session: the arena is never reordered.
    pub fn key(&self) -> u32 {
        self.off
    }
    pub(super) fn set_size(&mut self, size: u64) {
        debug_assert!(size <= MAX_RECORD_SIZE);
        self.size_lo = size as u32;
        self.size_hi = (size >> 32) as u8;
        self.flags |= F_SIZED;
    }
}

/// What `lstat` must still show for a size kept with [`F_STAT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatKey {
    pub lf_len: u64,
    pub mtime: (i64, u32),
}

/// The size of a message just measured, with what the next session needs to believe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub crlf_size: u64,
    /// The file's length and mtime when measured.
    pub stat: StatKey,
}

/// The `Sizes` of a file just measured, from its `fstat`.
pub fn sizes_of(meta: &fs::Metadata, crlf_size: u64) -> Sizes {
    Sizes {
        crlf_size,
        stat: StatKey {
            lf_len: meta.len(),
            mtime: (meta.mtime(), nsec(meta.mtime_nsec())),
        },
    }
}

pub(super) fn nsec(n: impl TryInto<u32>) -> u32 {
    n.try_into().unwrap_or(0)
}

/// The listing of one Maildir.
#[derive(Debug, Default)]
pub struct Listing {
    names: Vec<u8>,
    pub recs: Vec<Rec>,
    /// Keyed by `Rec::key`; sorted up to `stats_sorted`.
    pub(super) stats: Vec<(u32, StatKey)>,
    stats_sorted: usize,
}

/// The listing outgrew its `u32` offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingFull;

impl Listing {
    pub fn name(&self, r: &Rec) -> &[u8] {
        let start = r.off as usize;
        &self.names[start..start + usize::from(r.len)]
    }

    pub fn unique(&self, r: &Rec) -> &[u8] {
        unique_part(self.name(r))
    }

    /// Appends a message (unsized).
    pub fn push(&mut self, name: &[u8], in_cur: bool) -> Result<usize, ListingFull> {
        let len = u16::try_from(name.len()).map_err(|_| ListingFull)?;
        let off = u32::try_from(self.names.len()).map_err(|_| ListingFull)?;
        if self.names.len() + name.len() > MAX_ARENA_LEN {
            return Err(ListingFull);
        }
        self.names.extend_from_slice(name);
        self.recs.push(Rec {
            off,
            ts: leading_timestamp(name),
            size_lo: 0,
            size_hi: 0,
            flags: if in_cur { F_CUR } else { 0 }
                | if plain_uidl(unique_part(name)) {
                    0
                } else {
                    F_FALLBACK
                },
            len,
        });
        Ok(self.recs.len() - 1)
    }

    /// Records the size of `recs[i]`: validated at the next session by its name's `,S=` when
    /// that equals the measured length, else by `lstat`. A size beyond [`MAX_RECORD_SIZE`]
    /// is not recorded (returns false).
    pub fn set_sizes(&mut self, i: usize, sizes: Sizes) -> bool {
        if sizes.crlf_size > MAX_RECORD_SIZE {
            return false;
        }
        let by_name = name_field(self.unique(&self.recs[i]), b'S') == Some(sizes.stat.lf_len);
        let r = &mut self.recs[i];
        r.set_size(sizes.crlf_size);
        if by_name {
            r.flags &= !F_STAT;
        } else {
            r.flags |= F_STAT;
            let key = r.off;
            // A record is sized once per session, or again in place: keys stay unique, so
            // they can be sorted in place without a stable sort's buffer.
            match self.stats[..self.stats_sorted].binary_search_by_key(&key, |s| s.0) {
                Ok(j) => self.stats[j].1 = sizes.stat,
                Err(_) => match self.stats[self.stats_sorted..].last_mut() {
                    Some(last) if last.0 == key => last.1 = sizes.stat,
                    _ => self.stats.push((key, sizes.stat)),
                },
            }
        }
        true
    }

    /// Forgets a size that no longer holds.
    pub fn unsize(&mut self, i: usize) {
        self.recs[i].flags &= !(F_SIZED | F_STAT);
    }

    pub(super) fn sort_stats(&mut self) {
        if self.stats_sorted != self.stats.len() {
            // In place: a copy would be the largest transient allocation of a session on a
            // Maildir without `,S=` names (24 bytes a message).
            self.stats.sort_unstable_by_key(|s| s.0);
            self.stats.dedup_by_key(|s| s.0);
            self.stats_sorted = self.stats.len();
        }
    }

    /// The `lstat` key of a record sized with [`F_STAT`]. Never sorts: a session looks up
    /// only keys carried from the index (sorted when the listing was built) while it adds
    /// new ones, and re-sorting per lookup would be quadratic.
    pub fn stat_key(&self, i: usize) -> Option<StatKey> {
        let key = self.recs[i].off;
        let (sorted, tail) = self.stats.split_at(self.stats_sorted);
        // A key is in one part only: `set_sizes` updates a sorted one in place.
        match sorted.binary_search_by_key(&key, |s| s.0) {
            Ok(j) => Some(sorted[j].1),
            Err(_) => tail.iter().rev().find(|s| s.0 == key).map(|s| s.1),
        }
    }

    /// Listing order: oldest first by leading timestamp, ties by unique part, the `cur/` copy
    /// of a unique part first (so dedup keeps it), then by name.
    fn order(&self, a: &Rec, b: &Rec) -> std::cmp::Ordering {
        let (na, nb) = (self.name(a), self.name(b));
        a.ts.cmp(&b.ts)
            .then_with(|| cmp_unique(na, nb))
            .then_with(|| b.in_cur().cmp(&a.in_cur()))
            .then_with(|| na.cmp(nb))
    }

    /// Sorts `recs[from..]`.
    pub(super) fn sort_from(&mut self, from: usize) {
        let mut recs = std::mem::take(&mut self.recs);
        recs[from..].sort_unstable_by(|a, b| self.order(a, b));
        self.recs = recs;
    }

    /// Sorts the whole listing and lists a unique part seen in both folders once, at its
    /// `cur/` name (another client's `new/`→`cur/` move seen by both reads).
    pub fn sort_dedup(&mut self) {
        self.sort_from(0);
        let mut recs = std::mem::take(&mut self.recs);
        recs.dedup_by(|later, kept| {
            later.ts == kept.ts && cmp_unique(self.name(later), self.name(kept)).is_eq()
        });
        self.recs = recs;
    }

    /// Gives back the memory a growing listing over-allocated.
    pub fn shrink(&mut self) {
        self.names.shrink_to_fit();
        self.recs.shrink_to_fit();
        self.sort_stats();
        self.stats.shrink_to_fit();
    }
}

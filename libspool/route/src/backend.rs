//! Choosing a user's backend: an explicit map file first, then rendezvous (highest random
//! weight) hashing over the backend list.
//!
//! Rendezvous hashing scores every backend for the user with a stable hash (SHA-256 of the
//! backend's address and the user name) and picks the highest score. Adding a backend to `n`
//! moves only the users whose new highest score is the new backend's, about `1/(n+1)` of them,
//! and nobody else; removing one moves only its own users. The hash does not depend on the
//! program's build or the host, so every router picks the same backend.
//!
//! Both files are read afresh on every request (the program runs once per request), so an
//! edit takes effect on the next login without any reload step.

#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;

/// Longest line read in the map or backend file; a longer line is an error.
pub const MAX_FILE_LINE: usize = 1024;

/// Most backends in a list (each request scores every one).
pub const MAX_BACKENDS: usize = 4096;

/// The rendezvous score of `backend` for `user`: the first 8 bytes of
/// SHA-256(`ip:port` NUL `user`), big-endian.
pub fn score(backend: &SocketAddr, user: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(backend.to_string().as_bytes());
    h.update(b"\0");
    h.update(user);
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The backend with the highest score for `user` (ties, vanishingly rare, go to the smaller
/// address so the choice stays deterministic); None for an empty list.
pub fn rendezvous(backends: &[SocketAddr], user: &[u8]) -> Option<SocketAddr> {
    backends
        .iter()
        .map(|b| (score(b, user), std::cmp::Reverse(*b)))
        .max()
        .map(|(_, std::cmp::Reverse(b))| b)
}

/// Reads `path` line by line: `#` starts a comment, blank lines are skipped, every other line
/// is handed to `each` split on whitespace. Stops early when `each` returns Some.
fn scan<T>(
    path: &Path,
    mut each: impl FnMut(usize, &[&str]) -> Result<Option<T>, String>,
) -> Result<Option<T>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut r = BufReader::new(f);
    use std::io::Read;
    let mut line = Vec::new();
    let mut n = 0;
    loop {
        line.clear();
        let got = Read::by_ref(&mut r)
            .take(MAX_FILE_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if got == 0 {
            return Ok(None);
        }
        n += 1;
        if line.len() > MAX_FILE_LINE {
            return Err(format!(
                "{}:{n}: line longer than {MAX_FILE_LINE} bytes",
                path.display()
            ));
        }
        let text =
            std::str::from_utf8(&line).map_err(|_| format!("{}:{n}: not UTF-8", path.display()))?;
        let text = text.split('#').next().unwrap_or("");
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if let Some(t) = each(n, &fields)? {
            return Ok(Some(t));
        }
    }
}

/// Parses `ip:port` (IPv6 as `[addr]:port`): nginx wants an address, not a host name.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not IP:PORT (nginx needs an address, not a name)"))
}

/// Reads a backend list: one `ip:port` per line.
pub fn read_list(path: &Path) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    scan::<()>(path, |n, f| {
        if f.len() != 1 {
            return Err(format!("{}:{n}: one IP:PORT per line", path.display()));
        }
        let a = parse_addr(f[0]).map_err(|e| format!("{}:{n}: {e}", path.display()))?;
        if out.len() >= MAX_BACKENDS {
            return Err(format!(
                "{}: more than {MAX_BACKENDS} backends",
                path.display()
            ));
        }
        out.push(a);
        Ok(None)
    })?;
    Ok(out)
}

/// Looks `user` up in a map file of `user ip:port` lines. Only the matching line's address is
/// checked; other lines must have two fields.
pub fn lookup_map(path: &Path, user: &[u8]) -> Result<Option<SocketAddr>, String> {
    scan(path, |n, f| {
        if f.len() != 2 {
            return Err(format!("{}:{n}: want USER IP:PORT", path.display()));
        }
        if f[0].as_bytes() == user {
            return parse_addr(f[1])
                .map(Some)
                .map_err(|e| format!("{}:{n}: {e}", path.display()));
        }
        Ok(None)
    })
}

/// Where backends come from.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    /// `--backend` addresses.
    pub listed: Vec<SocketAddr>,
    /// `--backends FILE`, read per request and added to `listed`.
    pub file: Option<std::path::PathBuf>,
    /// `--map FILE`: explicit user placements, consulted first.
    pub map: Option<std::path::PathBuf>,
}

impl Backends {
    /// The backend for `user`: its map entry, else the rendezvous choice.
    pub fn choose(&self, user: &[u8]) -> Result<SocketAddr, String> {
        if let Some(m) = &self.map {
            if let Some(a) = lookup_map(m, user)? {
                return Ok(a);
            }
        }
        let mut all = self.listed.clone();
        if let Some(f) = &self.file {
            all.extend(read_list(f)?);
        }
        rendezvous(&all, user).ok_or_else(|| "no backends configured".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| format!("127.0.3.{}:110", i + 1).parse().unwrap())
            .collect()
    }

    fn moved(from: usize, users: usize) -> usize {
        let a = addrs(from);
        let b = addrs(from + 1);
        (0..users)
            .filter(|i| {
                let u = format!("user{i}");
                let x = rendezvous(&a, u.as_bytes()).unwrap();
                let y = rendezvous(&b, u.as_bytes()).unwrap();
                // Nobody moves except onto the new backend.
                assert!(x == y || y == b[from], "{u} moved {x} -> {y}");
                x != y
            })
            .count()
    }

    #[test]
    fn adding_a_backend_moves_about_its_share() {
        for (from, users) in [(3usize, 200usize), (4, 200), (4, 10_000)] {
            let m = moved(from, users);
            let share = users as f64 / (from + 1) as f64;
            println!(
                "rendezvous: {from} -> {} backends moves {m} of {users} users (ideal {share:.0})",
                from + 1
            );
            assert!(
                (m as f64) > share * 0.6 && (m as f64) < share * 1.4,
                "{m} of {users}"
            );
        }
    }

    #[test]
    fn spread_is_even_and_stable() {
        let a = addrs(3);
        let mut count = [0usize; 3];
        for i in 0..3000 {
            let u = format!("user{i}");
            let b = rendezvous(&a, u.as_bytes()).unwrap();
            count[a.iter().position(|x| *x == b).unwrap()] += 1;
        }
        for c in count {
            assert!((800..1200).contains(&c), "{count:?}");
        }
        // A fixed point: the hash is stable across builds and hosts.
        assert_eq!(
            score(&"127.0.0.1:110".parse().unwrap(), b"alice"),
            u64::from_be_bytes(
                Sha256::digest(b"127.0.0.1:110\0alice")[..8]
                    .try_into()
                    .unwrap()
            )
        );
        assert_eq!(rendezvous(&[], b"x"), None);
    }

    #[test]
    fn map_and_list_files() {
        let d = tempfile::tempdir().unwrap();
        let map = d.path().join("map");
        std::fs::write(
            &map,
            "# moved users\nalice 127.0.9.9:1100\n\nbob [::1]:110 # v6\n",
        )
        .unwrap();
        let list = d.path().join("list");
        std::fs::write(&list, "127.0.3.1:110\n127.0.3.2:110\n").unwrap();
        let b = Backends {
            listed: vec![],
            file: Some(list.clone()),
            map: Some(map.clone()),
        };
        assert_eq!(
            b.choose(b"alice").unwrap(),
            "127.0.9.9:1100".parse().unwrap()
        );
        assert_eq!(b.choose(b"bob").unwrap(), "[::1]:110".parse().unwrap());
        let carol = b.choose(b"carol").unwrap();
        assert_eq!(
            Some(carol),
            rendezvous(&read_list(&list).unwrap(), b"carol")
        );
        // An edit is seen by the next request.
        std::fs::write(&map, "carol 127.0.9.8:110\n").unwrap();
        assert_eq!(
            b.choose(b"carol").unwrap(),
            "127.0.9.8:110".parse().unwrap()
        );
        std::fs::write(&map, "carol mail.example:110\n").unwrap();
        assert!(b.choose(b"carol").unwrap_err().contains("not IP:PORT"));
        std::fs::write(&map, "carol\n").unwrap();
        assert!(b.choose(b"carol").is_err());
        std::fs::write(&map, format!("x {}\n", "y".repeat(MAX_FILE_LINE))).unwrap();
        assert!(b.choose(b"carol").unwrap_err().contains("longer than"));
        let none = Backends::default();
        assert!(none.choose(b"x").is_err());
    }
}

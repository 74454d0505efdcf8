//! Session tickets shared by the per-connection processes through a key file, so that a client
//! resumes on the next connection although every connection is a new process. The file is
//! read by the root parent before the drop; the network process holds the keys in memory only.
//!
//! File format: one to [`MAX_KEYS`] records of [`RECORD`] bytes, each a 16-byte key name and
//! a 32-byte ChaCha20-Poly1305 key. The first encrypts new tickets; all decrypt. Rotation
//! (`pop-tls --rotate-ticket-keys FILE`) puts a fresh record first and keeps the previous one,
//! so tickets stay valid across one rotation. Rule: the file must be a regular file owned by
//! root or the invoking user with no group or other access; otherwise tickets are off.

#![forbid(unsafe_code)]

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Keys kept in the file: the current one and the one before.
pub const MAX_KEYS: usize = 2;
/// Bytes per record: name and key.
pub const RECORD: usize = 16 + 32;
/// How long a ticket is accepted (and the rotation period to choose, at most): 12 hours.
pub const TICKET_LIFETIME_SECS: u32 = 12 * 3600;
/// Tickets sent after a TLS 1.3 handshake.
pub const TLS13_TICKETS: usize = 1;

/// Encrypts and decrypts tickets with the file's keys.
pub struct FileTicketer {
    keys: Vec<([u8; 16], LessSafeKey)>,
    rng: SystemRandom,
}

impl std::fmt::Debug for FileTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileTicketer({} keys)", self.keys.len())
    }
}

fn parse(bytes: &[u8]) -> Result<Vec<([u8; 16], LessSafeKey)>, String> {
    if bytes.is_empty()
        || !bytes.chunks_exact(RECORD).remainder().is_empty()
        || bytes.len() / RECORD > MAX_KEYS
    {
        return Err(format!(
            "holds {} bytes, not 1 to {MAX_KEYS} records of {RECORD}",
            bytes.len()
        ));
    }
    bytes
        .chunks(RECORD)
        .map(|r| {
            let mut name = [0u8; 16];
            name.copy_from_slice(&r[..16]);
            let key =
                UnboundKey::new(&CHACHA20_POLY1305, &r[16..]).map_err(|_| "bad key".to_string())?;
            Ok((name, LessSafeKey::new(key)))
        })
        .collect()
}

/// Reads the file's bytes, refusing symlinks, non-regular files, foreign owners, and any
/// group or other permission.
fn read_private(path: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let md = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !md.is_file() || (md.uid() != 0 && md.uid() != me) || md.mode() & 0o077 != 0 {
        return Err(format!(
            "{} must be a regular file owned by root with mode 0600",
            path.display()
        ));
    }
    let mut buf = Vec::new();
    f.take((MAX_KEYS * RECORD + 1) as u64)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(buf)
}

impl FileTicketer {
    /// Loads the keys. An error names the file and the reason, for one log line.
    pub fn load(path: &Path) -> Result<FileTicketer, String> {
        let bytes = read_private(path)?;
        let keys = parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(FileTicketer {
            keys,
            rng: SystemRandom::new(),
        })
    }
}

impl rustls::server::ProducesTickets for FileTicketer {
    fn enabled(&self) -> bool {
        true
    }
    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let (name, key) = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(name),
            &mut body,
        )
        .ok()?;
        let mut out = Vec::with_capacity(16 + NONCE_LEN + body.len());
        out.extend_from_slice(name);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Some(out)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < 16 + NONCE_LEN {
            return None;
        }
        let (name, rest) = cipher.split_at(16);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let (_, key) = self.keys.iter().find(|(n, _)| n == name)?;
        let mut body = body.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = key
            .open_in_place(
                nonce,
                Aad::from(<&[u8; 16]>::try_from(name).ok()?),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

/// Writes a fresh key first and keeps the previous current one: atomically (a temporary file
/// in the same directory, mode 0600, fsync, rename).
pub fn rotate(path: &Path) -> Result<(), String> {
    let old = match read_private(path) {
        Ok(b) => parse(&b).map(|_| b).unwrap_or_default(),
        Err(_) if !path.exists() => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut fresh = [0u8; RECORD];
    SystemRandom::new()
        .fill(&mut fresh)
        .map_err(|_| "no random bytes".to_string())?;
    let mut out = fresh.to_vec();
    out.extend_from_slice(&old[..old.len().min(RECORD * (MAX_KEYS - 1))]);
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    f.write_all(&out)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename to {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets;

    #[test]
    fn rotate_then_tickets_survive_one_rotation() {
        let d = tempfile_dir();
        let p = d.join("keys");
        rotate(&p).unwrap();
        let t1 = FileTicketer::load(&p).unwrap();
        let ticket = t1.encrypt(b"session state").unwrap();
        assert_eq!(t1.decrypt(&ticket).unwrap(), b"session state");
        rotate(&p).unwrap();
        let t2 = FileTicketer::load(&p).unwrap();
        assert_eq!(t2.keys.len(), 2);
        assert_eq!(t2.decrypt(&ticket).unwrap(), b"session state");
        rotate(&p).unwrap();
        let t3 = FileTicketer::load(&p).unwrap();
        assert!(t3.decrypt(&ticket).is_none(), "two rotations later");
        let mut bad = t3.encrypt(b"x").unwrap();
        *bad.last_mut().unwrap() ^= 1;
        assert!(t3.decrypt(&bad).is_none());
        assert!(t3.decrypt(b"short").is_none());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn refuses_readable_files() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile_dir();
        let p = d.join("keys");
        rotate(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(FileTicketer::load(&p).unwrap_err().contains("mode 0600"));
        std::fs::write(d.join("short"), [0u8; 47]).unwrap();
        std::fs::set_permissions(d.join("short"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(FileTicketer::load(&d.join("short")).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let mut b = [0u8; 8];
        SystemRandom::new().fill(&mut b).unwrap();
        let d = std::env::temp_dir().join(format!("pop-tls-tickets-{:x}", u64::from_le_bytes(b)));
        std::fs::create_dir(&d).unwrap();
        d
    }
}

//! Password hashes through the system's libcrypt (Debian: libxcrypt), which knows every format
//! Debian has ever written to /etc/shadow: yescrypt `$y$`, gost-yescrypt `$gy$`, scrypt `$7$`,
//! SHA-512 `$6$`, SHA-256 `$5$`, bcrypt `$2b$`/`$2a$`/`$2y$`, MD5 `$1$` and traditional DES.
//!
//! We link libcrypt rather than reimplement the algorithms: it is the code `login` and PAM use,
//! so a hash `passwd` wrote is verified exactly as at the console. Building needs the static
//! link library (Debian package `libcrypt-dev`).

use super::ct::ct_eq;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_ulong, c_void};
use zeroize::Zeroize;

/// `sizeof(struct crypt_data)` in libxcrypt: the scratch area `crypt_rn` works in.
const CRYPT_DATA_SIZE: usize = 32768;
/// `CRYPT_GENSALT_OUTPUT_SIZE` in libxcrypt.
const GENSALT_OUTPUT_SIZE: usize = 192;
/// libxcrypt refuses passphrases longer than this (`CRYPT_MAX_PASSPHRASE_SIZE`); the fd-3
/// limit keeps us below it anyway.
pub const MAX_PASSPHRASE: usize = 512;

/// The setting used for the dummy verification of unknown users and of accounts refused before
/// their hash is tried: yescrypt at Debian's default cost (`j9T`, as `passwd` writes it), so
/// such attempts cost what a wrong password for a typical Debian account costs.
pub const DUMMY_SETTING: &str = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$";

#[link(name = "crypt")]
extern "C" {
    fn crypt_rn(
        phrase: *const c_char,
        setting: *const c_char,
        data: *mut c_void,
        size: c_int,
    ) -> *mut c_char;
    fn crypt_gensalt_rn(
        prefix: *const c_char,
        count: c_ulong,
        rbytes: *const c_char,
        nrbytes: c_int,
        output: *mut c_char,
        output_size: c_int,
    ) -> *mut c_char;
}

/// The hash formats we know by their prefix. Policy (which ones are accepted) is
/// [`Format::acceptable`]; the hashing itself is always libcrypt's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yescrypt,
    GostYescrypt,
    Scrypt,
    Sha512,
    Sha256,
    Bcrypt,
    Md5,
    /// Traditional 13-character DES: 8-character passwords, 12-bit salt. Refused unless allowed.
    Des,
    /// Anything else (BSDi `_`, NT `$3$`, Sun MD5, ...): never accepted.
    Other,
}

impl Format {
    /// Classifies a stored hash by its prefix (the caller has already dealt with empty and
    /// locked hashes).
    pub fn of(hash: &[u8]) -> Format {
        let prefixes: [(&[u8], Format); 9] = [
            (b"$y$", Format::Yescrypt),
            (b"$gy$", Format::GostYescrypt),
            (b"$7$", Format::Scrypt),
            (b"$6$", Format::Sha512),
            (b"$5$", Format::Sha256),
            (b"$2b$", Format::Bcrypt),
            (b"$2a$", Format::Bcrypt),
            (b"$2y$", Format::Bcrypt),
            (b"$1$", Format::Md5),
        ];
        for (p, f) in prefixes {
            if hash.starts_with(p) {
                return f;
            }
        }
        let des_char = |c: &u8| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/';
        if hash.len() == 13 && hash.iter().all(des_char) {
            return Format::Des;
        }
        Format::Other
    }

    /// Whether a hash of this format may be verified at all.
    pub fn acceptable(self, allow_des: bool) -> bool {
        match self {
            Format::Des => allow_des,
            Format::Other => false,
            _ => true,
        }
    }
}

/// Why a hash could not be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptError {
    /// The passphrase or setting holds a NUL or is too long.
    BadInput,
    /// libcrypt rejected the setting (unknown or disabled method, malformed salt).
    Rejected,
}

/// Hashes `password` with `setting` (a stored hash or a gensalt output) and compares the result
/// with `setting` in constant time. `Ok(false)` for a wrong password; `Err` when libcrypt cannot
/// use the setting at all (a malformed or unsupported hash).
pub fn verify(password: &[u8], stored: &[u8]) -> Result<bool, CryptError> {
    let mut out = hash_with(password, stored)?;
    let ok = ct_eq(out.as_bytes(), stored);
    out.zeroize();
    Ok(ok)
}

/// What an attempt that cannot succeed (unknown user, locked account, unusable hash) must cost
/// so that it takes as long as a wrong password for an existing account of the same database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dummy {
    /// One verification against this setting (a hash string from the database, or
    /// [`DUMMY_SETTING`] for system accounts).
    Hash(Vec<u8>),
    /// Nothing: the database holds only plaintext secrets, whose check is a comparison.
    Nothing,
}

impl Dummy {
    /// Spends the cost, on `password`. The result is meaningless and discarded.
    pub fn spend(&self, password: &[u8]) {
        if let Dummy::Hash(setting) = self {
            let pw = if password.len() > MAX_PASSPHRASE || password.contains(&0) {
                &b"x"[..]
            } else {
                password
            };
            if verify(pw, setting).is_err() {
                // A reference hash libcrypt cannot use must not make the attempt cheap.
                let _ = verify(pw, DUMMY_SETTING.as_bytes());
            }
        }
    }
}

/// Burns the time of one verification against [`DUMMY_SETTING`]; the result is meaningless.
pub fn dummy_verify(password: &[u8]) {
    // An empty or NUL-bearing password still costs a full hash: never short-cut here.
    let pw = if password.len() > MAX_PASSPHRASE || password.contains(&0) {
        &b"x"[..]
    } else {
        password
    };
    let _ = verify(pw, DUMMY_SETTING.as_bytes());
}

/// `crypt_rn(password, setting)`: the full hash string, or why not.
pub fn hash_with(password: &[u8], setting: &[u8]) -> Result<String, CryptError> {
    if password.len() > MAX_PASSPHRASE {
        return Err(CryptError::BadInput);
    }
    let mut phrase = CString::new(password).map_err(|_| CryptError::BadInput)?;
    let setting = CString::new(setting).map_err(|_| CryptError::BadInput)?;
    let mut data = vec![0u8; CRYPT_DATA_SIZE];
    // SAFETY: `phrase` and `setting` are NUL-terminated strings that outlive the call; `data`
    // is a writable, zero-initialised area of exactly `sizeof(struct crypt_data)` bytes, which
    // is what crypt_rn requires (its `size` argument tells it so). crypt_rn is thread-safe: all
    // its state lives in `data`.
    let p = unsafe {
        crypt_rn(
            phrase.as_ptr(),
            setting.as_ptr(),
            data.as_mut_ptr().cast(),
            CRYPT_DATA_SIZE as c_int,
        )
    };
    let result = if p.is_null() {
        Err(CryptError::Rejected)
    } else {
        // SAFETY: on success crypt_rn returns a pointer to a NUL-terminated string inside
        // `data`, which is still alive here.
        let s = unsafe { CStr::from_ptr(p) };
        // Hash strings are printable ASCII; libxcrypt never returns a '*' string from crypt_rn
        // on success, but refuse one anyway so a failure can never equal a stored "*" hash.
        match s.to_str() {
            Ok(s) if !s.starts_with('*') => Ok(s.to_owned()),
            _ => Err(CryptError::Rejected),
        }
    };
    // The scratch area held the passphrase and intermediate state.
    data.zeroize();
    // CString has no zeroize impl; wipe its bytes through the raw buffer before it drops.
    let mut raw = std::mem::take(&mut phrase).into_bytes_with_nul();
    raw.zeroize();
    result
}

/// A fresh setting for `prefix` (`"$y$"`, `"$6$"`, `"$2b$"`, ...) with libcrypt's default cost
/// (`count` 0) and salt from the OS random source. Used by admins' tooling and by the tests to
/// make hashes of every format.
pub fn gensalt(prefix: &str, count: u64) -> Result<String, CryptError> {
    let prefix = CString::new(prefix).map_err(|_| CryptError::BadInput)?;
    let mut out = vec![0u8; GENSALT_OUTPUT_SIZE];
    // SAFETY: `prefix` is NUL-terminated; a null `rbytes` with `nrbytes` 0 asks libxcrypt to
    // read the OS random source itself; `out` is writable for `GENSALT_OUTPUT_SIZE` bytes, the
    // size we pass.
    let p = unsafe {
        crypt_gensalt_rn(
            prefix.as_ptr(),
            count as c_ulong,
            std::ptr::null(),
            0,
            out.as_mut_ptr().cast(),
            GENSALT_OUTPUT_SIZE as c_int,
        )
    };
    if p.is_null() {
        return Err(CryptError::Rejected);
    }
    // SAFETY: on success the returned pointer is `out`'s start, now holding a NUL-terminated
    // string; `out` is alive.
    let s = unsafe { CStr::from_ptr(p) };
    match s.to_str() {
        Ok(s) if !s.starts_with('*') => Ok(s.to_owned()),
        _ => Err(CryptError::Rejected),
    }
}

/// Hashes `password` in format `prefix` with a fresh salt: what `mkpasswd -m` does.
pub fn hash_password(password: &[u8], prefix: &str) -> Result<String, CryptError> {
    let setting = gensalt(prefix, 0)?;
    hash_with(password, setting.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_debian_format_round_trips() {
        for prefix in ["$y$", "$gy$", "$7$", "$6$", "$5$", "$2b$", "$1$"] {
            let h = hash_password(b"s3cret pass", prefix).expect(prefix);
            assert!(h.starts_with(prefix), "{h}");
            assert_ne!(Format::of(h.as_bytes()), Format::Other, "{h}");
            assert_eq!(verify(b"s3cret pass", h.as_bytes()), Ok(true), "{h}");
            assert_eq!(verify(b"s3cret pasS", h.as_bytes()), Ok(false), "{h}");
            assert_eq!(verify(b"", h.as_bytes()), Ok(false), "{h}");
        }
    }

    #[test]
    fn des_is_classified_and_verifiable() {
        let h = hash_with(b"password", b"ab").unwrap();
        assert_eq!(h.len(), 13);
        assert_eq!(Format::of(h.as_bytes()), Format::Des);
        assert!(!Format::Des.acceptable(false));
        assert!(Format::Des.acceptable(true));
        assert_eq!(verify(b"password", h.as_bytes()), Ok(true));
    }

    #[test]
    fn classification_table() {
        let cases: &[(&[u8], Format)] = &[
            (b"$y$j9T$abc$def", Format::Yescrypt),
            (b"$6$salt$hash", Format::Sha512),
            (b"$5$salt$hash", Format::Sha256),
            (b"$2y$05$abc", Format::Bcrypt),
            (b"$1$salt$hash", Format::Md5),
            (b"$3$$8846f7eaee8fb117ad06bdd830b7586c", Format::Other),
            (b"_J9..rasm", Format::Other),
            (b"abcdefghijklm", Format::Des),
            (b"abcdefghijkl!", Format::Other),
            (b"", Format::Other),
        ];
        for (h, f) in cases {
            assert_eq!(Format::of(h), *f, "{:?}", String::from_utf8_lossy(h));
        }
    }

    #[test]
    fn malformed_settings_are_errors_not_matches() {
        for bad in [&b"*"[..], b"!", b"$6$", b"$y$", b"x", b"$2b$99$abc"] {
            assert!(verify(b"x", bad).is_err() || verify(b"x", bad) == Ok(false));
        }
        assert_eq!(verify(b"a\0b", b"$6$aa$"), Err(CryptError::BadInput));
        assert_eq!(
            verify(&[b'a'; MAX_PASSPHRASE + 1], DUMMY_SETTING.as_bytes()),
            Err(CryptError::BadInput)
        );
    }

    #[test]
    fn dummy_setting_is_usable() {
        assert!(hash_with(b"x", DUMMY_SETTING.as_bytes()).is_ok());
        assert_eq!(Format::of(DUMMY_SETTING.as_bytes()), Format::Yescrypt);
    }
}

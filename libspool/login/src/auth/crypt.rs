//! Password hashes through the system's libcrypt (Debian: libxcrypt), which knows every format
//! Debian has ever written to /etc/shadow: yescrypt `$y$`, gost-yescrypt `$gy$`, scrypt `$7$`,
//! SHA-512 `$6$`, SHA-256 `$5$`, bcrypt `$2b$`/`$2a$`/`$2y$`, MD5 `$1$` and traditional DES.
//!
//! We link libcrypt rather than reimplement the algorithms: it is the code `login` and PAM use,
//! so a hash `passwd` wrote is verified exactly as at the console. Building needs the static
//! link library (Debian package `libcrypt-dev`).

use super::constant_time;
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

// Linked by this crate's build script (`links = "crypt"`), the only one in the workspace.
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
    let ok = constant_time::eq(out.as_bytes(), stored);
    out.zeroize();
    Ok(ok)
}

/// What a failed attempt must cost so that it takes as long whatever the stored scheme of the
/// named user: one verification of the database's most expensive hash (its *reference*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dummy {
    /// The reference: a hash string from the database, or [`DUMMY_SETTING`] for system
    /// accounts.
    Hash(Vec<u8>),
    /// Nothing: the database holds only plaintext secrets, whose check is a comparison.
    Nothing,
}

/// The settings' salt for [`Dummy::spend_rest`]'s top-up hash (any fixed salt will do: the
/// result is discarded).
const TOP_UP_SALT: &str = "popspooltopup";

impl Dummy {
    /// Spends the whole reference cost, on `password` (nothing was verified yet: unknown user,
    /// plaintext or locked account). The result is meaningless and discarded.
    pub fn spend(&self, password: &[u8]) {
        if let Dummy::Hash(setting) = self {
            let pw = usable_passphrase(password);
            if verify(pw, setting).is_err() {
                // A reference hash libcrypt cannot use must not make the attempt cheap.
                let _ = verify(pw, DUMMY_SETTING.as_bytes());
            }
        }
    }

    /// After a failed verification against `spent` (the user's own hash), spends what the
    /// reference costs beyond it, as SHA-512 crypt rounds (linear in the count and fine-grained,
    /// so the sum comes out at the reference's estimated cost). Nothing when `spent` already
    /// costs as much, or the difference is under [`MIN_TOP_UP_ROUNDS`] rounds.
    pub fn spend_rest(&self, password: &[u8], spent: &[u8]) {
        let Dummy::Hash(reference) = self else {
            return;
        };
        let rest = estimated_cost_ns(reference).saturating_sub(estimated_cost_ns(spent));
        let rounds = rest / SHA512_ROUND_NS;
        if rounds < MIN_TOP_UP_ROUNDS {
            return;
        }
        let setting = format!(
            "$6$rounds={}${TOP_UP_SALT}$",
            rounds.min(MAX_SHA_CRYPT_ROUNDS)
        );
        let _ = verify(usable_passphrase(password), setting.as_bytes());
    }
}

fn usable_passphrase(password: &[u8]) -> &[u8] {
    if password.len() > MAX_PASSPHRASE || password.contains(&0) {
        b"x"
    } else {
        password
    }
}

/// SHA-crypt's smallest round count (libxcrypt raises smaller ones to it); a difference worth
/// fewer rounds (about 0.3 ms) is not topped up.
pub const MIN_TOP_UP_ROUNDS: u64 = 1000;
/// SHA-crypt's largest round count.
const MAX_SHA_CRYPT_ROUNDS: u64 = 999_999_999;
/// SHA-crypt's round count when the hash names none.
const SHA_CRYPT_DEFAULT_ROUNDS: u64 = 5000;

/// Nanoseconds per unit of work of each format, measured with libxcrypt 4.4 on a 2-core
/// AMD EPYC (CPU time, best of 5): SHA-512 crypt 13.5 ms at 50,000 rounds; SHA-256 crypt
/// 17.9 ms at 50,000; bcrypt 13.2 ms at cost 8; yescrypt 20.1 ms at N=4096, r=32 (`j9T`),
/// 4.9 ms at N=1024, r=32, 1.2 ms at N=1024, r=8; gost-yescrypt within 5% of yescrypt; scrypt
/// 60 ms at N=8192, r=32, p=1; MD5 crypt 0.11 ms; DES 5 us. Only the ratios matter: they
/// decide which hash of a database is the most expensive and how many rounds top a cheaper
/// verification up to it.
const SHA512_ROUND_NS: u64 = 270;
const SHA256_ROUND_NS: u64 = 360;
const BCRYPT_UNIT_NS: u64 = 52_000;
const YESCRYPT_UNIT_NS: u64 = 150;
const SCRYPT_UNIT_NS: u64 = 230;
const MD5_CRYPT_NS: u64 = 106_000;
const DES_NS: u64 = 5_000;

/// crypt(3)'s base-64 alphabet, where a digit's value is its index.
const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn itoa64_value(c: u8) -> Option<u64> {
    ITOA64.iter().position(|&d| d == c).map(|v| v as u64)
}

/// The cost of verifying a password against `hash`, estimated from its format and cost
/// parameters in nanoseconds of the machine above (0 for a format we never verify). Parameters
/// that cannot be read count as the format's libxcrypt default.
pub fn estimated_cost_ns(hash: &[u8]) -> u64 {
    let after = |prefix: &[u8]| hash.get(prefix.len()..).unwrap_or(b"");
    match Format::of(hash) {
        Format::Sha512 => SHA512_ROUND_NS.saturating_mul(sha_crypt_rounds(after(b"$6$"))),
        Format::Sha256 => SHA256_ROUND_NS.saturating_mul(sha_crypt_rounds(after(b"$5$"))),
        Format::Bcrypt => {
            // `$2b$NN$`: 2^NN rounds of the key schedule.
            let cost = std::str::from_utf8(after(b"$2b$").get(..2).unwrap_or(b""))
                .ok()
                .and_then(|c| c.parse::<u32>().ok())
                .filter(|c| (4..=31).contains(c))
                .unwrap_or(5);
            BCRYPT_UNIT_NS.saturating_mul(1u64 << cost)
        }
        Format::Yescrypt | Format::GostYescrypt => {
            // `$y$` FLAVOR N_LOG2 R ...: one base-64 digit each for N_log2 - 1 and r - 1 while
            // they are below 48 (libxcrypt's encode64_uint32); work and memory go as N * r.
            let p = if hash.starts_with(b"$gy$") {
                after(b"$gy$")
            } else {
                after(b"$y$")
            };
            let digit = |i: usize| p.get(i).and_then(|&c| itoa64_value(c)).filter(|&v| v < 48);
            let n_log2 = digit(1).map_or(12, |v| v + 1).min(40);
            let r = digit(2).map_or(32, |v| v + 1);
            YESCRYPT_UNIT_NS.saturating_mul(r << n_log2)
        }
        Format::Scrypt => {
            // `$7$` N_LOG2 R(5 digits) P(5 digits), little-endian base 64.
            let p = after(b"$7$");
            let n_log2 = p
                .first()
                .and_then(|&c| itoa64_value(c))
                .unwrap_or(14)
                .min(40);
            let word = |from: usize| {
                p.get(from..from + 5).and_then(|d| {
                    d.iter()
                        .rev()
                        .try_fold(0u64, |acc, &c| Some(acc * 64 + itoa64_value(c)?))
                })
            };
            let r = word(1).filter(|&r| r > 0).unwrap_or(32);
            let par = word(6).filter(|&p| p > 0).unwrap_or(1);
            SCRYPT_UNIT_NS
                .saturating_mul(r)
                .saturating_mul(par)
                .saturating_mul(1u64 << n_log2)
        }
        Format::Md5 => MD5_CRYPT_NS,
        Format::Des => DES_NS,
        Format::Other => 0,
    }
}

/// The round count of a SHA-crypt hash (the text after `$5$`/`$6$`), clamped as libxcrypt does.
fn sha_crypt_rounds(rest: &[u8]) -> u64 {
    let Some(spec) = rest.strip_prefix(b"rounds=") else {
        return SHA_CRYPT_DEFAULT_ROUNDS;
    };
    let digits = spec.iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&spec[..digits])
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .map_or(SHA_CRYPT_DEFAULT_ROUNDS, |r| {
            r.clamp(MIN_TOP_UP_ROUNDS, MAX_SHA_CRYPT_ROUNDS)
        })
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
    fn cost_estimates_follow_format_and_parameters() {
        let cases: &[(&[u8], u64)] = &[
            (b"$6$salt$h", 270 * 5000),
            (b"$6$rounds=200000$salt$h", 270 * 200_000),
            (b"$6$rounds=10$salt$h", 270 * 1000),
            (b"$6$rounds=x$salt$h", 270 * 5000),
            (b"$5$rounds=50000$salt$h", 360 * 50_000),
            (b"$2b$10$abc", 52_000 << 10),
            (b"$2y$99$abc", 52_000 << 5),
            (b"$y$j9T$salt$h", 150 * 32 * 4096),
            (b"$y$j75$salt$h", 150 * 8 * 1024),
            (b"$gy$jBT$salt$h", 150 * 32 * 16384),
            (b"$y$", 150 * 32 * 4096),
            (b"$7$BU..../....salt$h", 230 * 32 * 8192),
            (b"$1$salt$h", 106_000),
            (b"abJnggxhB/yWI", 5_000),
            (b"$3$$abc", 0),
        ];
        for (h, want) in cases {
            assert_eq!(
                estimated_cost_ns(h),
                *want,
                "{:?}",
                String::from_utf8_lossy(h)
            );
        }
        // Settings as libxcrypt writes them decode to what it was asked for.
        let y = gensalt("$y$", 7).unwrap();
        assert_eq!(estimated_cost_ns(y.as_bytes()), 150 * 32 * 16384, "{y}");
        let s = gensalt("$7$", 0).unwrap();
        assert!(estimated_cost_ns(s.as_bytes()) >= 230 * 8192, "{s}");
    }

    #[test]
    fn dummy_setting_is_usable() {
        assert!(hash_with(b"x", DUMMY_SETTING.as_bytes()).is_ok());
        assert_eq!(Format::of(DUMMY_SETTING.as_bytes()), Format::Yescrypt);
    }
}

//! The key process and its client. The key process reads certificates and private keys (as
//! the user pop-tls started as, usually root) and answers at most one certificate request and
//! one signature request over a socketpair; the network process never holds a private key: it
//! gives rustls a [`SigningKey`] whose signer forwards the message to sign.
//!
//! Rule: the key process trusts nothing it reads from the channel. Server names are checked
//! against [`valid_server_name`] before they become part of a path.
//!
//! PEM is parsed with `rustls-pki-types`' `PemObject` (the maintained successor of
//! rustls-pemfile, already a dependency of rustls): PKCS#8, SEC1 and PKCS#1 keys; ECDSA P-256
//! and P-384, Ed25519 and RSA keys through ring.

#![forbid(unsafe_code)]

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest PEM file read (a key and a long chain fit in a few kilobytes).
pub const MAX_PEM_FILE: u64 = 1 << 20;
/// Largest request the key process reads: a server name or a message to sign (a TLS 1.2
/// ServerKeyExchange or TLS 1.3 CertificateVerify input is a few hundred bytes).
pub const MAX_REQUEST: usize = 16 << 10;
/// Largest answer the network process reads (a certificate chain).
pub const MAX_ANSWER: usize = 2 << 20;
/// Signatures per connection: a full handshake needs one, a resumed one none. A compromised
/// network process cannot use the key process as a signing oracle beyond this.
pub const MAX_SIGNATURES: u32 = 1;
/// The file `--cert-dir` falls back to without SNI or without a file for the name.
pub const DEFAULT_NAME: &str = "default";

/// Where certificates come from.
#[derive(Debug, Clone)]
pub struct KeySource {
    /// `--cert` and `--key`.
    pub files: Option<(PathBuf, PathBuf)>,
    /// `--cert-dir`: `DIR/<name>.pem` holds the key and the chain (tlswrapper's layout).
    pub dir: Option<PathBuf>,
}

/// A server name fit to become a file name: DNS labels of `a-z 0-9 -`, none empty or longer
/// than 63, at most 253 bytes in all. So no `/`, no leading dot, no `..`.
pub fn valid_server_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn read_pem(p: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
    let mut buf = Vec::new();
    f.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if buf.len() as u64 > MAX_PEM_FILE {
        return Err(format!(
            "{} is larger than {MAX_PEM_FILE} bytes",
            p.display()
        ));
    }
    Ok(buf)
}

/// Loads and checks one chain and key: at least one certificate, a supported key, and the key
/// matching the first certificate.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let cert_pem = read_pem(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: bad PEM certificate: {e:?}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key_pem = if key == cert {
        cert_pem
    } else {
        read_pem(key)?
    };
    let der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{}: no usable private key: {e:?}", key.display()))?;
    let signing = any_supported_type(&der)
        .map_err(|e| format!("{}: unsupported private key: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "{} does not match the certificate in {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(ck)
}

/// Chooses the files for a requested server name (empty: no SNI). The name is never used in
/// a path unless [`valid_server_name`] accepts it.
fn choose(src: &KeySource, name: &str) -> Result<(PathBuf, PathBuf), String> {
    if let Some(dir) = &src.dir {
        // A name that could not be a file name is the client's doing, not a configuration
        // error: it gets the default, like a client without SNI.
        if valid_server_name(name) {
            let p = dir.join(format!("{name}.pem"));
            if p.exists() {
                return Ok((p.clone(), p));
            }
        }
        if src.files.is_none() {
            let p = dir.join(format!("{DEFAULT_NAME}.pem"));
            return Ok((p.clone(), p));
        }
    }
    src.files
        .clone()
        .ok_or_else(|| "no certificate configured".to_string())
}

/// Schemes tried against a loaded key, in preference order (ring's own order for RSA).
const SCHEMES: [SignatureScheme; 10] = [
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ECDSA_NISTP521_SHA512,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

/// The context string a TLS 1.3 server signs (RFC 8446 4.4.3), after 64 spaces.
const TLS13_SERVER_CONTEXT: &[u8] = b"TLS 1.3, server CertificateVerify\0";

/// True when `msg` has the shape of what a TLS server signs: a TLS 1.3 CertificateVerify
/// input (64 spaces, the server context, a transcript hash of 32, 48 or 64 bytes) or a TLS
/// 1.2 ServerKeyExchange input (two 32-byte randoms, then named-curve ECDHE parameters whose
/// point length matches). The key process signs nothing else, so even a compromised network
/// process cannot have it sign a certificate, a token or any other document.
pub fn plausible_handshake_signature_input(msg: &[u8]) -> bool {
    let prefix = 64 + TLS13_SERVER_CONTEXT.len();
    if msg.len() > prefix
        && msg[..64].iter().all(|&b| b == b' ')
        && &msg[64..prefix] == TLS13_SERVER_CONTEXT
    {
        return matches!(msg.len() - prefix, 32 | 48 | 64);
    }
    msg.len() > 68 && msg[64] == 3 && msg.len() == 68 + msg[67] as usize
}

const REQ_LOAD: u8 = b'L';
const REQ_SIGN: u8 = b'S';
const ANS_CERT: u8 = b'C';
const ANS_SIG: u8 = b'G';
const ANS_ERR: u8 = b'E';

fn send_frame(s: &mut UnixStream, tag: u8, body: &[u8]) -> std::io::Result<()> {
    let mut h = [0u8; 5];
    h[0] = tag;
    h[1..].copy_from_slice(&(body.len() as u32).to_be_bytes());
    s.write_all(&h)?;
    s.write_all(body)
}

fn recv_frame(s: &mut UnixStream, max: usize) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 5];
    s.read_exact(&mut h)?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame too long",
        ));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((h[0], body))
}

fn encode_cert(ck: &CertifiedKey) -> Vec<u8> {
    let schemes: Vec<SignatureScheme> = SCHEMES
        .iter()
        .copied()
        .filter(|s| ck.key.choose_scheme(&[*s]).is_some())
        .collect();
    let mut out = vec![u8::from(ck.key.algorithm())];
    out.extend_from_slice(&(schemes.len() as u16).to_be_bytes());
    for s in schemes {
        out.extend_from_slice(&u16::from(s).to_be_bytes());
    }
    out.extend_from_slice(&(ck.cert.len() as u16).to_be_bytes());
    for c in &ck.cert {
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// The key process's loop: one certificate request, at most [`MAX_SIGNATURES`] signatures,
/// then it returns. Errors are answered with a line the network process logs; returns the
/// first configuration error (for the key process's own exit status).
pub fn serve(mut chan: UnixStream, src: &KeySource) -> Result<(), String> {
    let mut loaded: Option<CertifiedKey> = None;
    let mut signed = 0u32;
    loop {
        let Ok((tag, body)) = recv_frame(&mut chan, MAX_REQUEST) else {
            return Ok(());
        };
        match tag {
            REQ_LOAD if loaded.is_none() => {
                let name = String::from_utf8_lossy(&body).to_ascii_lowercase();
                match choose(src, &name).and_then(|(c, k)| load(&c, &k)) {
                    Ok(ck) => {
                        let _ = send_frame(&mut chan, ANS_CERT, &encode_cert(&ck));
                        loaded = Some(ck);
                    }
                    Err(e) => {
                        let _ = send_frame(&mut chan, ANS_ERR, e.as_bytes());
                        return Err(e);
                    }
                }
            }
            REQ_SIGN if signed < MAX_SIGNATURES && body.len() >= 2 => {
                signed += 1;
                let scheme = SignatureScheme::from(u16::from_be_bytes([body[0], body[1]]));
                let msg = &body[2..];
                let sig = loaded
                    .as_ref()
                    .filter(|_| plausible_handshake_signature_input(msg))
                    .ok_or_else(|| "refused to sign something other than a handshake".to_string())
                    .and_then(|ck| {
                        ck.key
                            .choose_scheme(&[scheme])
                            .ok_or_else(|| "signature scheme not offered".to_string())
                    })
                    .and_then(|s| s.sign(msg).map_err(|e| e.to_string()));
                let _ = match sig {
                    Ok(s) => send_frame(&mut chan, ANS_SIG, &s),
                    Err(e) => send_frame(&mut chan, ANS_ERR, e.as_bytes()),
                };
            }
            _ => {
                let _ = send_frame(&mut chan, ANS_ERR, b"request refused");
                return Ok(());
            }
        }
    }
}

/// The network process's end of the channel, shared by the resolver and the signer. The
/// first failure is kept for the log.
#[derive(Debug)]
pub struct KeyClient {
    chan: Mutex<Option<UnixStream>>,
    error: Mutex<Option<String>>,
    /// The key process, reaped by [`KeyClient::close`].
    pid: Mutex<Option<nix::unistd::Pid>>,
}

impl KeyClient {
    pub fn new(chan: UnixStream, pid: nix::unistd::Pid) -> Arc<KeyClient> {
        Arc::new(KeyClient {
            chan: Mutex::new(Some(chan)),
            error: Mutex::new(None),
            pid: Mutex::new(Some(pid)),
        })
    }

    /// The first error from the key process, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// Ends the conversation: the key process sees end of file, exits, and is reaped here (it
    /// is gone before the program runs). The descriptor stays open (shut down), so its number
    /// cannot be reused in the sandbox. Idempotent.
    pub fn close(&self) {
        if let Ok(mut c) = self.chan.lock() {
            if let Some(s) = c.take() {
                let _ = s.shutdown(std::net::Shutdown::Both);
                // Dropping the stream would free the number: it stays busy until exit.
                std::mem::forget(s);
            }
        }
        if let Some(pid) = self.pid.lock().ok().and_then(|mut p| p.take()) {
            while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(pid, None) {}
        }
    }

    fn fail(&self, e: String) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
    }

    fn call(&self, tag: u8, body: &[u8], want: u8) -> Option<Vec<u8>> {
        let mut guard = self.chan.lock().ok()?;
        let Some(chan) = guard.as_mut() else {
            self.fail("key process already closed".into());
            return None;
        };
        let answer = send_frame(chan, tag, body).and_then(|_| recv_frame(chan, MAX_ANSWER));
        match answer {
            Ok((t, b)) if t == want => Some(b),
            Ok((ANS_ERR, b)) => {
                self.fail(String::from_utf8_lossy(&b).into_owned());
                None
            }
            Ok(_) => {
                self.fail("key process: unexpected answer".into());
                None
            }
            Err(e) => {
                self.fail(format!("key process: {e}"));
                None
            }
        }
    }
}

fn decode_cert(b: &[u8], client: &Arc<KeyClient>) -> Option<CertifiedKey> {
    let mut r = b;
    let mut take = |n: usize| -> Option<&[u8]> {
        if r.len() < n {
            return None;
        }
        let (h, t) = r.split_at(n);
        r = t;
        Some(h)
    };
    let alg = SignatureAlgorithm::from(take(1)?[0]);
    let ns = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let mut schemes = Vec::with_capacity(ns.min(SCHEMES.len()));
    for _ in 0..ns {
        schemes.push(SignatureScheme::from(u16::from_be_bytes(
            take(2)?.try_into().ok()?,
        )));
    }
    let nc = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let mut chain = Vec::new();
    for _ in 0..nc {
        let l = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
        chain.push(CertificateDer::from(take(l)?.to_vec()));
    }
    if chain.is_empty() {
        return None;
    }
    let key = RemoteKey {
        client: client.clone(),
        alg,
        schemes,
    };
    Some(CertifiedKey::new(chain, Arc::new(key)))
}

/// A private key that lives in the key process.
#[derive(Debug)]
struct RemoteKey {
    client: Arc<KeyClient>,
    alg: SignatureAlgorithm,
    schemes: Vec<SignatureScheme>,
}

impl SigningKey for RemoteKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = *self.schemes.iter().find(|s| offered.contains(s))?;
        Some(Box::new(RemoteSigner {
            client: self.client.clone(),
            scheme,
        }))
    }
    fn algorithm(&self) -> SignatureAlgorithm {
        self.alg
    }
}

#[derive(Debug)]
struct RemoteSigner {
    client: Arc<KeyClient>,
    scheme: SignatureScheme,
}

impl Signer for RemoteSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let mut body = Vec::with_capacity(message.len() + 2);
        body.extend_from_slice(&u16::from(self.scheme).to_be_bytes());
        body.extend_from_slice(message);
        self.client
            .call(REQ_SIGN, &body, ANS_SIG)
            .ok_or_else(|| rustls::Error::General("key process refused to sign".into()))
    }
    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Asks the key process for the certificate that fits the client's server name.
#[derive(Debug)]
pub struct Resolver {
    pub client: Arc<KeyClient>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().unwrap_or("");
        let b = self.client.call(REQ_LOAD, name.as_bytes(), ANS_CERT)?;
        match decode_cert(&b, &self.client) {
            Some(ck) => Some(Arc::new(ck)),
            None => {
                self.client
                    .fail("key process: malformed certificate answer".into());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for ok in ["pop.example.org", "a", "x-1.y", "localhost"] {
            assert!(valid_server_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc/shadow",
            "a..b",
            ".a",
            "a.",
            "a/b",
            "A.example",
            "a b",
            "a\0b",
        ] {
            assert!(!valid_server_name(bad), "{bad:?}");
        }
        assert!(!valid_server_name(&"a".repeat(64)));
        assert!(!valid_server_name(&["a"; 128].join(".")));
    }

    #[test]
    fn signs_only_handshake_shapes() {
        let mut tls13 = vec![b' '; 64];
        tls13.extend_from_slice(TLS13_SERVER_CONTEXT);
        for h in [32, 48, 64] {
            let mut m = tls13.clone();
            m.resize(m.len() + h, 7);
            assert!(plausible_handshake_signature_input(&m), "{h}");
        }
        let mut short = tls13.clone();
        short.extend([7; 20]);
        assert!(!plausible_handshake_signature_input(&short));
        // TLS 1.2: randoms, named curve x25519 (29), a 32-byte point.
        let mut tls12 = vec![9u8; 64];
        tls12.extend([3, 0, 29, 32]);
        tls12.extend([5; 32]);
        assert!(plausible_handshake_signature_input(&tls12));
        tls12.push(0);
        assert!(!plausible_handshake_signature_input(&tls12));
        assert!(!plausible_handshake_signature_input(
            b"tbsCertificate or a JWT"
        ));
        assert!(!plausible_handshake_signature_input(&[]));
    }

    #[test]
    fn choose_files() {
        let src = KeySource {
            files: None,
            dir: Some("/d".into()),
        };
        assert_eq!(choose(&src, "").unwrap().0, PathBuf::from("/d/default.pem"));
        assert_eq!(
            choose(&src, "nonexistent.example").unwrap().0,
            PathBuf::from("/d/default.pem")
        );
        assert_eq!(
            choose(&src, "../x").unwrap().0,
            PathBuf::from("/d/default.pem")
        );
        let both = KeySource {
            files: Some(("/c".into(), "/k".into())),
            dir: Some("/d".into()),
        };
        assert_eq!(choose(&both, "").unwrap(), ("/c".into(), "/k".into()));
    }
}

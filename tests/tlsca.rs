//! A throwaway certificate authority for the TLS tests, made with the openssl command: a CA
//! and the leaf certificates it signs (ECDSA P-256/P-384, RSA, Ed25519), so that every client
//! verifies the server against it instead of turning verification off.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway CA and the certificates it signs.
pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(args: &[&str], cwd: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn genkey(alg: &str, out: &str, cwd: &Path) {
    let mut a = vec!["genpkey", "-out", out];
    match alg {
        "p256" => a.extend(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        "p384" => a.extend(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]),
        "rsa" => a.extend(["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        "ed25519" => a.extend(["-algorithm", "ED25519"]),
        _ => panic!("{alg}"),
    }
    openssl(&a, cwd);
}

impl Pki {
    /// None (with a SKIPPED line) without the openssl command.
    pub fn new() -> Option<Pki> {
        if crate::which("openssl").is_none() {
            crate::skip("tls", "openssl not installed (Debian package openssl)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        genkey("p256", "ca.key", dir.path());
        openssl(
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=popspool test CA",
                "-days",
                "2",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "ca.pem",
            ],
            dir.path(),
        );
        Some(Pki { dir })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `name` (SAN DNS:name and IP 127.0.0.1) with a key of `alg`:
    /// returns (chain, key) paths.
    pub fn leaf(&self, name: &str, alg: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let key = format!("{name}.{alg}.key");
        let crt = format!("{name}.{alg}.crt");
        genkey(alg, &key, d);
        openssl(
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-subj",
                &format!("/CN={name}"),
                "-out",
                "leaf.csr",
            ],
            d,
        );
        fs::write(
            d.join("leaf.ext"),
            format!(
                "subjectAltName=DNS:{name},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n\
                 subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
            ),
        )
        .unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
                "-out",
                &crt,
            ],
            d,
        );
        (d.join(crt), d.join(key))
    }

    /// `DIR/<file>.pem` holding the key and the chain, as --cert-dir wants them.
    pub fn combined(&self, dir: &Path, file: &str, name: &str, alg: &str) {
        let (c, k) = self.leaf(name, alg);
        let mut pem = fs::read(k).unwrap();
        pem.extend(fs::read(c).unwrap());
        fs::write(dir.join(format!("{file}.pem")), pem).unwrap();
    }
}

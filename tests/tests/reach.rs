//! Each program's reach stays honest, as qmail's does: the login side (pop-popup,
//! pop-checkpassword; libspool's `popup` and `auth`) never names mailbox code, and the
//! transaction side (pop-serve; `session`, `mailbox`, `canon`, `mbox`, `maildir`, `lock`,
//! `journal`) never names password code. A plain source check, run with the tests.

use std::fs;
use std::path::{Path, PathBuf};

const MAILBOX_SIDE: &[&str] = &[
    "mailbox", "canon", "mbox", "maildir", "lock", "journal", "session",
];
const LOGIN_SIDE: &[&str] = &["auth", "popup"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every file of `paths` (files or directories) that names one of `forbidden` as a libspool
/// module, through `crate::`, `super::` chains or `libspool::`.
fn violations(paths: &[PathBuf], forbidden: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            rust_files(p, &mut files);
        } else if p.is_file() {
            files.push(p.clone());
        }
    }
    let mut bad = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        for m in forbidden {
            for prefix in ["crate::", "libspool::", "super::super::"] {
                let needle = format!("{prefix}{m}");
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    if let Some(at) = code.find(&needle) {
                        let after = code[at + needle.len()..].chars().next();
                        if after.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
                            bad.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
    }
    bad
}

#[test]
fn login_side_never_names_mailbox_code() {
    let r = root();
    let paths = vec![
        r.join("libspool/src/popup"),
        r.join("libspool/src/auth"),
        r.join("bins/pop-popup/src"),
        r.join("bins/pop-checkpassword/src"),
    ];
    let bad = violations(&paths, MAILBOX_SIDE);
    assert!(
        bad.is_empty(),
        "login side reaches mailbox code:\n{}",
        bad.join("\n")
    );
}

#[test]
fn transaction_side_never_names_password_code() {
    let r = root();
    let mut paths: Vec<PathBuf> = MAILBOX_SIDE
        .iter()
        .flat_map(|m| {
            [
                r.join(format!("libspool/src/{m}.rs")),
                r.join(format!("libspool/src/{m}")),
            ]
        })
        .collect();
    paths.push(r.join("bins/pop-serve/src"));
    paths.push(r.join("bins/pop-dotlock/src"));
    paths.push(r.join("bins/pop-deliver/src"));
    paths.push(r.join("bins/pop-spool/src"));
    let bad = violations(&paths, LOGIN_SIDE);
    assert!(
        bad.is_empty(),
        "transaction side reaches password code:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_catches_a_violation() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.rs");
    fs::write(
        &f,
        "use crate::mbox::scan;\n// crate::auth in a comment is fine\n",
    )
    .unwrap();
    assert_eq!(violations(std::slice::from_ref(&f), MAILBOX_SIDE).len(), 1);
    assert!(violations(&[f], LOGIN_SIDE).is_empty());
}

//! scripts/install puts every program in place with the owner and mode it needs and creates
//! the spool as Debian's: checked as root into a scratch DESTDIR.

use popspool_tests::{is_root, skip};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

#[test]
fn install_sets_owners_modes_and_the_spool() {
    if !is_root() {
        skip(
            "install_sets_owners_modes_and_the_spool",
            "needs root to chown and set the setgid bit",
        );
        return;
    }
    let Ok(Some(mail)) = nix::unistd::Group::from_name("mail") else {
        skip(
            "install_sets_owners_modes_and_the_spool",
            "no group mail on this system",
        );
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let out = Command::new(root.join("scripts/install"))
        .args(["--no-build", "--destdir"])
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = dest.path().join("usr/local/bin");
    for p in [
        "pop-popup",
        "pop-checkpassword",
        "pop-serve",
        "pop-deliver",
        "pop-spool",
    ] {
        let m = std::fs::metadata(bin.join(p)).unwrap_or_else(|_| panic!("{p} installed"));
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o755), "{p}");
    }
    let m = std::fs::metadata(bin.join("pop-dotlock")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (0, mail.gid.as_raw(), 0o2755)
    );
    for d in ["var/spool/mail", "var/spool/mail/c", "var/spool/mail/0"] {
        let m = std::fs::metadata(dest.path().join(d)).unwrap();
        assert!(m.is_dir());
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o7777),
            (0, mail.gid.as_raw(), 0o2775),
            "{d}"
        );
    }
    for man in [
        "pop-serve.8",
        "pop-popup.8",
        "pop-checkpassword.8",
        "pop-dotlock.8",
        "pop-deliver.8",
        "pop-spool.8",
    ] {
        assert!(
            dest.path()
                .join("usr/local/share/man/man8")
                .join(man)
                .is_file(),
            "{man}"
        );
    }
}

//! scripts/install puts every program in place with the owner and mode it needs and creates
//! the spool as Debian's, pop-tls's user and its root-only certificate and ticket-key
//! directory, and the systemd units: checked as root into a scratch DESTDIR, twice (a second run changes nothing).

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
    let install = || {
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
    };
    install();
    let tickets = dest.path().join("etc/popspool/tls/ticket-keys");
    let first_keys = std::fs::read(&tickets).expect("ticket-key file made");
    // Idempotent: the user is kept, the ticket keys are not rotated by a reinstall.
    install();
    assert_eq!(std::fs::read(&tickets).unwrap(), first_keys);
    assert_eq!(first_keys.len(), 48, "one ticket key record");
    let m = std::fs::symlink_metadata(&tickets).unwrap();
    assert!(m.is_file());
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o600));
    for d in ["etc/popspool", "etc/popspool/tls", "etc/popspool/tls/certs"] {
        let m = std::fs::symlink_metadata(dest.path().join(d)).unwrap();
        assert!(m.is_dir(), "{d}");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o700), "{d}");
    }
    let user = nix::unistd::User::from_name("_poptls")
        .unwrap()
        .expect("user _poptls made");
    assert_ne!(user.uid.as_raw(), 0);
    assert_ne!(user.gid.as_raw(), 0);
    let group = nix::unistd::Group::from_gid(user.gid).unwrap().unwrap();
    assert_eq!(group.name, "_poptls", "its own group");
    assert!(
        user.shell.to_string_lossy().ends_with("/nologin"),
        "{:?}",
        user.shell
    );
    assert!(!user.dir.exists(), "no home: {:?}", user.dir);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert_eq!(
        passwd.lines().filter(|l| l.starts_with("_poptls:")).count(),
        1,
        "made once"
    );
    let bin = dest.path().join("usr/local/bin");
    for p in [
        "pop-popup",
        "pop-checkpassword",
        "pop-serve",
        "pop-deliver",
        "pop-spool",
        "pop-tls",
        "pop-route",
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
    // The units, with their commands under the prefix, the boot-time recovery among them.
    let units = dest.path().join("usr/local/lib/systemd/system");
    for u in [
        "pop3.socket",
        "pop3@.service",
        "pop3s.socket",
        "pop3s@.service",
        "pop3-starttls.socket",
        "pop3-starttls@.service",
        "pop-tls-rotate.service",
        "pop-tls-rotate.timer",
        "pop-spool-recover.service",
    ] {
        let p = units.join(u);
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|_| panic!("{u} installed"));
        assert!(m.is_file(), "{u}");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o644), "{u}");
        assert_eq!(
            std::fs::read(&p).unwrap(),
            std::fs::read(root.join("scripts/systemd").join(u)).unwrap(),
            "{u}: the default prefix leaves the unit as shipped"
        );
    }
    let recover = std::fs::read_to_string(units.join("pop-spool-recover.service")).unwrap();
    assert!(
        recover.contains("ExecStart=/usr/local/bin/pop-spool --spool-dir /var/spool/mail recover")
    );
    let leftovers: Vec<_> = std::fs::read_dir(&units)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for man in [
        "pop-serve.8",
        "pop-popup.8",
        "pop-checkpassword.8",
        "pop-dotlock.8",
        "pop-deliver.8",
        "pop-spool.8",
        "pop-tls.8",
        "pop-route.8",
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

//! The two states' command tables live in crates that cannot see each other (the login crate
//! and the store): pop-popup's CAPA must still list everything pop-serve's TRANSACTION state
//! offers (RFC 2449 §5), since many clients ask only once, before logging in.

use spool_login::popup::{self, PopupConfig};
use spool_store::session::{self, SessionConfig};
use spool_wire::pop3::policy::Expire;

#[test]
fn popup_advertises_every_transaction_capability() {
    for (expire, login_delay) in [(None, None), (Some(Expire::Days(30)), Some(900))] {
        let before = popup::capa_listing(&PopupConfig {
            expire,
            login_delay,
            ..PopupConfig::default()
        });
        let after = session::capa_listing(&SessionConfig {
            expire,
            login_delay,
            ..SessionConfig::default()
        });
        let after = String::from_utf8(after).unwrap();
        for line in after.split("\r\n").filter(|l| !l.is_empty() && *l != ".") {
            assert!(
                before.split("\r\n").any(|l| l == line),
                "{line} missing from pop-popup's CAPA: {before:?}"
            );
        }
    }
}

//! Command tables and the CAPA answers generated from them (RFC 2449). Each protocol state
//! (AUTHORIZATION in pop-popup, TRANSACTION in pop-serve's session) keeps one table: a
//! function from every [`Verb`] to what the state does with it, with no catch-all arm, so a
//! new verb does not compile until each state has decided. The state's CAPA answer is made
//! from its table by [`listing`]; the capability names are written once, here.

#![forbid(unsafe_code)]

use super::command::Verb;
use super::policy::Policy;

pub const USER: &str = "USER";
pub const SASL_PLAIN: &str = "SASL PLAIN";
pub const TOP: &str = "TOP";
pub const UIDL: &str = "UIDL";
/// RFC 2449 §6.4: `-ERR` responses may carry `[IN-USE]`, `[SYS/TEMP]`, ... codes.
pub const RESP_CODES: &str = "RESP-CODES";
/// RFC 3206: a failed login answers `[AUTH]` when the credentials were the problem.
pub const AUTH_RESP_CODE: &str = "AUTH-RESP-CODE";
/// RFC 2449 §6.6: commands may be sent without waiting for each answer.
pub const PIPELINING: &str = "PIPELINING";
/// RFC 2449 §6.9, last in every listing.
pub const IMPLEMENTATION: &str = "IMPLEMENTATION popspool";

/// One row of a state's command table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// The state serves the verb, and CAPA lists the capability it brings.
    Serves,
    /// The state refuses the verb (it belongs to the other state); `advertised`: CAPA still
    /// lists its capability, as RFC 2449 §5 allows, so a client that asks once, before
    /// logging in, sees what the TRANSACTION state will offer.
    Refuses { advertised: bool },
}

impl Row {
    /// The verb is served in this state.
    pub fn serves(self) -> bool {
        self == Row::Serves
    }
}

/// The capability a verb brings, when it has one of its own.
pub fn capability(verb: Verb) -> Option<&'static str> {
    match verb {
        Verb::User => Some(USER),
        Verb::Auth => Some(SASL_PLAIN),
        Verb::Top => Some(TOP),
        Verb::Uidl => Some(UIDL),
        Verb::Pass
        | Verb::Apop
        | Verb::Stls
        | Verb::Capa
        | Verb::Quit
        | Verb::Noop
        | Verb::Stat
        | Verb::List
        | Verb::Retr
        | Verb::Dele
        | Verb::Rset
        | Verb::Last => None,
    }
}

/// A state's CAPA listing, with the terminating `.` line: the capabilities of the verbs it
/// serves, the state's own capabilities (`state`), those of the verbs it refuses but
/// advertises, the configured policies, and IMPLEMENTATION; one CRLF-ended line each.
pub fn listing(table: fn(Verb) -> Row, state: &[&'static str], policy: &Policy) -> String {
    let caps = |want: fn(Row) -> bool| {
        Verb::ALL
            .into_iter()
            .filter(move |&v| want(table(v)))
            .filter_map(capability)
    };
    let served = caps(Row::serves);
    let advertised = caps(|r| r == Row::Refuses { advertised: true });
    let mut v = String::new();
    for line in served.chain(state.iter().copied()).chain(advertised) {
        v.push_str(line);
        v.push_str("\r\n");
    }
    v.push_str(&policy.capa_lines());
    v.push_str(IMPLEMENTATION);
    v.push_str("\r\n.\r\n");
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop3::policy::Expire;

    fn only_top(v: Verb) -> Row {
        match v {
            Verb::Top => Row::Serves,
            Verb::Uidl => Row::Refuses { advertised: true },
            _ => Row::Refuses { advertised: false },
        }
    }

    #[test]
    fn listing_order_and_terminator() {
        let policy = Policy {
            expire: Some(Expire::Days(3)),
            login_delay: None,
        };
        assert_eq!(
            listing(only_top, &[PIPELINING], &policy),
            "TOP\r\nPIPELINING\r\nUIDL\r\nEXPIRE 3\r\nIMPLEMENTATION popspool\r\n.\r\n"
        );
    }
}

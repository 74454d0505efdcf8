//! The RFC 2449 server policies a site advertises (EXPIRE, LOGIN-DELAY): parsed and written
//! once, for the AUTHORIZATION state (pop-popup) and the TRANSACTION state (pop-serve) alike.

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

/// How long the server keeps messages (RFC 2449 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expire {
    Never,
    Days(u32),
}

impl FromStr for Expire {
    type Err = String;
    /// A number of days or `never` (any case), as the programs' `--expire` takes it.
    fn from_str(s: &str) -> Result<Expire, String> {
        if s.eq_ignore_ascii_case("never") {
            return Ok(Expire::Never);
        }
        s.parse::<u32>()
            .map(Expire::Days)
            .map_err(|_| "expected a number of days or `never`".into())
    }
}

impl fmt::Display for Expire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expire::Never => write!(f, "NEVER"),
            Expire::Days(d) => write!(f, "{d}"),
        }
    }
}

/// The advertised policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    pub expire: Option<Expire>,
    /// Seconds between logins (RFC 2449 §6.5).
    pub login_delay: Option<u64>,
}

impl Policy {
    /// The CAPA lines for the configured policies, each ending in CRLF.
    pub fn capa_lines(&self) -> String {
        let mut v = String::new();
        if let Some(e) = self.expire {
            v.push_str(&format!("EXPIRE {e}\r\n"));
        }
        if let Some(d) = self.login_delay {
            v.push_str(&format!("LOGIN-DELAY {d}\r\n"));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_write() {
        assert_eq!("never".parse(), Ok(Expire::Never));
        assert_eq!("NEVER".parse(), Ok(Expire::Never));
        assert_eq!("30".parse(), Ok(Expire::Days(30)));
        assert!("-1".parse::<Expire>().is_err());
        assert!("soon".parse::<Expire>().is_err());
        let p = Policy {
            expire: Some(Expire::Days(0)),
            login_delay: Some(900),
        };
        assert_eq!(p.capa_lines(), "EXPIRE 0\r\nLOGIN-DELAY 900\r\n");
        assert_eq!(Policy::default().capa_lines(), "");
    }
}

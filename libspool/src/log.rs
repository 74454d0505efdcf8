//! Logging to syslog facility mail, or to stderr when told to. OWNER: lead.

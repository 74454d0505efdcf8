//! Stable UIDLs for mbox messages. OWNER: mbox helper.

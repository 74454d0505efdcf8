//! Spool administration: paths, creation, migration from a flat spool, checks, stats, expiry:
//! what `pop-spool` does. OWNER: spool-admin helper.

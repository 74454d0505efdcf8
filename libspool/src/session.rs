//! The POP3 TRANSACTION and UPDATE states over a `Mailbox`. OWNER: lead.

//! The POP3 AUTHORIZATION state and the checkpassword hand-off: everything `pop-popup` does.
//! OWNER: popup helper. Never touches mailboxes or password databases.

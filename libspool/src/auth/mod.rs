//! Verifying credentials handed over the checkpassword interface and becoming the user:
//! everything `pop-checkpassword` does. OWNER: checkpassword helper. Never touches mailboxes.

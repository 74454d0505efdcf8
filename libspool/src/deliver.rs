//! Local delivery into an mbox or Maildir under the MTAs' lock protocol: what `pop-deliver`
//! does. OWNER: deliver helper.

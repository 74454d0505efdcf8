//! Streaming one mbox message in canonical form (CRLF, unquoted, spool headers hidden), in
//! bulk and with bounded memory. OWNER: mbox helper.

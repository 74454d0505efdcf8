//! The TLS front of popspool (`pop-tls`): implicit TLS (port 995) and UCSPI-TLS delayed TLS
//! (STLS), with rustls in an unprivileged, sandboxed network process and the private key in a
//! separate key process. See doc/pop-tls.8 and [`front`] for the process layout.

pub mod env;
pub mod front;
pub mod keys;
pub mod log;
pub mod sandbox;
pub mod session;
pub mod tickets;

pub use front::{run, Config, Mode};

//! The POP3 wire protocol, shared by every program: the one command-line parser (`line` splits
//! and bounds lines, `command` turns a line into a typed command) and the response writer
//! (`response`: status lines with RFC 2449/3206 codes, multi-line byte-stuffing).

#![forbid(unsafe_code)]

pub mod capa;
pub mod command;
pub mod line;
pub mod policy;
pub mod response;

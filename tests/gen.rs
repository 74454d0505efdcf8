//! A deterministic mailbox generator. Each message is built from logical parts (header lines,
//! body lines), from which both the stored mbox bytes and the canonical bytes a POP3 client
//! must receive are derived independently of the scanner under test.

/// A small deterministic PRNG (xorshift64*), so every run builds the same mailboxes.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// How a message is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Lf,
    Crlf,
}

/// One logical message.
#[derive(Clone, Debug)]
pub struct Message {
    pub from_line: Vec<u8>,
    pub headers: Vec<Vec<u8>>,
    /// Header lines the spool adds and pop-serve hides (Status, X-UID, ...).
    pub spool_headers: Vec<Vec<u8>>,
    /// None: no header/body separator at all (a headers-only message).
    pub body: Option<Vec<Vec<u8>>>,
    pub ending: Ending,
    /// The stored message lacks its final newline (only valid for the last message).
    pub no_final_newline: bool,
    /// Write the blank separator line after the message.
    pub blank_after: bool,
}

impl Message {
    pub fn simple(i: usize) -> Message {
        Message {
            from_line: format!(
                "From sender{i}@example.org Mon Jan  1 00:00:{:02} 2024",
                i % 60
            )
            .into_bytes(),
            headers: vec![
                format!("Message-ID: <{i}@gen.example>").into_bytes(),
                format!("Subject: message {i}").into_bytes(),
            ],
            spool_headers: vec![],
            body: Some(vec![format!("body of message {i}").into_bytes()]),
            ending: Ending::Lf,
            no_final_newline: false,
            blank_after: true,
        }
    }

    /// The message as an mbox stores it (mboxrd quoting), separator line included.
    pub fn stored(&self) -> Vec<u8> {
        let nl: &[u8] = match self.ending {
            Ending::Lf => b"\n",
            Ending::Crlf => b"\r\n",
        };
        let mut lines: Vec<Vec<u8>> = Vec::new();
        // Spool headers are interleaved after the first real header, as MUAs leave them.
        let mut hs = self.headers.clone();
        let at = hs.len().min(1);
        for (k, s) in self.spool_headers.iter().enumerate() {
            hs.insert(at + k, s.clone());
        }
        lines.extend(hs);
        if let Some(body) = &self.body {
            lines.push(Vec::new());
            for l in body {
                lines.push(quote_mboxrd(l));
            }
        }
        let mut out = self.from_line.clone();
        out.extend_from_slice(b"\n");
        let n = lines.len();
        for (k, l) in lines.iter().enumerate() {
            out.extend_from_slice(l);
            if !(k + 1 == n && self.no_final_newline) {
                out.extend_from_slice(nl);
            }
        }
        if self.blank_after && !self.no_final_newline {
            out.extend_from_slice(nl);
        }
        out
    }

    /// What RETR must send before byte-stuffing: CRLF lines, spool headers hidden, unquoted.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for h in &self.headers {
            out.extend_from_slice(h);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(body) = &self.body {
            out.extend_from_slice(b"\r\n");
            for l in body {
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    /// What `TOP n` must send before byte-stuffing.
    pub fn canonical_top(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for h in &self.headers {
            out.extend_from_slice(h);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(body) = &self.body {
            out.extend_from_slice(b"\r\n");
            for l in body.iter().take(n) {
                out.extend_from_slice(l);
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }
}

/// mboxrd: every line matching `>*From ` gets one more `>`.
pub fn quote_mboxrd(line: &[u8]) -> Vec<u8> {
    let stripped = line.iter().position(|&b| b != b'>').unwrap_or(line.len());
    if line[stripped..].starts_with(b"From ") {
        let mut v = b">".to_vec();
        v.extend_from_slice(line);
        v
    } else {
        line.to_vec()
    }
}

/// A body line that is valid inside a message (no LF; a CR only as content in the middle).
fn body_line(rng: &mut Rng, i: usize) -> Vec<u8> {
    match rng.below(20) {
        0 => b".".to_vec(),
        1 => b"..double dot".to_vec(),
        2 => b".leading dot".to_vec(),
        3 => b"From the desk of the editor".to_vec(),
        4 => b">From quoted once already".to_vec(),
        5 => b">>From twice".to_vec(),
        6 => Vec::new(),
        7 => "caf\u{e9} UTF-8 \u{2603}".as_bytes().to_vec(),
        8 => vec![b'8', b'b', 0xe9, 0xff, 0x80, b'x'],
        9 => vec![b'n', b'u', 0, b'l'],
        10 => b"lone\rcarriage return".to_vec(),
        11 => vec![b'w'; 900 + rng.below(3000) as usize],
        _ => format!("line {i} {}", rng.next_u64()).into_bytes(),
    }
}

/// A varied mailbox of `n` messages, deterministic for `seed`. The last message may lack its
/// final newline; the first may be preceded by nothing else (leading garbage is a separate test).
pub fn varied(seed: u64, n: usize) -> Vec<Message> {
    varied_with(seed, n, 3900)
}

/// Like [`varied`], with lines no longer than RFC 5322's 998 octets: what real clients get
/// (Python's poplib refuses lines over 2048).
pub fn varied_rfc5322(seed: u64, n: usize) -> Vec<Message> {
    varied_with(seed, n, 998)
}

fn varied_with(seed: u64, n: usize, max_line: usize) -> Vec<Message> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let mut m = Message::simple(i);
            if rng.chance(30) {
                m.headers.push(
                    "Subject: =?UTF-8?Q?caf=C3=A9?= 8bit caf\u{e9}"
                        .as_bytes()
                        .to_vec(),
                );
            }
            if rng.chance(20) {
                m.headers.push(b"X-Folded: first".to_vec());
                m.headers.push(b"\tcontinued".to_vec());
            }
            if rng.chance(30) {
                m.spool_headers.push(b"Status: RO".to_vec());
                m.spool_headers.push(b"X-UID: 17".to_vec());
            }
            if rng.chance(10) {
                m.spool_headers.push(b"X-Keywords: $Label1".to_vec());
                m.spool_headers.push(b"  $Label2".to_vec());
                m.spool_headers.push(b"Content-Length: 12345".to_vec());
            }
            let lines = rng.below(30) as usize;
            m.body = match rng.below(12) {
                0 => Some(Vec::new()),
                1 => None,
                _ => Some(
                    (0..lines)
                        .map(|_| {
                            let mut l = body_line(&mut rng, i);
                            l.truncate(max_line);
                            l
                        })
                        .collect(),
                ),
            };
            if rng.chance(20) {
                m.ending = Ending::Crlf;
            }
            m.blank_after = !rng.chance(15);
            if i + 1 == n && rng.chance(50) {
                m.no_final_newline = true;
                // A stored message without its final newline whose last line is empty cannot be
                // told apart from the separator; the generator avoids that ambiguity.
                if let Some(b) = &mut m.body {
                    if b.last().is_some_and(|l| l.is_empty()) || b.is_empty() {
                        b.push(b"last line".to_vec());
                    }
                } else {
                    m.headers.push(b"X-Last: 1".to_vec());
                }
            }
            // A body whose last line is empty, followed by a missing blank separator, is
            // indistinguishable from a normal separator; keep the oracle honest.
            if !m.blank_after {
                if let Some(b) = &mut m.body {
                    if b.last().is_none_or(|l| l.is_empty()) {
                        b.push(b"end".to_vec());
                    }
                } else if m.headers.last().is_some_and(|l| l.is_empty()) {
                    m.headers.push(b"X-End: 1".to_vec());
                }
            }
            // A headers-only message is only unambiguous when its last header is not empty.
            if m.body.is_none() && m.headers.is_empty() {
                m.headers.push(b"X-Only: 1".to_vec());
            }
            m
        })
        .collect()
}

/// Concatenates stored messages into an mbox file's bytes.
pub fn mbox_bytes(msgs: &[Message]) -> Vec<u8> {
    let mut v = Vec::new();
    for m in msgs {
        v.extend_from_slice(&m.stored());
    }
    v
}

/// Un-stuffs a multi-line POP3 body (without its terminator line).
pub fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut at_start = true;
    let mut i = 0;
    while i < body.len() {
        if at_start && body[i] == b'.' {
            i += 1;
        }
        if i < body.len() {
            out.push(body[i]);
            at_start = body[i] == b'\n';
            i += 1;
        }
    }
    out
}

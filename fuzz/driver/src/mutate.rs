//! The mutator: a small PRNG and the usual byte-level mutations, stacked.

/// xorshift64*: fast, seedable, reproducible across runs (`--seed`); no statistical
/// quality is needed here.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform enough in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Bytes that sit on the edges of the formats' checks.
const BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\n\r :.=,>{}%~$!*\t+/";

/// Tokens of the formats: separators, field syntax, magics.
const TOKENS: &[&[u8]] = &[
    b"From ",
    b"\nFrom ",
    b">From ",
    b"\n\n",
    b"\r\n",
    b"\r\n.\r\n",
    b"Status: RO\n",
    b"X-UID: 1\n",
    b"Content-Length: 5\n",
    b":2,",
    b":2,S",
    b",S=",
    b",W=",
    b"{PLAIN}",
    b"{SHA512-CRYPT}",
    b"$6$",
    b"::",
    b"==",
    b"\0\0",
    b"POPSPIDX",
    b"POPSPJNL",
    b"POPSPRND",
    b"POPSPEND",
    b"POPSPMD\x02",
    b"USER ",
    b"APOP ",
    b"AUTH PLAIN ",
    b"4294967296",
    b"99999",
];

/// Little-endian integers worth trying in binary headers.
const WORDS: &[u64] = &[
    0,
    1,
    2,
    16,
    32,
    48,
    64,
    96,
    110,
    160,
    192,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
    u64::MAX / 2,
    1 << 62,
];

fn range(rng: &mut Rng, len: usize, max: usize) -> (usize, usize) {
    let at = rng.below(len as u64 + 1) as usize;
    let n = 1 + rng.below(max as u64) as usize;
    (at, n.min(len - at))
}

/// Applies 1 to 16 stacked mutations to `input`, keeping it within `max_len`.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>], max_len: usize) {
    let rounds = 1 << rng.below(5);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(11) {
            0 if len > 0 => {
                let bit = rng.below(len as u64 * 8) as usize;
                input[bit / 8] ^= 1 << (bit % 8);
            }
            1 if len > 0 => {
                let at = rng.below(len as u64) as usize;
                input[at] = rng.next() as u8;
            }
            2 if len > 0 => {
                let at = rng.below(len as u64) as usize;
                input[at] = BYTES[rng.below(BYTES.len() as u64) as usize];
            }
            3 => {
                let at = rng.below(len as u64 + 1) as usize;
                let n = 1 + rng.below(8) as usize;
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let (at, n) = range(rng, len, 32);
                input.drain(at..at + n);
            }
            5 if len > 0 => {
                // Copy a piece of the input elsewhere in it.
                let (from, n) = range(rng, len, 64);
                let piece = input[from..from + n].to_vec();
                let at = rng.below(len as u64 + 1) as usize;
                input.splice(at..at, piece);
            }
            6 => {
                // Splice: a piece of another entry inserted, or the tail replaced by one.
                let other = &pool[rng.below(pool.len() as u64) as usize];
                if other.is_empty() {
                    continue;
                }
                let (from, n) = range(rng, other.len(), 256);
                let at = rng.below(len as u64 + 1) as usize;
                if rng.below(2) == 0 {
                    input.truncate(at);
                }
                input.splice(at..at, other[from..from + n].iter().copied());
            }
            7 => {
                let tok = TOKENS[rng.below(TOKENS.len() as u64) as usize];
                let at = rng.below(len as u64 + 1) as usize;
                if rng.below(2) == 0 && at + tok.len() <= len {
                    input[at..at + tok.len()].copy_from_slice(tok);
                } else {
                    input.splice(at..at, tok.iter().copied());
                }
            }
            8 if len > 0 => {
                let w = WORDS[rng.below(WORDS.len() as u64) as usize];
                let size = [1usize, 2, 4, 8][rng.below(4) as usize];
                let at = rng.below(len as u64) as usize;
                let bytes = w.to_le_bytes();
                let n = size.min(len - at);
                input[at..at + n].copy_from_slice(&bytes[..n]);
            }
            9 if len > 0 => {
                let at = rng.below(len as u64) as usize;
                input[at] = if rng.below(2) == 0 {
                    input[at].wrapping_add(1)
                } else {
                    input[at].wrapping_sub(1)
                };
            }
            10 if len > 0 => {
                let n = rng.below(len as u64 + 1) as usize;
                input.truncate(n);
            }
            _ => {}
        }
        if input.len() > max_len {
            input.truncate(max_len);
        }
    }
}

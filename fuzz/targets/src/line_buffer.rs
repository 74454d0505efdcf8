//! Client bytes fed in arbitrary chunks: `LineBuffer` never panics, never holds more than the
//! limit once drained, never yields a line longer than the limit or containing an LF, and the
//! chunking never changes what comes out.

use spool_wire::pop3::line::{Line, LineBuffer};

pub fn run(data: &[u8]) {
    // First byte: the limit (small limits reach the edge cases faster; 255 is the real one).
    // Second byte: chunk size seed. The rest: the client's bytes.
    let [limit, seed, input @ ..] = data else {
        return;
    };
    let max = if *limit == 0xff {
        255
    } else {
        usize::from(*limit % 32)
    };
    let chunk = usize::from(*seed).max(1);

    let mut whole = LineBuffer::new(max);
    whole.push(input);
    let mut expected = Vec::new();
    while let Some(line) = whole.next_line() {
        expected.push(line);
    }
    assert!(whole.buffered() < max.max(1));

    let mut lb = LineBuffer::new(max);
    let mut got = Vec::new();
    for piece in input.chunks(chunk) {
        lb.push(piece);
        while let Some(line) = lb.next_line() {
            if let Line::Complete(bytes) = &line {
                assert!(bytes.len() < max);
                assert!(!bytes.contains(&b'\n'));
            }
            got.push(line);
        }
        assert!(lb.buffered() < max.max(1));
    }
    assert_eq!(got, expected);
    assert_eq!(lb.has_partial(), whole.has_partial());
}

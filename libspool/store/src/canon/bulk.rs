//! The primitives of the bulk body paths: the LFs of 64 bytes at a time (one SSE2 compare
//! per 16 bytes on x86_64), and appends into a `Vec`'s spare capacity.

/// Bytes [`Spare::copy`] may write past the end of a short line (the source line and the
/// destination both have that much room): a fixed-size copy is a few vector moves where an
/// exact one is a `memcpy` call, and most lines are shorter than this.
pub(super) const OVERCOPY: usize = 64;

/// Appends into a `Vec`'s spare capacity: bounds-checked, but without the per-append
/// capacity and length bookkeeping of `push`/`extend_from_slice`. `spare[..len]` is
/// always fully written; bytes after it may hold over-copy garbage, never exposed.
pub(super) struct Spare<'a> {
    pub(super) spare: &'a mut [std::mem::MaybeUninit<u8>],
    pub(super) len: usize,
}

impl Spare<'_> {
    #[inline]
    pub(super) fn put(&mut self, b: u8) {
        self.spare[self.len].write(b);
        self.len += 1;
    }

    /// Appends `data[from..to]`.
    #[inline]
    pub(super) fn copy(&mut self, data: &[u8], from: usize, to: usize) {
        let k = to - from;
        match data[from..].first_chunk::<OVERCOPY>() {
            Some(src) if k <= OVERCOPY => {
                let dst = &mut self.spare[self.len..self.len + OVERCOPY];
                for (d, &s) in dst.iter_mut().zip(src) {
                    d.write(s);
                }
            }
            _ => {
                let dst = &mut self.spare[self.len..self.len + k];
                for (d, &s) in dst.iter_mut().zip(&data[from..to]) {
                    d.write(s);
                }
            }
        }
        self.len += k;
    }
}

/// The positions of the LFs in `data` from `from` on, found 64 bytes at a time.
pub(super) struct Lfs<'a> {
    data: &'a [u8],
    /// Start of the block `mask` describes.
    block: usize,
    /// Bit i set: `data[block + i]` is an LF not yet returned.
    mask: u64,
}

impl<'a> Lfs<'a> {
    pub(super) fn new(data: &'a [u8], from: usize) -> Lfs<'a> {
        Lfs {
            data,
            block: from,
            mask: lf_mask(&data[from.min(data.len())..]),
        }
    }
}

impl Iterator for Lfs<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.block += 64;
            if self.block >= self.data.len() {
                return None;
            }
            self.mask = lf_mask(&self.data[self.block..]);
        }
        let i = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.block + i)
    }
}

/// Bit i set when `b[i]` is an LF, for the first 64 bytes of `b`.
#[inline]
fn lf_mask(b: &[u8]) -> u64 {
    if let Some(block) = b.first_chunk::<64>() {
        lf_mask64(block)
    } else {
        b.iter()
            .enumerate()
            .fold(0, |m, (i, &c)| m | (u64::from(c == b'\n') << i))
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn lf_mask64(b: &[u8; 64]) -> u64 {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let p = b.as_ptr().cast::<__m128i>();
    let mut m = 0u64;
    for k in 0..4 {
        // SAFETY: SSE2 is part of the x86_64 baseline (always enabled), and the unaligned
        // load reads bytes 16k..16k+16 of the 64-byte array.
        let bits = unsafe {
            let v = _mm_loadu_si128(p.add(k));
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8)))
        };
        m |= u64::from(bits as u16) << (16 * k);
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn lf_mask64(b: &[u8; 64]) -> u64 {
    b.iter()
        .enumerate()
        .fold(0, |m, (i, &c)| m | (u64::from(c == b'\n') << i))
}

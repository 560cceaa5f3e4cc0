//! The first pass of the SIMD scanner (x86-64 with AVX2 and PCLMULQDQ, and
//! AVX-512BW when the CPU has it): simdjson's stage 1. Each 64-byte block is
//! classified with a few vector compares into bitmasks: backslashes, quotes, structural characters,
//! whitespace. Escaped characters follow from runs of backslashes (odd runs
//! escape the next byte), and the carry-less product of the quote mask with
//! all ones (a prefix XOR) gives the bytes inside strings. The positions the
//! second pass needs are then read in order off the set bits of one block
//! mask at a time:
//!
//! - `{ } [ ] : ,` outside strings;
//! - every quote that opens or closes a string;
//! - the first byte of every other run of non-whitespace outside strings
//!   (numbers and literals, and any garbage, which the second pass refuses);
//! - every backslash inside a string that starts an escape, so that escapes
//!   are checked without reading the rest of the string.
//!
//! Unescaped control characters inside strings and an unterminated last
//! string are refused here. Everything else (grammar, escapes, numbers) is the
//! second pass's job, which reads the bytes at these positions.

use std::arch::x86_64::*;

/// The vector instructions a block is classified with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Width {
    /// AVX2 (two 32-byte halves) and PCLMULQDQ.
    Avx2,
    /// AVX-512BW (one vector, compares straight into masks) and PCLMULQDQ.
    Avx512,
}

/// The widest classification this CPU runs; `None` without AVX2 and
/// PCLMULQDQ (no SIMD scanner). std caches the answers.
pub(super) fn widest() -> Option<Width> {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("pclmulqdq")) {
        return None;
    }
    Some(if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
        Width::Avx512
    } else {
        Width::Avx2
    })
}

/// Carries between blocks.
#[derive(Default)]
struct Carry {
    /// The next block's first byte is escaped (an odd backslash run ended the block).
    escaped: u64,
    /// All ones when the block ended inside a string.
    in_string: u64,
    /// The block ended with a non-quote, non-structural, non-whitespace byte
    /// outside strings, so the next block's first byte does not start a run.
    scalar: u64,
}

const ODD_BITS: u64 = 0xAAAA_AAAA_AAAA_AAAA;

/// simdjson's escape scanner: for the backslashes of a block, which bytes are
/// escaped and which backslashes start an escape.
#[inline(always)]
fn escapes(backslash: u64, carry: &mut Carry) -> (u64, u64) {
    if backslash == 0 {
        let escaped = carry.escaped;
        carry.escaped = 0;
        return (escaped, 0);
    }
    // A backslash escaped by the previous block starts nothing.
    let potential = backslash & !carry.escaped;
    // Subtracting each run's start from a mask of odd bits leaves, per run,
    // a marker on the byte after it exactly when the run is odd-length.
    let maybe_escaped = potential << 1;
    let code = ((maybe_escaped | ODD_BITS).wrapping_sub(potential)) ^ ODD_BITS;
    let escaped = code ^ (backslash | carry.escaped);
    let escape = code & backslash;
    carry.escaped = escape >> 63;
    (escaped, escape)
}

/// The positions described in the module documentation, in order, computed
/// one block ahead of the reader (no array of positions is written).
pub(super) struct Tokens<'a, 'b> {
    /// The current block's positions not yet read, and where it starts.
    /// They are kept apart from `blocks`, whose address the classification
    /// takes, so that the reader holds them in registers: stored to memory,
    /// every position waited for the previous one's store.
    bits: u64,
    base: usize,
    blocks: &'b mut Blocks<'a>,
}

/// The block classification's state, between blocks.
pub(super) struct Blocks<'a> {
    bytes: &'a [u8],
    width: Width,
    /// Where the next block to classify starts.
    next_block: usize,
    carry: Carry,
    control_in_string: u64,
}

/// The body of [`Blocks::refill`] with one classification.
macro_rules! refill {
    ($blocks:ident, $classify:ident) => {{
        let at = $blocks.next_block;
        let (bits, control) = match $blocks.bytes.get(at..at + 64) {
            Some(block) => $classify(block.try_into().expect("64 bytes"), &mut $blocks.carry),
            None => {
                // Spaces are neutral: whitespace outside strings, an ordinary byte inside.
                let mut last = [b' '; 64];
                last[..$blocks.bytes.len() - at].copy_from_slice(&$blocks.bytes[at..]);
                $classify(&last, &mut $blocks.carry)
            }
        };
        $blocks.control_in_string |= control;
        $blocks.next_block = at + 64;
        bits
    }};
}

impl<'a> Blocks<'a> {
    /// `None` when this CPU cannot classify with `width` (see [`widest`])
    /// or the input is too long for u32 spans.
    pub(super) fn new(bytes: &'a [u8], width: Width) -> Option<Blocks<'a>> {
        (widest().is_some_and(|w| w >= width) && bytes.len() < 1 << 31).then_some(Blocks {
            bytes,
            width,
            next_block: 0,
            carry: Carry::default(),
            control_in_string: 0,
        })
    }

    /// The reader of the positions of these blocks.
    pub(super) fn tokens<'b>(&'b mut self) -> Tokens<'a, 'b> {
        Tokens { bits: 0, base: 0, blocks: self }
    }

    /// Classifies the next block; returns its positions.
    #[inline(always)]
    fn refill(&mut self) -> u64 {
        // SAFETY: `Blocks::new` checked that the CPU runs `width`.
        unsafe {
            match self.width {
                Width::Avx2 => self.refill_avx2(),
                Width::Avx512 => self.refill_avx512(),
            }
        }
    }

    #[target_feature(enable = "avx2,pclmulqdq")]
    fn refill_avx2(&mut self) -> u64 {
        refill!(self, classify)
    }

    #[target_feature(enable = "avx512f,avx512bw,pclmulqdq")]
    fn refill_avx512(&mut self) -> u64 {
        refill!(self, classify512)
    }
}

impl Tokens<'_, '_> {
    /// The next position; `bytes.len()` after the last one.
    #[inline(always)]
    pub(super) fn next(&mut self) -> usize {
        while self.bits == 0 {
            let at = self.blocks.next_block;
            if at >= self.blocks.bytes.len() {
                return self.blocks.bytes.len();
            }
            self.bits = self.blocks.refill();
            self.base = at;
        }
        let at = self.base + self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        at
    }

    /// After [`Tokens::next`] returned the end: whether no string held an
    /// unescaped control character and the last string was terminated.
    pub(super) fn strings_ok(&self) -> bool {
        self.blocks.control_in_string == 0 && self.blocks.carry.in_string == 0
    }
}

/// The positions of one block as a bitmask, and the control characters in
/// its strings.
#[target_feature(enable = "avx2,pclmulqdq")]
#[inline]
fn classify(block: &[u8; 64], carry: &mut Carry) -> (u64, u64) {
    // SAFETY: the two loads read the 64 bytes of `block`.
    let (lo, hi) =
        unsafe { (_mm256_loadu_si256(block.as_ptr().cast()), _mm256_loadu_si256(block.as_ptr().add(32).cast())) };
    let backslash = eq(lo, hi, b'\\');
    let quote_bytes = eq(lo, hi, b'"');
    // simdjson's lookup: a byte's low nibble picks the one whitespace or
    // structural character it could be; bytes >= 0x80 look up zero.
    let ws_table = _mm256_setr_epi8(
        32, 100, 100, 100, 17, 100, 113, 2, 100, 9, 10, 112, 100, 13, 100, 100, 32, 100, 100, 100, 17, 100, 113, 2,
        100, 9, 10, 112, 100, 13, 100, 100,
    );
    let op_table = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 58, 123, 44, 125, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 58, 123, 44, 125, 0, 0,
    );
    let ws = mask(
        _mm256_cmpeq_epi8(lo, _mm256_shuffle_epi8(ws_table, lo)),
        _mm256_cmpeq_epi8(hi, _mm256_shuffle_epi8(ws_table, hi)),
    );
    // `[` and `]` become `{` and `}` with 0x20 set. 0x0C and 0x1A also land
    // here (as `,` and `:`): outside strings they become positions the
    // second pass refuses, inside strings they are control characters.
    let curly = _mm256_set1_epi8(0x20);
    let op = mask(
        _mm256_cmpeq_epi8(_mm256_or_si256(lo, curly), _mm256_shuffle_epi8(op_table, lo)),
        _mm256_cmpeq_epi8(_mm256_or_si256(hi, curly), _mm256_shuffle_epi8(op_table, hi)),
    );
    let top = _mm256_set1_epi8(0x1f);
    let control =
        mask(_mm256_cmpeq_epi8(_mm256_max_epu8(lo, top), top), _mm256_cmpeq_epi8(_mm256_max_epu8(hi, top), top));
    positions(Bytes { backslash, quote: quote_bytes, ws, op, control }, carry)
}

/// One block's bytes by class, as bitmasks.
struct Bytes {
    backslash: u64,
    quote: u64,
    /// Whitespace.
    ws: u64,
    /// `{ } [ ] : ,` (and 0x0C, 0x1A: see [`classify`]).
    op: u64,
    /// Control characters.
    control: u64,
}

/// The positions of one block and the control characters in its strings,
/// from its bytes by class.
#[target_feature(enable = "pclmulqdq")]
#[inline]
fn positions(bytes: Bytes, carry: &mut Carry) -> (u64, u64) {
    let Bytes { backslash, quote: quote_bytes, ws, op, control } = bytes;
    let (escaped, escape) = escapes(backslash, carry);
    let quote = quote_bytes & !escaped;
    // Prefix XOR: bit i is the XOR of quote bits 0..=i, so opening quotes
    // and string bodies are set and closing quotes are not.
    let prefix = _mm_cvtsi128_si64(_mm_clmulepi64_si128(_mm_set_epi64x(0, quote as i64), _mm_set1_epi8(-1), 0)) as u64;
    let in_string = prefix ^ carry.in_string;
    carry.in_string = ((in_string as i64) >> 63) as u64;

    let nonquote_scalar = !(op | ws | quote);
    let follows_scalar = nonquote_scalar << 1 | carry.scalar;
    carry.scalar = nonquote_scalar >> 63;
    let scalar_start = nonquote_scalar & !follows_scalar;

    let bits = quote | (op | scalar_start) & !in_string | escape & in_string;
    (bits, control & in_string)
}

/// [`classify`] with AVX-512BW: one 64-byte vector, compares into mask registers.
#[target_feature(enable = "avx512f,avx512bw,pclmulqdq")]
#[inline]
fn classify512(block: &[u8; 64], carry: &mut Carry) -> (u64, u64) {
    // SAFETY: the load reads the 64 bytes of `block`; the tables are 16 bytes.
    let (v, ws_table, op_table) = unsafe {
        (
            _mm512_loadu_si512(block.as_ptr().cast()),
            _mm512_broadcast_i32x4(_mm_loadu_si128(WS_TABLE.as_ptr().cast())),
            _mm512_broadcast_i32x4(_mm_loadu_si128(OP_TABLE.as_ptr().cast())),
        )
    };
    let backslash = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'\\' as i8));
    let quote = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'"' as i8));
    let ws = _mm512_cmpeq_epi8_mask(v, _mm512_shuffle_epi8(ws_table, v));
    let op = _mm512_cmpeq_epi8_mask(_mm512_or_si512(v, _mm512_set1_epi8(0x20)), _mm512_shuffle_epi8(op_table, v));
    let control = _mm512_cmple_epu8_mask(v, _mm512_set1_epi8(0x1f));
    positions(Bytes { backslash, quote, ws, op, control }, carry)
}

const WS_TABLE: [u8; 16] = [32, 100, 100, 100, 17, 100, 113, 2, 100, 9, 10, 112, 100, 13, 100, 100];
const OP_TABLE: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 58, 123, 44, 125, 0, 0];

/// The bytes of the block equal to `c`.
#[target_feature(enable = "avx2")]
#[inline]
fn eq(lo: __m256i, hi: __m256i, c: u8) -> u64 {
    let c = _mm256_set1_epi8(c as i8);
    mask(_mm256_cmpeq_epi8(lo, c), _mm256_cmpeq_epi8(hi, c))
}

#[target_feature(enable = "avx2")]
#[inline]
fn mask(lo: __m256i, hi: __m256i) -> u64 {
    u64::from(_mm256_movemask_epi8(lo) as u32) | u64::from(_mm256_movemask_epi8(hi) as u32) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Escapes computed byte by byte: a backslash not itself escaped escapes
    /// the next byte.
    fn naive(backslashes: &[bool]) -> (Vec<bool>, Vec<bool>) {
        let mut escaped = vec![false; backslashes.len() + 1];
        let mut escape = vec![false; backslashes.len()];
        for i in 0..backslashes.len() {
            if backslashes[i] && !escaped[i] {
                escape[i] = true;
                escaped[i + 1] = true;
            }
        }
        escaped.pop();
        (escaped, escape)
    }

    /// The AVX-512 classification against the AVX2 one, block by block with
    /// carries, on blocks dense in the bytes that matter (every byte value
    /// appears, the specials far more often than the rest).
    #[test]
    fn both_widths_classify_blocks_alike() {
        if widest() != Some(Width::Avx512) {
            eprintln!("AVX-512BW not on this CPU: one width only");
            return;
        }
        let specials = b"\"\\{}[]:, \t\n\r\x0c\x1a\x01\x1f\x7f\x80\xff0-tfnu/";
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let (mut narrow, mut wide) = (Carry::default(), Carry::default());
            for _ in 0..4 {
                let block: [u8; 64] = std::array::from_fn(|_| {
                    let r = next();
                    if r % 4 == 0 {
                        r as u8 >> 1 ^ (r >> 20) as u8
                    } else {
                        specials[(r >> 8) as usize % specials.len()]
                    }
                });
                // SAFETY: `widest` says this CPU has both widths' features.
                let (a, b) = unsafe { (classify(&block, &mut narrow), classify512(&block, &mut wide)) };
                assert_eq!(a, b, "{block:?}");
                assert_eq!(
                    (narrow.escaped, narrow.in_string, narrow.scalar),
                    (wide.escaped, wide.in_string, wide.scalar),
                    "{block:?}"
                );
            }
        }
    }

    #[test]
    fn escapes_match_a_byte_by_byte_scan_across_blocks() {
        // A xorshift sequence of blocks, dense in backslash runs of every
        // length, including runs that cross block edges.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            let blocks: Vec<u64> = (0..4)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state | state >> 1 | state.rotate_left(3)
                })
                .collect();
            let bits: Vec<bool> = blocks.iter().flat_map(|b| (0..64).map(move |i| b >> i & 1 == 1)).collect();
            let (escaped, escape) = naive(&bits);
            let mut carry = Carry::default();
            for (k, &b) in blocks.iter().enumerate() {
                let (got_escaped, got_escape) = escapes(b, &mut carry);
                for i in 0..64 {
                    assert_eq!(got_escaped >> i & 1 == 1, escaped[k * 64 + i], "escaped bit {}", k * 64 + i);
                    assert_eq!(got_escape >> i & 1 == 1, escape[k * 64 + i], "escape bit {}", k * 64 + i);
                }
            }
        }
    }
}

//! Geometry of the bitmaps that front each LPM trie: the /24 index, the summary and the coarse
//! bitmap.
//!
//! Each family's address space is cut into blocks by the top [`V4_BLOCK_BITS`] (or
//! [`V6_BLOCK_BITS`]) bits of the address. Each block has two bits: *full* (every address in
//! the block is allowed, so no trie lookup is needed) and *partial* (some longer prefix lies inside
//! the block: ask the trie). A source whose block has neither bit is not allowed, which is the
//! common case for attack traffic and costs one array load. A word holds [`BLOCKS_PER_WORD`]
//! blocks: full bits in the low half, partial bits in the high half, so a block's two bits are
//! always written together.

/// IPv4 blocks are /24s.
pub const V4_BLOCK_BITS: u32 = 24;
/// IPv6 blocks are /24s of the 128-bit space (the RIR allocation level).
pub const V6_BLOCK_BITS: u32 = 24;
/// Blocks per `u64` word.
pub const BLOCKS_PER_WORD: u32 = 32;
/// log2 of [`BLOCKS_PER_WORD`].
pub const BLOCKS_PER_WORD_SHIFT: u32 = 5;
/// Words in the IPv4 index.
pub const V4_WORDS: u32 = 1 << (V4_BLOCK_BITS - BLOCKS_PER_WORD_SHIFT);
/// Words in the IPv6 index.
pub const V6_WORDS: u32 = 1 << (V6_BLOCK_BITS - BLOCKS_PER_WORD_SHIFT);

/// In front of the index, per family, a summary bitmap with one bit per block of the top
/// address bits: set if any allowed prefix touches that block. It is small enough to stay
/// in the CPU's L2 cache, where the 4 MiB index does not, so a random attack source is
/// usually refused after one cache-hit load. IPv4: /23 blocks, 1 MiB.
pub const V4_SUMMARY_BITS: u32 = 23;
/// IPv6 summary blocks: 23 bits after the skipped ones (1 MiB).
pub const V6_SUMMARY_BITS: u32 = 23;
/// Words in the IPv4 summary.
pub const V4_SUMMARY_WORDS: u32 = 1 << (V4_SUMMARY_BITS - 6);
/// Words in the IPv6 summary.
pub const V6_SUMMARY_WORDS: u32 = 1 << (V6_SUMMARY_BITS - 6);

/// In front of the summary, a coarse bitmap of the same kind with /18 blocks: 32 KiB,
/// small enough to stay cached where the 1 MiB summary is not. A random source costs one
/// read of the summary, which is a cache miss more often than not; a source outside every
/// allowed /18 (with a short allowlist, nearly all of them; with 100,000 random prefixes,
/// about two in three) is refused from the coarse bitmap alone.
pub const V4_COARSE_BITS: u32 = 18;
/// IPv6 coarse blocks: 18 bits after the skipped ones (32 KiB).
pub const V6_COARSE_BITS: u32 = 18;
/// Words in the IPv4 coarse bitmap.
pub const V4_COARSE_WORDS: u32 = 1 << (V4_COARSE_BITS - 6);
/// Words in the IPv6 coarse bitmap.
pub const V6_COARSE_WORDS: u32 = 1 << (V6_COARSE_BITS - 6);

/// Behind an IPv6 block marked "partial", the narrow bitmap: a bit for every /32 that an
/// allowed prefix longer than the block touches (a /25 to /31 touches 128 to 2 of them, a
/// /32 or longer one), so that a source whose /32 has no bit is refused without walking the
/// LPM trie. With many long prefixes spread over the space, about one random source in a
/// hundred lands in a partial block, and nearly all of those in a /32 with no allowed
/// prefix.
///
/// The 2^32 /32s share [`V6_NARROW_MAP_BITS`] bits by a multiplicative hash: a /32 that
/// shares a bit with an allowed one merely asks the trie, which decides exactly. An array
/// read, where a hash map cost a helper call and a hash; and no limit on the number of
/// /32s (more only means more sources ask the trie).
pub const V6_NARROW_BITS: u32 = 32;
/// log2 of the bits in the narrow bitmap: 2^23 bits, 1 MiB. With 100,000 long prefixes
/// (at most a few hundred thousand /32s) a few percent of the bits are set.
pub const V6_NARROW_MAP_BITS: u32 = 23;
/// Words in the narrow bitmap.
pub const V6_NARROW_WORDS: u32 = 1 << (V6_NARROW_MAP_BITS - 6);

/// The narrow key of `top` (the address's top 32 bits, host order): its
/// [`V6_NARROW_BITS`]-bit block number.
#[inline(always)]
#[must_use]
pub const fn narrow_key(top: u32) -> u32 {
    top >> (32 - V6_NARROW_BITS)
}

/// Word index and bit mask of narrow key `key` in the narrow bitmap. Fibonacci hashing
/// (multiply by 2^32 / golden ratio, keep the top bits) spreads the consecutive /32s of a
/// /25 over the whole bitmap.
#[inline(always)]
#[must_use]
pub const fn narrow_locate(key: u32) -> (u32, u64) {
    let bit = key.wrapping_mul(0x9E37_79B9) >> (32 - V6_NARROW_MAP_BITS);
    (bit >> 6, 1 << (bit & 63))
}

/// Leading IPv6 address bits the summary and the coarse bitmap skip: every global unicast
/// address starts with `001` (2000::/3), so those bits would only waste seven eighths of
/// the bitmap. Any address still maps to a bit, so the summary stays a superset for every
/// prefix.
pub const V6_SUMMARY_SKIP_BITS: u32 = 3;

/// Word index and bit mask of the summary bit for `top` (the address's top 32 bits; for
/// IPv6, shifted left by [`V6_SUMMARY_SKIP_BITS`]) in a summary of `bits`-bit blocks.
#[inline(always)]
#[must_use]
pub const fn summary_locate(top: u32, bits: u32) -> (u32, u64) {
    let block = top >> (32 - bits);
    (block >> 6, 1 << (block & 63))
}

/// Word index and bit position of the block that holds `top` (the address's top 32 bits,
/// host order) for an index of `block_bits`-bit blocks.
#[inline(always)]
#[must_use]
pub const fn locate(top: u32, block_bits: u32) -> (u32, u32) {
    let block = top >> (32 - block_bits);
    (
        block >> BLOCKS_PER_WORD_SHIFT,
        block & (BLOCKS_PER_WORD - 1),
    )
}

/// The full bit of block position `bit` in a word.
#[inline(always)]
#[must_use]
pub const fn full_bit(bit: u32) -> u64 {
    1 << bit
}

/// The partial bit of block position `bit` in a word.
#[inline(always)]
#[must_use]
pub const fn partial_bit(bit: u32) -> u64 {
    1 << (bit + BLOCKS_PER_WORD)
}

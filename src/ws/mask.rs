//! Payload masking (RFC 6455 §5.3).
//!
//! Every byte of a client frame's payload is XORed with one byte of a 4-byte key:
//! `transformed[i] = original[i] ^ key[i % 4]`. Masking and unmasking are the same
//! operation. This is the one loop every received byte goes through, so it runs on
//! 64-byte blocks that the compiler turns into vector XORs, in safe code.

/// Width of the block that [`apply_mask`] XORs at a time.
const BLOCK: usize = 64;

/// XORs `buf` with `key`, as if `buf` started at a multiple of 4 in the payload.
///
/// To continue a payload that was cut at byte offset `n`, pass
/// [`rotate_key`]`(key, n)`.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    if buf.len() < 4 * BLOCK {
        // Small payloads are the common case: filling a 64-byte key block would
        // cost more than the XOR itself, so go a machine word at a time.
        return apply_mask_words(buf, key);
    }
    let mut block_key = [0u8; BLOCK];
    for (i, b) in block_key.iter_mut().enumerate() {
        *b = key[i % 4];
    }
    let mut blocks = buf.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        for (b, k) in block.iter_mut().zip(block_key.iter()) {
            *b ^= k;
        }
    }
    // The tail starts at a multiple of 64, hence of 4: the block key still lines up.
    for (b, k) in blocks.into_remainder().iter_mut().zip(block_key.iter()) {
        *b ^= k;
    }
}

fn apply_mask_words(buf: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = buf.chunks_exact_mut(8);
    for chunk in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The byte-at-a-time definition, kept as the reference for tests and benchmarks.
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The key to use for the part of a payload that starts at byte `offset`.
pub fn rotate_key(key: [u8; 4], offset: u64) -> [u8; 4] {
    let mut k = key;
    k.rotate_left((offset % 4) as usize);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_5_7_masked_hello() {
        // "Hello" masked with 37 fa 21 3d, from RFC 6455 §5.7.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn split_payload_with_rotated_key() {
        let key = [1, 2, 3, 4];
        let original: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key);
        let mut parts = original.clone();
        let (a, b) = parts.split_at_mut(333);
        apply_mask(a, key);
        apply_mask(b, rotate_key(key, 333));
        assert_eq!(whole, parts);
    }

    proptest! {
        #[test]
        fn block_and_scalar_agree(data in proptest::collection::vec(any::<u8>(), 0..600), key in any::<[u8; 4]>(), start in 0usize..8) {
            let start = start.min(data.len());
            let mut fast = data.clone();
            let mut slow = data.clone();
            // An unaligned start exercises any alignment the vector code might assume.
            apply_mask(&mut fast[start..], key);
            apply_mask_scalar(&mut slow[start..], key);
            prop_assert_eq!(&fast, &slow);
            apply_mask(&mut fast[start..], key);
            prop_assert_eq!(fast, data);
        }
    }
}

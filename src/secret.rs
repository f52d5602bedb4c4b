//! Password hashes and session tokens.
//!
//! fastIM stored `md5(plain + salt)` with at most 10 000 salts and handed out tokens from an
//! unseeded `math/rand` (FASTIM.md §1.9, items 1-2). Here passwords are hashed with Argon2id
//! and a random 16-byte salt, and tokens are 32 bytes from the operating system's random
//! source. Only a token's SHA-256 digest is stored, so a copy of the database holds no live
//! token.

use std::cell::RefCell;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Argon2 memory cost in KiB (19 MiB: the OWASP minimum for Argon2id).
pub const ARGON2_M_COST_KIB: u32 = 19_456;
/// Argon2 passes over memory.
pub const ARGON2_T_COST: u32 = 2;
/// Argon2 lanes.
pub const ARGON2_P_COST: u32 = 1;

/// Length of a password salt in bytes.
const SALT_LEN: usize = 16;
/// Random bytes in a session token.
const TOKEN_BYTES: usize = 32;

/// The hasher with our parameters (Argon2id, version 0x13).
fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_COST_KIB, ARGON2_T_COST, ARGON2_P_COST, None)
        .expect("the Argon2 parameters are constants within the allowed ranges");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Fills `buf` from the operating system's random source.
///
/// # Panics
/// If the operating system cannot provide randomness. There is no safe fallback: a weak
/// salt or a guessable token is worse than a failed request.
fn os_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source failed");
}

/// Hashes a password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
///
/// Takes tens of milliseconds by design: call it from a worker thread, never from the
/// event loop.
///
/// # Panics
/// If the operating system's random source fails (see [`new_token`]).
pub fn hash_password(plain: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    os_random(&mut salt);
    let argon = argon2();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let built = hash_into(&argon, plain.as_bytes(), &salt, &mut out)
        .then(|| {
            Some(PasswordHash {
                algorithm: Algorithm::Argon2id.ident(),
                version: Some(Version::V0x13.into()),
                params: ParamsString::try_from(argon.params()).ok()?,
                salt: Some(Salt::new(&salt).ok()?),
                hash: Some(Output::new(&out).ok()?),
            })
        })
        .flatten();
    built
        .expect("Argon2id with a 16-byte salt and default output length cannot fail")
        .to_string()
}

thread_local! {
    /// Each hashing thread's Argon2 memory (19 MiB), allocated once and reused:
    /// allocating and freeing it for every hash made the allocator keep several
    /// copies per thread (+150 MiB after a burst of logins).
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs Argon2 with this thread's reusable memory; false if it cannot.
fn hash_into(argon: &Argon2<'_>, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    MEMORY.with(|memory| {
        let Ok(mut memory) = memory.try_borrow_mut() else {
            return false;
        };
        let need = argon.params().block_count();
        let have = memory.len();
        if have < need {
            if memory.try_reserve_exact(need - have).is_err() {
                return false;
            }
            memory.resize(need, Block::default());
        }
        argon
            .hash_password_into_with_memory(password, salt, out, &mut memory[..need])
            .is_ok()
    })
}

/// Checks `plain` against a PHC string made by [`hash_password`].
///
/// The parameters are read from the string, so hashes made with older parameters still
/// verify. A malformed string verifies nothing. The comparison is constant-time.
pub fn verify_password(plain: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(version), Ok(params)) = (
        Algorithm::try_from(hash.algorithm.as_str()),
        Version::try_from(hash.version.unwrap_or(Version::V0x13.into())),
        Params::try_from(&hash),
    ) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    if !hash_into(
        &Argon2::new(algorithm, version, params),
        plain.as_bytes(),
        salt,
        out,
    ) {
        return false;
    }
    // `Output` compares in constant time.
    Output::new(out).is_ok_and(|computed| computed == *expected)
}

/// A new session token: 32 random bytes, base64url without padding (43 characters).
///
/// Give it to the client once; store only [`token_digest`] of it.
///
/// # Panics
/// If the operating system's random source fails.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    os_random(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 digest of a token: what the sessions table stores and looks up.
///
/// A plain hash is enough here (no salt, no slow hash): the token has 256 bits of entropy,
/// so it cannot be guessed from its digest.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_and_rejects_other_passwords() {
        let phc = hash_password("correct horse");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horse ", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn same_password_gets_different_salts() {
        let a = hash_password("pw");
        let b = hash_password("pw");
        assert_ne!(a, b);
        assert!(verify_password("pw", &a));
        assert!(verify_password("pw", &b));
    }

    #[test]
    fn malformed_hashes_verify_nothing() {
        for phc in ["", "x", "$argon2id$", "5f4dcc3b5aa765d61d8327deb882cf99"] {
            assert!(!verify_password("password", phc), "{phc:?}");
        }
    }

    #[test]
    fn empty_and_unicode_passwords_round_trip() {
        for pw in ["", "密码 with spaces", "\u{0}nul"] {
            assert!(verify_password(pw, &hash_password(pw)), "{pw:?}");
        }
    }

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{a}"
        );
        let decoded = URL_SAFE_NO_PAD.decode(&a).expect("base64url");
        assert_eq!(decoded.len(), 32);
    }

    #[test]
    fn digest_is_sha256_of_the_token_text() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let expected = [
            0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
            0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
            0xf2, 0x00, 0x15, 0xad,
        ];
        assert_eq!(token_digest("abc"), expected);
        let t = new_token();
        assert_eq!(token_digest(&t), token_digest(&t.clone()));
        assert_ne!(token_digest(&t), token_digest(&new_token()));
    }
}

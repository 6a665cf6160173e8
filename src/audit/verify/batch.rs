//! Batch verification of many signatures by one key — every line of a log is signed with the
//! audit key.
//!
//! The Ed25519 batch equation for signatures `(R_i, s_i)` on messages `M_i` by the key `A`, with
//! random 128-bit `z_i` and `k_i = SHA-512(R_i ‖ A ‖ M_i)`:
//!
//! `[Σ z_i·s_i] B = Σ [z_i] R_i + [Σ z_i·k_i] A`
//!
//! `ed25519_dalek::verify_batch` takes a key per signature and so multiplies `A` once per
//! signature (a multiscalar multiplication over 2n + 1 points); with one key the coefficients of
//! `A` add up first (n + 2 points), about half the work (docs/performance.md, "Verifying").
//! It accepts what `verify_batch` accepts: `s` canonical, `R` a point. A signature that only the
//! key's holder could make (a torsion component in `R`) may pass here where `verify_strict`
//! refuses it — and whoever holds the key can sign anything anyway. A batch that fails is
//! checked again line by line with `verify_strict`, which names the bad line.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use rand_core::RngCore as _;
use sha2::{Digest, Sha512};

/// The key all signatures of a batch are checked against.
#[derive(Debug, Clone, Copy)]
pub struct BatchKey {
    encoded: [u8; 32],
    point: EdwardsPoint,
}

impl BatchKey {
    pub fn new(key: &VerifyingKey) -> Self {
        Self {
            encoded: key.to_bytes(),
            point: key.to_edwards(),
        }
    }

    /// Whether every signature is valid for its message (a random linear combination of their
    /// equations holds; a forged one makes it fail but with probability 2^-128).
    pub fn verify_all<'a>(
        &self,
        signed: impl ExactSizeIterator<Item = (&'a [u8], &'a Signature)>,
    ) -> bool {
        let n = signed.len();
        let mut random = vec![0u8; 16 * n];
        rand_core::OsRng.fill_bytes(&mut random);
        let mut scalars = Vec::with_capacity(n + 2);
        let mut points = Vec::with_capacity(n + 2);
        let (mut for_b, mut for_a) = (Scalar::ZERO, Scalar::ZERO);
        for ((message, signature), z) in signed.zip(random.chunks_exact(16)) {
            let Some(s) =
                Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes()))
            else {
                return false;
            };
            let Some(r) = CompressedEdwardsY(*signature.r_bytes()).decompress() else {
                return false;
            };
            let mut hash = Sha512::new();
            hash.update(signature.r_bytes());
            hash.update(self.encoded);
            hash.update(message);
            let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
            let z = Scalar::from(u128::from_le_bytes(z.try_into().expect("16 bytes")));
            for_b += z * s;
            for_a += z * k;
            scalars.push(z);
            points.push(r);
        }
        scalars.push(-for_b);
        points.push(ED25519_BASEPOINT_POINT);
        scalars.push(for_a);
        points.push(self.point);
        EdwardsPoint::vartime_multiscalar_mul(&scalars, &points).is_identity()
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    #[test]
    fn one_bad_signature_fails_the_batch_and_good_ones_pass() {
        let key = SigningKey::from_bytes(&[9; 32]);
        let messages: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let mut signatures: Vec<Signature> = messages.iter().map(|m| key.sign(m)).collect();
        let batch = BatchKey::new(&key.verifying_key());
        let check = |signatures: &[Signature]| {
            batch.verify_all(messages.iter().map(Vec::as_slice).zip(signatures.iter()))
        };
        assert!(check(&signatures));
        assert!(batch.verify_all(std::iter::empty()));
        // Swapped between two messages, or one made by another key: refused.
        signatures.swap(3, 4);
        assert!(!check(&signatures));
        signatures.swap(3, 4);
        signatures[7] = SigningKey::from_bytes(&[8; 32]).sign(&messages[7]);
        assert!(!check(&signatures));
        // A non-canonical s (s + L): refused.
        let mut bytes = key.sign(&messages[7]).to_bytes();
        // ℓ, the group order, little-endian.
        let mut l = [0u8; 32];
        hex::decode_to_slice(
            "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010",
            &mut l,
        )
        .unwrap();
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(bytes[32 + i]) + u16::from(l[i]) + carry;
            bytes[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        signatures[7] = Signature::from_bytes(&bytes);
        assert!(!check(&signatures));
    }
}

//! The hash chain between lines: `seq` grows by one and `prev` is the previous record's chain
//! hash (format 1: the SHA-256 of its line; format 2: of its line without `sig` — see
//! `record.rs`); the first record has `seq` 1 and a `prev` of 64 zeros.

use super::record::GENESIS_PREV;

/// Where a record does not continue the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// `seq` is not the previous `seq` + 1 (or 1 at the start).
    Seq { expected: u64, found: u64 },
    /// `prev` is not the chain hash of the previous record (or zeros at the start).
    Prev { expected: String, found: String },
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Seq { expected, found } => {
                write!(f, "seq {found} where seq {expected} was expected")
            }
            Self::Prev { expected, found } => write!(
                f,
                "prev {} does not match the previous line's hash {}",
                short(found),
                short(expected)
            ),
        }
    }
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// The head of a chain: the last accepted record's `seq` and chain hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl ChainHead {
    /// Before the first record.
    pub const GENESIS: Self = Self {
        seq: 0,
        hash: [0; 32],
    };

    pub fn hash_hex(&self) -> String {
        if self.seq == 0 {
            GENESIS_PREV.to_string()
        } else {
            hex::encode(self.hash)
        }
    }

    /// Does a record with `seq` and `prev` follow this head?
    pub fn check(&self, seq: u64, prev: &str) -> Result<(), ChainProblem> {
        let expected = self.seq + 1;
        if seq != expected {
            return Err(ChainProblem::Seq {
                expected,
                found: seq,
            });
        }
        if !self.prev_matches(prev) {
            return Err(ChainProblem::Prev {
                expected: self.hash_hex(),
                found: prev.to_string(),
            });
        }
        Ok(())
    }

    /// Does `prev` name this head?
    pub fn prev_matches(&self, prev: &str) -> bool {
        let mut decoded = [0u8; 32];
        hex::decode_to_slice(prev, &mut decoded).is_ok()
            && prev.bytes().all(|b| !b.is_ascii_uppercase())
            && decoded == if self.seq == 0 { [0; 32] } else { self.hash }
    }

    /// The head after accepting a record.
    pub fn advance(seq: u64, hash: [u8; 32]) -> Self {
        Self { seq, hash }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_expects_seq_one_and_zero_prev() {
        assert!(ChainHead::GENESIS.check(1, GENESIS_PREV).is_ok());
        assert!(matches!(
            ChainHead::GENESIS.check(2, GENESIS_PREV),
            Err(ChainProblem::Seq {
                expected: 1,
                found: 2
            })
        ));
        let head = ChainHead::advance(7, [0xab; 32]);
        assert!(head.check(8, &"ab".repeat(32)).is_ok());
        assert!(head.check(8, &"AB".repeat(32)).is_err(), "hex is lowercase");
        assert!(matches!(
            head.check(8, GENESIS_PREV),
            Err(ChainProblem::Prev { .. })
        ));
    }
}

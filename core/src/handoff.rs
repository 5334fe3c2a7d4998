//! What the Citus workers hold of the request's token, as the coordinator knows it, and the
//! one rule for when it must be handed on again.
//!
//! After a rolled-back subtransaction the workers' value is not known (a `SET LOCAL` handed
//! on inside it is undone on the workers; one handed on before it stays, or is replayed by
//! Citus), so the next statement hands the current value on whatever it is, the empty one
//! (no token) included.

/// The coordinator's knowledge of the workers' `outseta_auth.token` in this transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Handed {
    /// Nothing handed on in this transaction: the workers have no token.
    #[default]
    Nothing,
    /// This value was handed on last.
    Value(Vec<u8>),
    /// A subtransaction that may have handed something on was rolled back.
    Unknown,
}

impl Handed {
    /// Whether `current` (the value the accessors would use here; empty: none) must be
    /// handed on before the next statement.
    pub fn must_hand_on(&self, current: &[u8]) -> bool {
        match self {
            Handed::Nothing => !current.is_empty(),
            Handed::Value(v) => v.as_slice() != current,
            Handed::Unknown => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_on_changes_only() {
        assert!(!Handed::Nothing.must_hand_on(b""));
        assert!(Handed::Nothing.must_hand_on(b"t1"));
        assert!(!Handed::Value(b"t1".to_vec()).must_hand_on(b"t1"));
        assert!(Handed::Value(b"t1".to_vec()).must_hand_on(b"t2"));
        assert!(Handed::Value(b"t1".to_vec()).must_hand_on(b""));
    }

    #[test]
    fn after_a_rolled_back_savepoint_even_no_token_is_handed_on() {
        // BEGIN; token t1 handed on; SAVEPOINT; ...; ROLLBACK TO SAVEPOINT; the token
        // cleared: the workers may still hold t1, so the empty value must go to them.
        assert!(Handed::Unknown.must_hand_on(b""));
        assert!(Handed::Unknown.must_hand_on(b"t1"));
    }
}

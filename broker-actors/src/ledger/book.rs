//! The ledger's arithmetic, free of I/O: accounts, immutable transfers with caller-chosen ids,
//! and the invariants (the sum of all balances is zero; only the mint goes below zero).

use std::collections::{BTreeMap, HashMap};

use helium_protocol::ledger::{Transfer, MINT};

/// Why a transfer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("transfer id {0} was already used for a different transfer")]
    IdReused(String),
    #[error("account {account} holds {balance} micro-credits, {needed} needed")]
    InsufficientFunds {
        account: String,
        balance: i128,
        needed: u64,
    },
    #[error("transfer {0} moves nothing or moves credits from an account to itself")]
    Degenerate(String),
}

/// What applying a transfer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    New,
    /// The same transfer was applied before: nothing changed.
    Duplicate,
}

/// Balances and the set of applied transfers, rebuilt from the journal at start.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Book {
    balances: BTreeMap<String, i128>,
    transfers: HashMap<String, Transfer>,
}

impl Book {
    /// Checks a transfer without applying it.
    pub fn check(&self, t: &Transfer) -> Result<Applied, BookError> {
        if let Some(previous) = self.transfers.get(&t.id) {
            return if previous == t {
                Ok(Applied::Duplicate)
            } else {
                Err(BookError::IdReused(t.id.clone()))
            };
        }
        if t.amount == 0 || t.debit == t.credit {
            return Err(BookError::Degenerate(t.id.clone()));
        }
        let balance = self.balance(&t.debit);
        if t.debit != MINT && balance < i128::from(t.amount) {
            return Err(BookError::InsufficientFunds {
                account: t.debit.clone(),
                balance,
                needed: t.amount,
            });
        }
        Ok(Applied::New)
    }

    /// Checks and applies a transfer.
    pub fn apply(&mut self, t: Transfer) -> Result<Applied, BookError> {
        let applied = self.check(&t)?;
        if applied == Applied::New {
            *self.balances.entry(t.debit.clone()).or_default() -= i128::from(t.amount);
            *self.balances.entry(t.credit.clone()).or_default() += i128::from(t.amount);
            self.transfers.insert(t.id.clone(), t);
        }
        Ok(applied)
    }

    pub fn balance(&self, account: &str) -> i128 {
        self.balances.get(account).copied().unwrap_or(0)
    }

    pub fn balances(&self) -> &BTreeMap<String, i128> {
        &self.balances
    }

    pub fn transfer_count(&self) -> usize {
        self.transfers.len()
    }

    /// The invariants every test and the replay check: zero sum, and nobody but the mint
    /// below zero.
    pub fn invariants_hold(&self) -> bool {
        let sum: i128 = self.balances.values().sum();
        sum == 0 && self.balances.iter().all(|(account, b)| account == MINT || *b >= 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helium_protocol::ledger::{escrow, user};
    use helium_protocol::PROTOCOL_VERSION;

    fn t(id: &str, debit: &str, credit: &str, amount: u64) -> Transfer {
        Transfer {
            v: PROTOCOL_VERSION,
            id: id.into(),
            debit: debit.into(),
            credit: credit.into(),
            amount,
            memo: String::new(),
        }
    }

    #[test]
    fn hold_post_void_keeps_invariants() {
        let mut book = Book::default();
        book.apply(t("grant", MINT, &user("r"), 100)).unwrap();
        book.apply(t("hold", &user("r"), &escrow("j"), 60)).unwrap();
        book.apply(t("pay", &escrow("j"), &user("o"), 45)).unwrap();
        book.apply(t("void", &escrow("j"), &user("r"), 15)).unwrap();
        assert_eq!(book.balance(&user("r")), 55);
        assert_eq!(book.balance(&user("o")), 45);
        assert_eq!(book.balance(&escrow("j")), 0);
        assert_eq!(book.balance(MINT), -100);
        assert!(book.invariants_hold());
    }

    #[test]
    fn retries_are_noops_and_reused_ids_are_refused() {
        let mut book = Book::default();
        book.apply(t("g", MINT, "user:a", 5)).unwrap();
        assert_eq!(book.apply(t("g", MINT, "user:a", 5)).unwrap(), Applied::Duplicate);
        assert_eq!(book.balance("user:a"), 5);
        assert_eq!(
            book.apply(t("g", MINT, "user:a", 6)),
            Err(BookError::IdReused("g".into()))
        );
    }

    #[test]
    fn nobody_but_the_mint_goes_negative() {
        let mut book = Book::default();
        let e = book.apply(t("x", "user:a", "user:b", 1)).unwrap_err();
        assert!(matches!(e, BookError::InsufficientFunds { .. }));
        assert!(book.apply(t("y", "user:a", "user:a", 0)).is_err());
        assert!(book.invariants_hold());
    }
}

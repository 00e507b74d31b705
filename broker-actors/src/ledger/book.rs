//! The ledger's arithmetic, free of I/O: accounts, immutable transfers with caller-chosen ids,
//! and the invariants (the sum of all balances is zero; only the mint goes below zero).
//! [`Pending`] is what group commit checks against: the book as it will be once the transfers
//! accepted but not yet journaled are.

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

    /// Applies one journal entry's transfers in order, all or none.
    pub fn apply_entry(&mut self, transfers: &[Transfer]) -> Result<(), BookError> {
        let mut scratch = Pending::default();
        for t in transfers {
            if scratch.check(self, t)? == Verdict::New {
                scratch.add(t);
            }
        }
        for t in transfers {
            self.apply(t.clone())?;
        }
        Ok(())
    }

    /// The applied transfer with this id.
    pub fn transfer(&self, id: &str) -> Option<&Transfer> {
        self.transfers.get(id)
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

/// How a transfer stands against a [`Book`] and its [`Pending`] transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Applies on top of everything pending.
    New,
    /// The same transfer is in the book already.
    Journaled,
    /// The same transfer is pending: its outcome will be this one's.
    Pending,
}

/// Transfers accepted but not yet journaled, as differences to a book: their ids and their
/// net effect per account.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Pending {
    transfers: HashMap<String, Transfer>,
    delta: HashMap<String, i128>,
}

impl Pending {
    /// Checks `t` against `book` with every pending transfer applied (the same rules as
    /// [`Book::check`]).
    pub fn check(&self, book: &Book, t: &Transfer) -> Result<Verdict, BookError> {
        for (earlier, verdict) in [
            (book.transfer(&t.id), Verdict::Journaled),
            (self.transfers.get(&t.id), Verdict::Pending),
        ] {
            if let Some(previous) = earlier {
                return if previous == t {
                    Ok(verdict)
                } else {
                    Err(BookError::IdReused(t.id.clone()))
                };
            }
        }
        if t.amount == 0 || t.debit == t.credit {
            return Err(BookError::Degenerate(t.id.clone()));
        }
        let balance = book.balance(&t.debit) + self.delta.get(&t.debit).copied().unwrap_or(0);
        if t.debit != MINT && balance < i128::from(t.amount) {
            return Err(BookError::InsufficientFunds {
                account: t.debit.clone(),
                balance,
                needed: t.amount,
            });
        }
        Ok(Verdict::New)
    }

    /// Adds a transfer that [`Pending::check`] found `New`.
    pub fn add(&mut self, t: &Transfer) {
        *self.delta.entry(t.debit.clone()).or_default() -= i128::from(t.amount);
        *self.delta.entry(t.credit.clone()).or_default() += i128::from(t.amount);
        self.transfers.insert(t.id.clone(), t.clone());
    }

    /// Takes a pending transfer out (it was journaled and applied to the book, or it failed).
    pub fn remove(&mut self, t: &Transfer) {
        if self.transfers.remove(&t.id).is_none() {
            return;
        }
        for (account, change) in [(&t.debit, i128::from(t.amount)), (&t.credit, -i128::from(t.amount))] {
            if let Some(d) = self.delta.get_mut(account) {
                *d += change;
                if *d == 0 {
                    self.delta.remove(account);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
    }

    pub fn clear(&mut self) {
        self.transfers.clear();
        self.delta.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helium_protocol::ledger::{escrow, user};

    fn t(id: &str, debit: &str, credit: &str, amount: u64) -> Transfer {
        Transfer::new(id, debit, credit, amount)
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

    #[test]
    fn pending_transfers_count_against_the_balance_until_they_are_journaled() {
        let mut book = Book::default();
        book.apply(t("g", MINT, "user:a", 10)).unwrap();
        let mut pending = Pending::default();
        let first = t("h1", "user:a", "escrow:j", 6);
        assert_eq!(pending.check(&book, &first), Ok(Verdict::New));
        pending.add(&first);
        // The second hold would overdraw once the first is journaled.
        let second = t("h2", "user:a", "escrow:k", 6);
        assert!(matches!(
            pending.check(&book, &second),
            Err(BookError::InsufficientFunds { balance: 4, .. })
        ));
        assert_eq!(pending.check(&book, &first), Ok(Verdict::Pending));
        assert_eq!(
            pending.check(&book, &t("h1", "user:a", "escrow:j", 5)),
            Err(BookError::IdReused("h1".into()))
        );
        assert_eq!(
            pending.check(&book, &t("g", MINT, "user:a", 10)),
            Ok(Verdict::Journaled)
        );
        // Journaled: the book has it, the overlay no longer does.
        book.apply(first.clone()).unwrap();
        pending.remove(&first);
        assert!(pending.is_empty() && pending == Pending::default());
        assert!(matches!(
            pending.check(&book, &second),
            Err(BookError::InsufficientFunds { balance: 4, .. })
        ));
    }

    #[test]
    fn an_entry_applies_whole_or_not_at_all() {
        let mut book = Book::default();
        let entry = [
            t("g", MINT, "user:a", 5),
            t("s", "user:a", "user:b", 5),
            t("s2", "user:a", "user:b", 1),
        ];
        assert!(book.apply_entry(&entry).is_err());
        assert_eq!(book, Book::default());
        book.apply_entry(&entry[..2]).unwrap();
        assert_eq!((book.balance("user:a"), book.balance("user:b")), (0, 5));
    }
}

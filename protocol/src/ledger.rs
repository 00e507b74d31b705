//! Journal entries of the double-entry ledger. Amounts are integer micro-credits.
//!
//! Accounts are strings: `user:<principal>` (researchers and GPU owners alike), `escrow:<job>`
//! (a job's hold), and [`MINT`], the only account allowed below zero.

use serde::{Deserialize, Serialize};

pub const MINT: &str = "mint";

pub fn user(principal: &str) -> String {
    format!("user:{principal}")
}

pub fn escrow(job_id: &str) -> String {
    format!("escrow:{job_id}")
}

/// One immutable movement of credits. The id is chosen by the caller and is the journal's
/// `Nats-Msg-Id`: applying the same transfer twice is a no-op, a different transfer under a used
/// id is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub v: u32,
    pub id: String,
    pub debit: String,
    pub credit: String,
    pub amount: u64,
    #[serde(default)]
    pub memo: String,
}

impl Transfer {
    /// A transfer of `amount` micro-credits from `debit` to `credit` under `id`, without a memo.
    pub fn new(id: impl Into<String>, debit: impl Into<String>, credit: impl Into<String>, amount: u64) -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            id: id.into(),
            debit: debit.into(),
            credit: credit.into(),
            amount,
            memo: String::new(),
        }
    }
}

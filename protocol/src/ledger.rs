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

/// What a transfer is, as its id names it (PROTOCOL §10): `grant.<id>`, `hold.<job>.<n>`,
/// `pay.<job>.<n>`, `refund.<job>.<n>`, `sweep.<job>`; anything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    Grant,
    Hold,
    Pay,
    Refund,
    Sweep,
    Other,
}

impl TransferKind {
    pub fn name(self) -> &'static str {
        match self {
            TransferKind::Grant => "grant",
            TransferKind::Hold => "hold",
            TransferKind::Pay => "pay",
            TransferKind::Refund => "refund",
            TransferKind::Sweep => "sweep",
            TransferKind::Other => "other",
        }
    }
}

/// A transfer id read back: its kind, the job and award it belongs to (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedId<'a> {
    pub kind: TransferKind,
    pub job: Option<&'a str>,
    pub award: Option<u32>,
}

/// `hold.<job>.<n>`, `pay.<job>.<n>`, `refund.<job>.<n>`, `sweep.<job>`, `grant.<id>`; anything
/// else is [`TransferKind::Other`].
pub fn parse_id(id: &str) -> ParsedId<'_> {
    let other = ParsedId {
        kind: TransferKind::Other,
        job: None,
        award: None,
    };
    let parts: Vec<&str> = id.split('.').collect();
    match parts.as_slice() {
        ["grant", rest] if !rest.is_empty() => ParsedId {
            kind: TransferKind::Grant,
            job: None,
            award: None,
        },
        ["sweep", job] if !job.is_empty() => ParsedId {
            kind: TransferKind::Sweep,
            job: Some(job),
            award: None,
        },
        [kind @ ("hold" | "pay" | "refund"), job, n] if !job.is_empty() => match n.parse() {
            Ok(n) => ParsedId {
                kind: match *kind {
                    "hold" => TransferKind::Hold,
                    "pay" => TransferKind::Pay,
                    _ => TransferKind::Refund,
                },
                job: Some(job),
                award: Some(n),
            },
            Err(_) => other,
        },
        _ => other,
    }
}

//! The operator's audit of the books, free of I/O: the journal as read back (every entry, with
//! its sequence and the time the stream stored it) replayed through the same [`Book`] the
//! Ledger actor rebuilds itself with at start, and what the replay shows.
//!
//! [`Audit::replay`] checks, and reports each breach as a [`Violation`]:
//! - the journal is whole: sequences 1 to its last, each entry decodable;
//! - each entry applies to the book as the entries before it left it ([`Book::apply_entry`]:
//!   no overdraft, no differing transfer under a used id, nothing degenerate);
//! - no transfer is journaled twice (a repeat would be a no-op for the book, but the one writer
//!   never writes one);
//! - the sum of all balances is zero and nobody but the mint is below zero
//!   ([`Book::invariants_hold`]);
//! - every transfer is one the grid makes, between the accounts its kind names (the id is
//!   `<kind>.<job>.<award>` for `hold`, `pay` and `refund`, `sweep.<job>`, `grant.<id>`): credits
//!   come into a principal's account only from the mint (a grant) or out of a job's escrow; a
//!   pay or refund comes out of the escrow of an award that was held, never more in all than
//!   that hold; a refund or sweep goes back to the researcher the job's holds came from.
//!
//! [`Audit::check_jobs`] adds, given the job records, that no finished job still holds
//! credits in escrow. [`Audit::statement`] lists one account's postings with a running balance.

use std::collections::{BTreeMap, HashMap};

pub use helium_protocol::{
    api::StatementLine,
    ledger::{parse_id, ParsedId, TransferKind as Kind},
};
use helium_protocol::{
    job::JobState,
    ledger::{escrow, user, Transfer, MINT},
};
use serde::Serialize;

use super::book::Book;

/// Micro-credits in one credit.
pub const MICRO_PER_CREDIT: i128 = 1_000_000;

/// What one journal sequence holds, as read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Transfers(Vec<Transfer>),
    /// Not a journal entry (or one of another protocol version).
    Undecodable(String),
    /// The stream has no message at this sequence (the journal denies delete and purge).
    Missing,
}

/// One journal sequence as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub seq: u64,
    /// When the stream stored it, milliseconds since the Unix epoch (0 when missing).
    pub time_ms: i64,
    pub content: Content,
}

/// A breach of the ledger's rules, found by the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    #[error("journal entry {seq} is missing")]
    Missing { seq: u64 },
    #[error("journal entry {seq} cannot be read: {error}")]
    Undecodable { seq: u64, error: String },
    /// The broker refuses to start on such a journal; the audit leaves the entry out and goes on.
    #[error("journal entry {seq} does not apply: {error}")]
    DoesNotApply { seq: u64, error: String },
    #[error("transfer {id} is journaled again in entry {seq} (first in entry {first_seq}); applied once")]
    Repeated { seq: u64, id: String, first_seq: u64 },
    #[error("the balances sum to {sum}, not 0")]
    SumNotZero { sum: i128 },
    #[error("account {account} is negative: {balance}")]
    Negative { account: String, balance: i128 },
    #[error("transfer {id} (entry {seq}, {debit} → {credit}) is none the grid makes: {why}")]
    Unbacked {
        seq: u64,
        id: String,
        debit: String,
        credit: String,
        why: String,
    },
    #[error("job {job} is {state:?} but its escrow still holds {held} micro-credits")]
    OpenHold { job: String, state: JobState, held: i128 },
    #[error("escrow of job {job} holds {held} micro-credits, and the job bucket has no record of it")]
    UnknownJob { job: String, held: i128 },
}

/// One applied transfer, where the journal put it.
#[derive(Debug, Clone, PartialEq)]
pub struct Posting {
    pub seq: u64,
    pub time_ms: i64,
    pub transfer: Transfer,
}

/// The audit's figures (`helium ledger check --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub ok: bool,
    /// Journal sequences read.
    pub entries: u64,
    /// Transfers applied.
    pub transfers: usize,
    pub accounts: usize,
    pub sum: i128,
    /// Micro-credits the mint has issued (minus what came back to it).
    pub minted: i128,
    /// Escrow accounts holding credits, and how many micro-credits they hold together.
    pub holds_open: usize,
    pub held: i128,
    pub violations: Vec<Violation>,
}

/// A held award: who it was held from, how much, and how much came out of it since.
#[derive(Debug, Clone)]
struct Hold {
    from: String,
    amount: u64,
    out: u64,
}

/// The journal replayed, and what it broke.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub book: Book,
    pub entries: u64,
    pub postings: Vec<Posting>,
    pub violations: Vec<Violation>,
    /// Where each transfer was first journaled.
    first_seq: HashMap<String, u64>,
    holds: HashMap<(String, u32), Hold>,
    /// Per job, the account its holds came from (the researcher).
    researcher: HashMap<String, String>,
}

impl Audit {
    /// Replays `entries` (in sequence order) through a fresh [`Book`] and checks every rule.
    pub fn replay(entries: impl IntoIterator<Item = JournalEntry>) -> Audit {
        let mut audit = Audit::default();
        for entry in entries {
            audit.apply(entry);
        }
        audit.check_balances();
        audit
    }

    fn apply(&mut self, entry: JournalEntry) {
        let seq = entry.seq;
        self.entries += 1;
        if seq != self.entries {
            // Sequences come in order from 1; whatever the reader skipped is missing.
            for missing in self.entries..seq {
                self.violations.push(Violation::Missing { seq: missing });
            }
            self.entries = seq;
        }
        let transfers = match entry.content {
            Content::Transfers(transfers) => transfers,
            Content::Undecodable(error) => return self.violations.push(Violation::Undecodable { seq, error }),
            Content::Missing => return self.violations.push(Violation::Missing { seq }),
        };
        if let Err(e) = self.book.apply_entry(&transfers) {
            return self.violations.push(Violation::DoesNotApply {
                seq,
                error: e.to_string(),
            });
        }
        for t in transfers {
            if let Some(&first_seq) = self.first_seq.get(&t.id) {
                self.violations.push(Violation::Repeated {
                    seq,
                    id: t.id.clone(),
                    first_seq,
                });
                continue;
            }
            self.first_seq.insert(t.id.clone(), seq);
            if let Err(why) = self.backed(&t) {
                self.violations.push(Violation::Unbacked {
                    seq,
                    id: t.id.clone(),
                    debit: t.debit.clone(),
                    credit: t.credit.clone(),
                    why,
                });
            }
            self.postings.push(Posting {
                seq,
                time_ms: entry.time_ms,
                transfer: t,
            });
        }
    }

    /// Whether `t` (applied) is a transfer the grid makes, between the accounts its kind names,
    /// backed by what came before it.
    fn backed(&mut self, t: &Transfer) -> Result<(), String> {
        let id = parse_id(&t.id);
        let is_user = |a: &str| a.starts_with("user:");
        let (job, award) = (id.job.unwrap_or_default(), id.award.unwrap_or_default());
        match id.kind {
            Kind::Grant if t.debit == MINT && is_user(&t.credit) => Ok(()),
            Kind::Grant => Err("a grant is minted into a principal's account".into()),
            Kind::Other => Err("its id names no kind of transfer (grant, hold, pay, refund, sweep)".into()),
            Kind::Hold if is_user(&t.debit) && t.credit == escrow(job) => {
                match self.researcher.get(job) {
                    Some(from) if *from != t.debit => return Err(format!("the job's earlier holds came from {from}")),
                    _ => {}
                }
                self.researcher.insert(job.to_string(), t.debit.clone());
                self.holds.insert(
                    (job.to_string(), award),
                    Hold {
                        from: t.debit.clone(),
                        amount: t.amount,
                        out: 0,
                    },
                );
                Ok(())
            }
            Kind::Hold => Err("a hold moves a principal's credits into the job's escrow".into()),
            Kind::Pay | Kind::Refund | Kind::Sweep if t.debit != escrow(job) || !is_user(&t.credit) => Err(format!(
                "a {} moves credits out of the job's escrow to a principal",
                id.kind.name()
            )),
            Kind::Sweep => match self.researcher.get(job) {
                Some(from) if *from == t.credit => Ok(()),
                Some(from) => Err(format!(
                    "a sweep returns a stray hold to {from}, whom the holds came from"
                )),
                None => Err("the job held nothing to sweep".into()),
            },
            Kind::Pay | Kind::Refund => {
                let Some(hold) = self.holds.get_mut(&(job.to_string(), award)) else {
                    return Err(format!("award {award} of the job was never held"));
                };
                hold.out += t.amount;
                if hold.out > hold.amount {
                    return Err(format!(
                        "award {award} paid out {} of a hold of {}",
                        hold.out, hold.amount
                    ));
                }
                if id.kind == Kind::Refund && t.credit != hold.from {
                    return Err(format!("a refund goes back to {}, whom the hold came from", hold.from));
                }
                Ok(())
            }
        }
    }

    fn check_balances(&mut self) {
        let balances = self.book.balances();
        let sum: i128 = balances.values().sum();
        if sum != 0 {
            self.violations.push(Violation::SumNotZero { sum });
        }
        for (account, &balance) in balances {
            if account != MINT && balance < 0 {
                self.violations.push(Violation::Negative {
                    account: account.clone(),
                    balance,
                });
            }
        }
    }

    /// Escrow accounts that hold credits: job → micro-credits.
    pub fn open_holds(&self) -> BTreeMap<String, i128> {
        self.book
            .balances()
            .iter()
            .filter_map(|(account, &b)| Some((account.strip_prefix("escrow:")?.to_string(), b)))
            .filter(|(_, b)| *b != 0)
            .collect()
    }

    /// Adds a violation for each open hold of a finished job. `state(job)` is the job's state
    /// in the job bucket, `None` when it has no record.
    pub fn check_jobs(&mut self, state: impl Fn(&str) -> Option<JobState>) {
        for (job, held) in self.open_holds() {
            match state(&job) {
                Some(s) if s.is_terminal() => self.violations.push(Violation::OpenHold { job, state: s, held }),
                Some(_) => {}
                None => self.violations.push(Violation::UnknownJob { job, held }),
            }
        }
    }

    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn summary(&self) -> Summary {
        let holds = self.open_holds();
        Summary {
            ok: self.ok(),
            entries: self.entries,
            transfers: self.book.transfer_count(),
            accounts: self.book.balances().len(),
            sum: self.book.balances().values().sum(),
            minted: -self.book.balance(MINT),
            holds_open: holds.len(),
            held: holds.values().sum(),
            violations: self.violations.clone(),
        }
    }

    /// An account's postings, oldest first, each with the balance after it.
    pub fn statement(&self, account: &str) -> Vec<StatementLine> {
        let mut balance = 0;
        let mut lines = Vec::new();
        for p in &self.postings {
            if let Some(line) = statement_line(account, p.seq, p.time_ms, &p.transfer, balance) {
                balance = line.balance;
                lines.push(line);
            }
        }
        lines
    }
}

/// The line `t` (journaled in entry `seq` at `time_ms`) makes in `account`'s statement when the
/// account held `before`; `None` when `t` does not touch the account. The one place a posting
/// becomes a line: the audit's statement and the Ledger's index (`super::postings`) both use it.
pub fn statement_line(account: &str, seq: u64, time_ms: i64, t: &Transfer, before: i128) -> Option<StatementLine> {
    let (micro, counterparty) = if t.credit == account {
        (i128::from(t.amount), &t.debit)
    } else if t.debit == account {
        (-i128::from(t.amount), &t.credit)
    } else {
        return None;
    };
    let id = parse_id(&t.id);
    Some(StatementLine {
        seq,
        time_ms,
        transfer: t.id.clone(),
        job: id.job.map(str::to_string),
        counterparty: counterparty.clone(),
        kind: id.kind,
        micro,
        balance: before + micro,
        memo: t.memo.clone(),
    })
}

/// The account a command-line argument names: `mint`, `escrow:<job>`, `user:<p>` as written, a
/// bare principal as its `user:` account.
pub fn account_of(arg: &str) -> String {
    if arg == MINT || arg.contains(':') {
        arg.to_string()
    } else {
        user(arg)
    }
}

/// Micro-credits as credits with six decimals: `-1.500000`.
pub fn credits(micro: i128) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let m = micro.unsigned_abs();
    let per = MICRO_PER_CREDIT as u128;
    format!("{sign}{}.{:06}", m / per, m % per)
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time, to the millisecond.
pub fn utc(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil from days (Howard Hinnant's algorithm), the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, debit: &str, credit: &str, amount: u64) -> Transfer {
        Transfer::new(id, debit, credit, amount)
    }

    fn entry(seq: u64, transfers: Vec<Transfer>) -> JournalEntry {
        JournalEntry {
            seq,
            time_ms: 1_000 * seq as i64,
            content: Content::Transfers(transfers),
        }
    }

    /// A job's life as the grid journals it: a grant, a hold, an award lost and settled (pay
    /// and refund in one entry), a second award held and paid whole.
    fn a_jobs_life() -> Vec<JournalEntry> {
        let (alice, j) = (user("alice"), escrow("j1"));
        vec![
            entry(1, vec![t("grant.g1", MINT, &alice, 20_000_000)]),
            entry(2, vec![t("hold.j1.1", &alice, &j, 3_000_000)]),
            entry(
                3,
                vec![
                    t("pay.j1.1", &j, &user("o1"), 1_000_000),
                    t("refund.j1.1", &j, &alice, 2_000_000),
                ],
            ),
            entry(4, vec![t("hold.j1.2", &alice, &j, 4_000_000)]),
            entry(5, vec![t("pay.j1.2", &j, &user("o2"), 4_000_000)]),
        ]
    }

    #[test]
    fn a_jobs_life_balances_and_every_rule_holds() {
        let audit = Audit::replay(a_jobs_life());
        assert_eq!(audit.violations, []);
        let s = audit.summary();
        assert!(s.ok);
        assert_eq!(
            (s.entries, s.transfers, s.accounts, s.sum, s.minted),
            (5, 6, 5, 0, 20_000_000)
        );
        assert_eq!((s.holds_open, s.held), (0, 0));
        assert_eq!(audit.book.balance(&user("alice")), 15_000_000);
        // The same book the Ledger actor replays to.
        let mut book = Book::default();
        for e in a_jobs_life() {
            let Content::Transfers(ts) = e.content else {
                unreachable!()
            };
            book.apply_entry(&ts).unwrap();
        }
        assert_eq!(audit.book, book);
    }

    #[test]
    fn a_statement_lists_each_posting_with_its_running_balance() {
        let audit = Audit::replay(a_jobs_life());
        let lines = audit.statement(&account_of("alice"));
        let rows: Vec<_> = lines
            .iter()
            .map(|l| {
                (
                    l.seq,
                    l.transfer.as_str(),
                    l.job.as_deref(),
                    l.counterparty.as_str(),
                    l.kind,
                    l.micro,
                    l.balance,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (1, "grant.g1", None, "mint", Kind::Grant, 20_000_000, 20_000_000),
                (
                    2,
                    "hold.j1.1",
                    Some("j1"),
                    "escrow:j1",
                    Kind::Hold,
                    -3_000_000,
                    17_000_000
                ),
                (
                    3,
                    "refund.j1.1",
                    Some("j1"),
                    "escrow:j1",
                    Kind::Refund,
                    2_000_000,
                    19_000_000
                ),
                (
                    4,
                    "hold.j1.2",
                    Some("j1"),
                    "escrow:j1",
                    Kind::Hold,
                    -4_000_000,
                    15_000_000
                ),
            ]
        );
        assert_eq!(lines.last().unwrap().balance, audit.book.balance(&user("alice")));
        assert_eq!(lines[0].time_ms, 1_000);
        let owner = audit.statement(&account_of("o1"));
        assert_eq!(owner.len(), 1);
        assert_eq!(
            (owner[0].kind, owner[0].micro, owner[0].counterparty.as_str()),
            (Kind::Pay, 1_000_000, "escrow:j1")
        );
        let escrow_lines = audit.statement(&account_of("escrow:j1"));
        assert_eq!(escrow_lines.iter().map(|l| l.balance).last(), Some(0));
        assert_eq!(audit.statement(&account_of("nobody")), []);
    }

    #[test]
    fn a_repeated_transfer_is_reported_and_applied_once() {
        let mut journal = a_jobs_life();
        journal.push(entry(6, vec![t("pay.j1.2", &escrow("j1"), &user("o2"), 4_000_000)]));
        let audit = Audit::replay(journal);
        assert_eq!(
            audit.violations,
            [Violation::Repeated {
                seq: 6,
                id: "pay.j1.2".into(),
                first_seq: 5
            }]
        );
        assert_eq!(audit.book.balance(&user("o2")), 4_000_000);
    }

    #[test]
    fn entries_that_do_not_apply_are_reported_and_left_out() {
        let mut journal = a_jobs_life();
        journal.extend([
            // A differing transfer under a used id.
            entry(6, vec![t("grant.g1", MINT, &user("alice"), 1)]),
            // An overdraft: the escrow is empty.
            entry(
                7,
                vec![
                    t("pay.j1.2", &escrow("j1"), &user("o2"), 1),
                    t("grant.g2", MINT, &user("bob"), 5),
                ],
            ),
        ]);
        let audit = Audit::replay(journal);
        let seqs: Vec<u64> = audit
            .violations
            .iter()
            .map(|v| match v {
                Violation::DoesNotApply { seq, .. } => *seq,
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(seqs, [6, 7]);
        assert_eq!(
            audit.book.balance(&user("bob")),
            0,
            "an entry applies whole or not at all"
        );
        assert!(audit.summary().sum == 0);
    }

    #[test]
    fn missing_and_unreadable_entries_are_reported() {
        let mut journal = a_jobs_life();
        journal.remove(3); // seq 4
        journal.push(JournalEntry {
            seq: 6,
            time_ms: 0,
            content: Content::Undecodable("not msgpack".into()),
        });
        journal.push(JournalEntry {
            seq: 7,
            time_ms: 0,
            content: Content::Missing,
        });
        let audit = Audit::replay(journal);
        assert_eq!(audit.violations[0], Violation::Missing { seq: 4 });
        // Without hold 2, pay 2 overdraws the escrow.
        assert!(matches!(audit.violations[1], Violation::DoesNotApply { seq: 5, .. }));
        assert_eq!(
            audit.violations[2],
            Violation::Undecodable {
                seq: 6,
                error: "not msgpack".into()
            }
        );
        assert_eq!(audit.violations[3], Violation::Missing { seq: 7 });
        assert_eq!(audit.entries, 7);
    }

    #[test]
    fn credits_come_only_from_the_mint_or_out_of_a_held_escrow() {
        let (alice, bob, j) = (user("alice"), user("bob"), escrow("j1"));
        let unbacked = |journal: Vec<Transfer>| -> Vec<String> {
            let entries = journal
                .into_iter()
                .enumerate()
                .map(|(i, t)| entry(i as u64 + 1, vec![t]));
            Audit::replay(entries)
                .violations
                .into_iter()
                .map(|v| match v {
                    Violation::Unbacked { id, .. } => id,
                    other => panic!("{other}"),
                })
                .collect()
        };
        let grant = t("grant.g", MINT, &alice, 100);
        assert_eq!(unbacked(vec![grant.clone(), t("gift.1", &alice, &bob, 10)]), ["gift.1"]);
        assert_eq!(
            unbacked(vec![grant.clone(), t("pay.j1.1", &alice, &bob, 10)]),
            ["pay.j1.1"]
        );
        assert_eq!(
            unbacked(vec![grant.clone(), t("grant.x", &alice, &bob, 10)]),
            ["grant.x"]
        );
        // Into the escrow under another job's name, or paid out for an award never held.
        assert_eq!(
            unbacked(vec![grant.clone(), t("hold.j2.1", &alice, &j, 10)]),
            ["hold.j2.1"]
        );
        assert_eq!(
            unbacked(vec![
                grant.clone(),
                t("hold.j1.1", &alice, &j, 10),
                t("pay.j1.2", &j, &bob, 5)
            ]),
            ["pay.j1.2"]
        );
        // More out of an award than its hold, though the escrow holds enough (two awards).
        assert_eq!(
            unbacked(vec![
                grant.clone(),
                t("hold.j1.1", &alice, &j, 10),
                t("hold.j1.2", &alice, &j, 10),
                t("pay.j1.1", &j, &bob, 8),
                t("refund.j1.1", &j, &alice, 3),
            ]),
            ["refund.j1.1"]
        );
        // A refund or sweep to someone the hold did not come from.
        assert_eq!(
            unbacked(vec![
                grant.clone(),
                t("hold.j1.1", &alice, &j, 10),
                t("refund.j1.1", &j, &bob, 10)
            ]),
            ["refund.j1.1"]
        );
        assert_eq!(
            unbacked(vec![
                grant.clone(),
                t("hold.j1.1", &alice, &j, 10),
                t("sweep.j1", &j, &bob, 10)
            ]),
            ["sweep.j1"]
        );
        assert_eq!(
            unbacked(vec![
                grant,
                t("hold.j1.1", &alice, &j, 10),
                t("sweep.j1", &j, &alice, 10)
            ]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_finished_job_holding_credits_is_reported() {
        let mut journal = a_jobs_life();
        journal.push(entry(6, vec![t("hold.j2.1", &user("alice"), &escrow("j2"), 500)]));
        journal.push(entry(7, vec![t("hold.j3.1", &user("alice"), &escrow("j3"), 700)]));
        let mut audit = Audit::replay(journal.clone());
        assert!(audit.ok());
        assert_eq!(
            audit.open_holds(),
            BTreeMap::from([("j2".into(), 500), ("j3".into(), 700)])
        );
        assert_eq!((audit.summary().holds_open, audit.summary().held), (2, 1_200));
        audit.check_jobs(|job| match job {
            "j2" => Some(JobState::Running),
            "j3" => Some(JobState::Completed),
            _ => None,
        });
        assert_eq!(
            audit.violations,
            [Violation::OpenHold {
                job: "j3".into(),
                state: JobState::Completed,
                held: 700
            }]
        );
        let mut audit = Audit::replay(journal);
        audit.check_jobs(|_| None);
        assert_eq!(audit.violations.len(), 2);
        assert!(matches!(&audit.violations[0], Violation::UnknownJob { job, held: 500 } if job == "j2"));
    }

    #[test]
    fn ids_name_their_kind_job_and_award() {
        assert_eq!(
            parse_id("pay.job-1.3"),
            ParsedId {
                kind: Kind::Pay,
                job: Some("job-1"),
                award: Some(3)
            }
        );
        assert_eq!(parse_id("sweep.j").kind, Kind::Sweep);
        assert_eq!(parse_id("grant.abc").kind, Kind::Grant);
        for other in ["pay.j", "pay.j.x", "hold..1", "grant.", "t1", "refund.j.1.2"] {
            assert_eq!(parse_id(other).kind, Kind::Other, "{other}");
        }
    }

    #[test]
    fn amounts_and_times_print_for_people() {
        assert_eq!(credits(0), "0.000000");
        assert_eq!(credits(1_500_000), "1.500000");
        assert_eq!(credits(-20_000_001), "-20.000001");
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(utc(951_825_599_999), "2000-02-29T11:59:59.999Z");
        assert_eq!(account_of("alice"), "user:alice");
        assert_eq!(account_of("mint"), "mint");
        assert_eq!(account_of("escrow:j1"), "escrow:j1");
    }
}

//! The Ledger's index of principals' postings, free of I/O: for each `user:<principal>`
//! account, every journaled transfer into or out of it with its journal sequence, time and the
//! balance after it, in journal order. The Ledger actor feeds it each entry it applies (at the
//! start-up replay and after each append), so `account.statement` is answered from memory in
//! O(log n + lines) instead of re-reading the journal.
//!
//! Only principals' accounts are indexed (`account.statement` serves nothing else; the
//! operator's `helium ledger statement` replays the journal for any account). A line is made
//! by [`super::audit::statement_line`], the same function the audit's statement uses, so the
//! two agree line for line.

use std::{collections::HashMap, sync::Arc};

use helium_protocol::{api::StatementLine, encode, ledger::Transfer};

use super::{audit::statement_line, book::Book};

/// Whether an account is indexed: a principal's own (`user:<principal>`).
pub fn indexed(account: &str) -> bool {
    account.starts_with("user:")
}

/// One posting of an account: the transfer (shared by the two accounts it touches, when both
/// are indexed), where the journal put it, and the account's balance after it.
#[derive(Debug, Clone, PartialEq)]
struct Posting {
    seq: u64,
    time_ms: i64,
    transfer: Arc<Transfer>,
    balance: i128,
}

/// Per indexed account, its postings in journal order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Postings {
    accounts: HashMap<String, Vec<Posting>>,
}

/// One reply's worth of an account's statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub lines: Vec<StatementLine>,
    /// Postings after the last line remain.
    pub more: bool,
}

/// The transfers of a journal entry that `book` does not hold yet, each once, in order: what
/// applying the entry adds (a transfer journaled again is a no-op for the book, so it is not a
/// posting either). Ask before applying the entry.
pub fn fresh<'a>(book: &Book, transfers: &'a [Transfer]) -> Vec<&'a Transfer> {
    // An entry holds up to `MAX_GROUP` (1,024) transfers: a set, not a scan of those kept.
    let mut seen = std::collections::HashSet::with_capacity(transfers.len());
    transfers
        .iter()
        .filter(|t| book.transfer(&t.id).is_none() && seen.insert(t.id.as_str()))
        .collect()
}

impl Postings {
    /// Adds the transfers that journal entry `seq`, stored at `time_ms`, applied to the book
    /// ([`fresh`] ones only), in order. Entries come in sequence order.
    pub fn record<'a>(&mut self, seq: u64, time_ms: i64, applied: impl IntoIterator<Item = &'a Transfer>) {
        for t in applied {
            let shared = Arc::new(t.clone());
            for (account, micro) in [(&t.debit, -i128::from(t.amount)), (&t.credit, i128::from(t.amount))] {
                if !indexed(account) {
                    continue;
                }
                let postings = self.accounts.entry(account.clone()).or_default();
                let before = postings.last().map_or(0, |p| p.balance);
                postings.push(Posting {
                    seq,
                    time_ms,
                    transfer: shared.clone(),
                    balance: before + micro,
                });
            }
        }
    }

    /// The account's balance after its last posting (0 for an account without any).
    pub fn balance(&self, account: &str) -> i128 {
        self.accounts
            .get(account)
            .and_then(|p| p.last())
            .map_or(0, |p| p.balance)
    }

    /// How many postings the account has.
    pub fn len(&self, account: &str) -> usize {
        self.accounts.get(account).map_or(0, Vec::len)
    }

    /// The account's lines in entries after `since_seq`, oldest first, whole entries only: as
    /// many entries as fit `limit` lines and `max_bytes` encoded bytes, but always the first
    /// one whole.
    pub fn page(&self, account: &str, since_seq: u64, limit: usize, max_bytes: usize) -> Page {
        let postings = self.accounts.get(account).map_or(&[][..], Vec::as_slice);
        let mut next = postings.partition_point(|p| p.seq <= since_seq);
        let (mut lines, mut bytes) = (Vec::new(), 0);
        while next < postings.len() {
            let seq = postings[next].seq;
            let end = next + postings[next..].partition_point(|p| p.seq == seq);
            let entry: Vec<StatementLine> = postings[next..end]
                .iter()
                .filter_map(|p| {
                    let amount = i128::from(p.transfer.amount);
                    let micro = if p.transfer.credit == account { amount } else { -amount };
                    statement_line(account, p.seq, p.time_ms, &p.transfer, p.balance - micro)
                })
                .collect();
            let size: usize = entry.iter().map(|l| encode(l).len()).sum();
            if !lines.is_empty() && (lines.len() + entry.len() > limit || bytes + size > max_bytes) {
                break;
            }
            lines.extend(entry);
            bytes += size;
            next = end;
        }
        Page {
            lines,
            more: next < postings.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::audit::{Audit, Content, JournalEntry, Kind};
    use helium_protocol::ledger::{escrow, user, MINT};

    fn t(id: &str, debit: &str, credit: &str, amount: u64) -> Transfer {
        Transfer::new(id, debit, credit, amount)
    }

    /// An owner whose worker earns from alice's job, then spends on its own job: a grant, a
    /// hold, the award settled (pay to the owner and refund to alice in one entry), the owner's
    /// own hold and its settlement.
    fn journal() -> Vec<(u64, Vec<Transfer>)> {
        let (alice, owner) = (user("alice"), user("owner"));
        vec![
            (
                1,
                vec![t("grant.a", MINT, &alice, 10_000), t("grant.o", MINT, &owner, 500)],
            ),
            (2, vec![t("hold.j1.1", &alice, &escrow("j1"), 3_000)]),
            (
                3,
                vec![
                    t("pay.j1.1", &escrow("j1"), &owner, 2_000),
                    t("refund.j1.1", &escrow("j1"), &alice, 1_000),
                ],
            ),
            (4, vec![t("hold.j2.1", &owner, &escrow("j2"), 1_200)]),
            (
                5,
                vec![
                    t("pay.j2.1", &escrow("j2"), &user("other"), 900),
                    t("refund.j2.1", &escrow("j2"), &owner, 300),
                ],
            ),
        ]
    }

    /// The journal applied to a book and indexed as the Ledger actor does it.
    fn indexed_journal(journal: &[(u64, Vec<Transfer>)]) -> (Book, Postings) {
        let mut book = Book::default();
        let mut postings = Postings::default();
        for (seq, transfers) in journal {
            let applied: Vec<Transfer> = fresh(&book, transfers).into_iter().cloned().collect();
            book.apply_entry(transfers).unwrap();
            postings.record(*seq, 1_000 * *seq as i64, &applied);
        }
        (book, postings)
    }

    fn audit_of(journal: &[(u64, Vec<Transfer>)]) -> Audit {
        Audit::replay(journal.iter().map(|(seq, transfers)| JournalEntry {
            seq: *seq,
            time_ms: 1_000 * *seq as i64,
            content: Content::Transfers(transfers.clone()),
        }))
    }

    #[test]
    fn the_index_gives_the_audits_statement_and_the_books_balances() {
        let journal = journal();
        let (book, postings) = indexed_journal(&journal);
        let audit = audit_of(&journal);
        for who in ["alice", "owner", "other", "nobody"] {
            let account = user(who);
            let page = postings.page(&account, 0, 100, usize::MAX);
            assert!(!page.more);
            assert_eq!(page.lines, audit.statement(&account), "{who}");
            assert_eq!(postings.balance(&account), book.balance(&account), "{who}");
        }
        let owner: Vec<_> = postings
            .page(&user("owner"), 0, 100, usize::MAX)
            .lines
            .iter()
            .map(|l| (l.seq, l.time_ms, l.kind, l.micro, l.balance, l.counterparty.clone()))
            .collect();
        assert_eq!(
            owner,
            [
                (1, 1_000, Kind::Grant, 500, 500, MINT.to_string()),
                (3, 3_000, Kind::Pay, 2_000, 2_500, escrow("j1")),
                (4, 4_000, Kind::Hold, -1_200, 1_300, escrow("j2")),
                (5, 5_000, Kind::Refund, 300, 1_600, escrow("j2")),
            ]
        );
        // Escrow and mint are not indexed.
        assert_eq!(postings.len(&escrow("j1")), 0);
        assert_eq!(postings.len(MINT), 0);
    }

    #[test]
    fn pages_hold_whole_entries_and_resume_after_the_last_lines_seq() {
        let alice = user("alice");
        let mut journal = vec![(1, vec![t("grant.a", MINT, &alice, 100)])];
        // Entry 2 moves alice's credits three times; entries 3 and 4 once each.
        journal.push((
            2,
            vec![
                t("hold.j1.1", &alice, &escrow("j1"), 10),
                t("hold.j2.1", &alice, &escrow("j2"), 10),
                t("hold.j3.1", &alice, &escrow("j3"), 10),
            ],
        ));
        journal.push((3, vec![t("refund.j1.1", &escrow("j1"), &alice, 10)]));
        journal.push((4, vec![t("refund.j2.1", &escrow("j2"), &alice, 10)]));
        let (_, postings) = indexed_journal(&journal);
        let seqs = |p: &Page| p.lines.iter().map(|l| l.seq).collect::<Vec<_>>();

        // Two lines asked: entry 1, but entry 2 would make four.
        let first = postings.page(&alice, 0, 2, usize::MAX);
        assert_eq!((seqs(&first), first.more), (vec![1], true));
        // From there, entry 2 is larger than the limit on its own: it comes whole.
        let second = postings.page(&alice, 1, 2, usize::MAX);
        assert_eq!((seqs(&second), second.more), (vec![2, 2, 2], true));
        let third = postings.page(&alice, 2, 2, usize::MAX);
        assert_eq!((seqs(&third), third.more), (vec![3, 4], false));
        assert_eq!(
            postings.page(&alice, 4, 2, usize::MAX),
            Page {
                lines: vec![],
                more: false
            }
        );
        // Paging from since_seq = each page's last seq gives the whole statement, once.
        let mut all = Vec::new();
        let mut since = 0;
        loop {
            let page = postings.page(&alice, since, 1, usize::MAX);
            all.extend(page.lines.iter().cloned());
            since = page.lines.last().map_or(since, |l| l.seq);
            if !page.more {
                break;
            }
        }
        assert_eq!(all, audit_of(&journal).statement(&alice));
        assert_eq!(all.last().map(|l| l.balance), Some(90));

        // The byte budget stops a page as the line limit does: the first entry still whole.
        let one_line = encode(&first.lines[0]).len();
        let tight = postings.page(&alice, 0, 100, one_line);
        assert_eq!((seqs(&tight), tight.more), (vec![1], true));
        let none = postings.page(&alice, 0, 100, 0);
        assert_eq!(seqs(&none), vec![1]);
    }

    #[test]
    fn a_transfer_journaled_again_is_not_a_second_posting() {
        let alice = user("alice");
        let grant = t("grant.a", MINT, &alice, 100);
        let journal = vec![
            (1, vec![grant.clone(), grant.clone()]),
            (2, vec![grant.clone(), t("hold.j.1", &alice, &escrow("j"), 30)]),
        ];
        let (book, postings) = indexed_journal(&journal);
        assert_eq!(postings.len(&alice), 2);
        assert_eq!(postings.balance(&alice), 70);
        assert_eq!(book.balance(&alice), 70);
        assert_eq!(fresh(&book, &[grant.clone()]), Vec::<&Transfer>::new());
    }

    #[test]
    fn a_line_is_small_enough_for_a_full_page_to_fit_a_message() {
        let alice = user("alice");
        let long = "j".repeat(64);
        let mut journal = vec![(1, vec![t("grant.a", MINT, &alice, u64::MAX / 4)])];
        for i in 0..1_000u64 {
            let mut hold = t(&format!("hold.{long}.{i}"), &alice, &escrow(&long), 1);
            hold.memo = "m".repeat(64);
            journal.push((i + 2, vec![hold]));
        }
        let (_, postings) = indexed_journal(&journal);
        let page = postings.page(
            &alice,
            0,
            helium_protocol::limits::MAX_STATEMENT_LINES as usize,
            helium_protocol::limits::MAX_STATEMENT_BYTES,
        );
        assert_eq!(page.lines.len(), helium_protocol::limits::MAX_STATEMENT_LINES as usize);
        let bytes = encode(&page.lines).len();
        assert!(bytes < helium_protocol::limits::MAX_STATEMENT_BYTES, "{bytes}");
    }
}

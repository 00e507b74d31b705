//! The Ledger actor: the only writer of the journal, with group commit. A transfer is checked
//! against the book as it will be once every transfer accepted before it is journaled
//! ([`book::Pending`]), so an overdraft is refused at once; accepted transfers queue, and one
//! task at a time appends the queue to the `HELIUM_LEDGER` stream as one entry
//! ([`journal::append`]: expected-last-sequence, so a second writer is fenced off), then
//! reports back by message. Only then are the transfers applied to the [`Book`] and their
//! callers answered. While a group is being appended (one fsync with `sync_interval: always`),
//! the next group gathers, so throughput grows with the number of callers instead of being one
//! fsync per transfer.
//!
//! When an append is not confirmed, the task reads what the journal holds after the last entry
//! the book has; the actor applies it, answers every transfer the journal now holds, retries the
//! ones a second writer's entry fenced off (once), and fails the rest: the book never holds a
//! transfer the journal does not, and replaying the journal at start gives the same book.
//!
//! Beside the book, the actor keeps [`postings::Postings`], each principal's postings in journal
//! order, fed the same entries as the book (at the start-up replay and after each append), from
//! which `account.statement` is answered without reading the journal again.
//!
//! For the operator (`helium ledger`): [`reader`] reads the journal back read-only, and
//! [`audit`] replays it through the same [`Book`] and checks the ledger's rules.

pub mod audit;
pub mod book;
pub mod journal;
pub mod postings;
pub mod reader;

use std::collections::{BTreeMap, VecDeque};

use async_nats::jetstream;
use helium_protocol::{ledger::Transfer, ErrorCode, WireError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub use book::{Applied, Book, BookError, Pending, Verdict};
use journal::{Appended, Refusal, Stored};
pub use postings::Page;
use postings::Postings;

/// Most transfers in one journal entry.
pub const MAX_GROUP: usize = 1_024;
/// Most encoded bytes of transfers in one journal entry (also kept below the server's
/// `max_payload`).
pub const MAX_GROUP_BYTES: usize = 256 * 1024;
/// Appends a transfer may take part in before it fails (a second writer fenced it off each
/// time).
const MAX_ATTEMPTS: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Book(#[from] BookError),
    /// The journal already holds another message under this transfer's id (`Nats-Msg-Id`);
    /// the stream dropped ours as a duplicate, so it was not journaled.
    #[error("the journal holds another entry under message id {0}; transfer refused")]
    MsgIdTaken(String),
    #[error("ledger journal unavailable: {0}")]
    Journal(String),
}

impl From<LedgerError> for WireError {
    fn from(e: LedgerError) -> Self {
        let code = match &e {
            LedgerError::Book(BookError::InsufficientFunds { .. }) => ErrorCode::InsufficientFunds,
            LedgerError::Book(BookError::IdReused(_)) | LedgerError::MsgIdTaken(_) => ErrorCode::Conflict,
            LedgerError::Book(BookError::Degenerate(_)) => ErrorCode::BadRequest,
            LedgerError::Journal(_) => ErrorCode::Unavailable,
        };
        WireError::new(code, e.to_string())
    }
}

pub enum LedgerMsg {
    Transfer(Transfer, RpcReplyPort<Result<Applied, LedgerError>>),
    /// The journaled balance of an account.
    Balance(String, RpcReplyPort<i128>),
    /// Every journaled balance.
    Balances(RpcReplyPort<BTreeMap<String, i128>>),
    /// A principal's account's journaled postings in entries after `since_seq`
    /// ([`Postings::page`]), and its balance.
    Statement {
        account: String,
        since_seq: u64,
        limit: usize,
        max_bytes: usize,
        reply: RpcReplyPort<(Page, i128)>,
    },
    /// From the append task: what became of the group appended after sequence `after`.
    #[doc(hidden)]
    Appended {
        after: u64,
        appended: Appended,
    },
}

type Reply = RpcReplyPort<Result<Applied, LedgerError>>;

/// An accepted transfer and everyone waiting for it (a retry of the same transfer while it is
/// pending waits for the same outcome).
struct Waiting {
    transfer: Transfer,
    replies: Vec<Reply>,
    attempts: u32,
}

impl Waiting {
    fn answer(self, result: Result<Applied, LedgerError>) {
        let mut replies = self.replies.into_iter();
        if let Some(first) = replies.next() {
            let _ = first.send(clone_result(&result));
        }
        // Everyone after the first sent the same transfer again: for them it is a duplicate.
        let again = result.map(|_| Applied::Duplicate);
        for reply in replies {
            let _ = reply.send(clone_result(&again));
        }
    }
}

fn clone_result(r: &Result<Applied, LedgerError>) -> Result<Applied, LedgerError> {
    match r {
        Ok(a) => Ok(*a),
        Err(LedgerError::Book(e)) => Err(LedgerError::Book(e.clone())),
        Err(LedgerError::MsgIdTaken(id)) => Err(LedgerError::MsgIdTaken(id.clone())),
        Err(LedgerError::Journal(e)) => Err(LedgerError::Journal(e.clone())),
    }
}

pub struct Ledger;

pub struct LedgerState {
    js: jetstream::Context,
    /// Exactly the journal up to `last_seq`.
    book: Book,
    /// The principals' postings of the journal up to `last_seq`.
    postings: Postings,
    /// Last journal sequence applied to `book`; the next append expects it.
    last_seq: u64,
    /// Accepted transfers not journaled yet (`in_flight` and `queue`), as the book sees them.
    pending: Pending,
    /// The group being appended, if any.
    in_flight: Vec<Waiting>,
    appending: bool,
    /// Accepted transfers waiting for the next group, in order.
    queue: VecDeque<Waiting>,
}

impl Actor for Ledger {
    type Msg = LedgerMsg;
    type State = LedgerState;
    type Arguments = jetstream::Context;

    async fn pre_start(
        &self,
        _me: ActorRef<LedgerMsg>,
        js: jetstream::Context,
    ) -> Result<LedgerState, ActorProcessingErr> {
        let mut book = Book::default();
        let mut postings = Postings::default();
        let mut last_seq = 0;
        for Stored {
            seq,
            time_ms,
            transfers,
        } in journal::read(&js, 0).await?
        {
            let fresh: Vec<Transfer> = postings::fresh(&book, &transfers).into_iter().cloned().collect();
            // A journal entry that no longer applies means the journal was tampered with.
            book.apply_entry(&transfers)
                .map_err(|e| format!("journal entry {seq} does not apply: {e}"))?;
            postings.record(seq, time_ms, &fresh);
            last_seq = seq;
        }
        tracing::info!(transfers = book.transfer_count(), last_seq, "ledger replayed");
        if !book.invariants_hold() {
            return Err("ledger journal replays to balances that break the invariants".into());
        }
        Ok(LedgerState {
            js,
            book,
            postings,
            last_seq,
            pending: Pending::default(),
            in_flight: Vec::new(),
            appending: false,
            queue: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<LedgerMsg>,
        msg: LedgerMsg,
        state: &mut LedgerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LedgerMsg::Transfer(t, reply) => {
                state.accept(t, reply);
                state.append_next(&me);
            }
            LedgerMsg::Balance(account, reply) => {
                let _ = reply.send(state.book.balance(&account));
            }
            LedgerMsg::Balances(reply) => {
                let _ = reply.send(state.book.balances().clone());
            }
            LedgerMsg::Statement {
                account,
                since_seq,
                limit,
                max_bytes,
                reply,
            } => {
                let page = state.postings.page(&account, since_seq, limit, max_bytes);
                let _ = reply.send((page, state.book.balance(&account)));
            }
            LedgerMsg::Appended { after, appended } => {
                if after != state.last_seq || !state.appending {
                    return Err(format!("append report after {after} while the book is at {}", state.last_seq).into());
                }
                state.appending = false;
                state.settle(appended)?;
                state.append_next(&me);
            }
        }
        Ok(())
    }
}

impl LedgerState {
    /// Answers a transfer that cannot be queued, or queues it.
    fn accept(&mut self, t: Transfer, reply: Reply) {
        match self.pending.check(&self.book, &t) {
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
            Ok(Verdict::Journaled) => {
                let _ = reply.send(Ok(Applied::Duplicate));
            }
            Ok(Verdict::Pending) => {
                let waiting = self.in_flight.iter_mut().chain(self.queue.iter_mut());
                if let Some(w) = waiting.into_iter().find(|w| w.transfer.id == t.id) {
                    w.replies.push(reply);
                }
            }
            Ok(Verdict::New) => {
                self.pending.add(&t);
                self.queue.push_back(Waiting {
                    transfer: t,
                    replies: vec![reply],
                    attempts: 0,
                });
            }
        }
    }

    /// Starts appending the queue as the next group, unless a group is being appended.
    fn append_next(&mut self, me: &ActorRef<LedgerMsg>) {
        if self.appending || self.queue.is_empty() {
            return;
        }
        let budget = MAX_GROUP_BYTES.min(self.js.client().max_payload().saturating_sub(4_096));
        let mut bytes = 0;
        let mut group = Vec::new();
        while let Some(next) = self.queue.front() {
            // A transfer's encoding is about its strings' lengths plus field names.
            let size = 64
                + next.transfer.id.len()
                + next.transfer.debit.len()
                + next.transfer.credit.len()
                + next.transfer.memo.len();
            if group.len() == MAX_GROUP || (!group.is_empty() && bytes + size > budget) {
                break;
            }
            bytes += size;
            let mut w = self.queue.pop_front().expect("front exists");
            w.attempts += 1;
            group.push(w.transfer.clone());
            self.in_flight.push(w);
        }
        self.appending = true;
        let (js, after, me) = (self.js.clone(), self.last_seq, me.clone());
        tokio::spawn(async move {
            let appended = journal::append(&js, after, &group).await;
            // If the ledger stopped meanwhile, nobody is left to answer.
            let _ = me.send_message(LedgerMsg::Appended { after, appended });
        });
    }

    /// Brings the book up to the journal after an append and answers the group's transfers.
    fn settle(&mut self, appended: Appended) -> Result<(), ActorProcessingErr> {
        let group = std::mem::take(&mut self.in_flight);
        let (refusal, tail) = match appended {
            Appended::Journaled { seq, time_ms } => {
                // Every transfer was checked against the book plus those before it, so each
                // applies; if one did not, book and journal would differ: stop, and let a
                // restart rebuild the book from the journal.
                let mut fresh = Vec::with_capacity(group.len());
                for w in &group {
                    let applied = self
                        .book
                        .apply(w.transfer.clone())
                        .map_err(|e| format!("journal entry {seq} was accepted but does not apply: {e}"))?;
                    if applied == Applied::New {
                        fresh.push(&w.transfer);
                    }
                }
                self.postings.record(seq, time_ms, fresh);
                self.last_seq = seq;
                for w in group {
                    self.pending.remove(&w.transfer);
                    tracing::info!(id = %w.transfer.id, debit = %w.transfer.debit, credit = %w.transfer.credit,
                        amount = w.transfer.amount, seq, "transfer");
                    w.answer(Ok(Applied::New));
                }
                return Ok(());
            }
            Appended::Unconfirmed { refusal, tail } => (refusal, tail),
        };
        tracing::warn!(
            ?refusal,
            transfers = group.len(),
            after = self.last_seq,
            "ledger append not confirmed"
        );
        let caught_up = match tail {
            Ok(entries) => self.apply_tail(entries),
            Err(e) => Err(e),
        };
        // Only a lone transfer's message id is its own id; a group's is random.
        let lone = group.len() == 1;
        let mut retry = Vec::new();
        for w in group {
            let journaled = self.book.transfer(&w.transfer.id) == Some(&w.transfer);
            let outcome = match (&caught_up, &refusal) {
                _ if journaled => Some(Ok(if refusal == Refusal::MsgIdTaken {
                    Applied::Duplicate
                } else {
                    Applied::New
                })),
                (Err(e), _) => Some(Err(LedgerError::Journal(e.clone()))),
                (Ok(()), Refusal::MsgIdTaken) if lone => Some(Err(LedgerError::MsgIdTaken(w.transfer.id.clone()))),
                (Ok(()), Refusal::Fenced | Refusal::MsgIdTaken) if w.attempts < MAX_ATTEMPTS => None,
                (Ok(()), Refusal::Fenced | Refusal::MsgIdTaken) => Some(Err(LedgerError::Journal(
                    "another ledger writer keeps appending; gave up".into(),
                ))),
                (Ok(()), Refusal::Failed(e)) => Some(Err(LedgerError::Journal(e.clone()))),
            };
            match outcome {
                Some(result) => w.answer(result),
                None => retry.push(w),
            }
        }
        // What is still pending was checked against a book that has changed: check it again,
        // retries first, in order.
        self.pending.clear();
        let waiting: Vec<Waiting> = retry.into_iter().chain(self.queue.drain(..)).collect();
        for w in waiting {
            match self.pending.check(&self.book, &w.transfer) {
                Ok(Verdict::New) => {
                    self.pending.add(&w.transfer);
                    self.queue.push_back(w);
                }
                Ok(Verdict::Journaled) => w.answer(Ok(Applied::Duplicate)),
                // Ids are unique among the waiting (a repeat joins the first one's replies).
                Ok(Verdict::Pending) => w.answer(Err(LedgerError::Journal("transfer queued twice".into()))),
                Err(e) => w.answer(Err(e.into())),
            }
        }
        Ok(())
    }

    /// Applies the journal's entries after `last_seq`, stopping at one that does not apply.
    fn apply_tail(&mut self, entries: Vec<Stored>) -> Result<(), String> {
        for Stored {
            seq,
            time_ms,
            transfers,
        } in entries
        {
            if seq <= self.last_seq {
                continue;
            }
            let fresh: Vec<Transfer> = postings::fresh(&self.book, &transfers).into_iter().cloned().collect();
            self.book
                .apply_entry(&transfers)
                .map_err(|e| format!("journal entry {seq} does not apply: {e}"))?;
            self.postings.record(seq, time_ms, &fresh);
            self.last_seq = seq;
        }
        Ok(())
    }
}

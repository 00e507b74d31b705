//! The Ledger actor: the only writer of the journal. Every transfer is checked against the
//! in-memory [`Book`], appended to the `HELIUM_LEDGER` stream (message id = transfer id for
//! dedup, expected-last-sequence so a second writer is fenced off), and only then applied.
//! At start the book is rebuilt by replaying the whole journal.

pub mod book;

use std::collections::BTreeMap;

use async_nats::jetstream::{self, consumer::DeliverPolicy, context::PublishErrorKind, message::PublishMessage};
use futures::StreamExt;
use helium_protocol::{decode, encode, ledger::Transfer, subjects::streams, ErrorCode, WireError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub use book::{Applied, Book, BookError};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Book(#[from] BookError),
    #[error("ledger journal unavailable: {0}")]
    Journal(String),
}

impl From<LedgerError> for WireError {
    fn from(e: LedgerError) -> Self {
        let code = match &e {
            LedgerError::Book(BookError::InsufficientFunds { .. }) => ErrorCode::InsufficientFunds,
            LedgerError::Book(BookError::IdReused(_)) => ErrorCode::Conflict,
            LedgerError::Book(BookError::Degenerate(_)) => ErrorCode::BadRequest,
            LedgerError::Journal(_) => ErrorCode::Unavailable,
        };
        WireError::new(code, e.to_string())
    }
}

pub enum LedgerMsg {
    Transfer(Transfer, RpcReplyPort<Result<Applied, LedgerError>>),
    Balance(String, RpcReplyPort<i128>),
    Balances(RpcReplyPort<BTreeMap<String, i128>>),
}

pub struct Ledger;

pub struct LedgerState {
    js: jetstream::Context,
    book: Book,
    /// Last journal sequence applied to `book`; the next append expects it.
    last_seq: u64,
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
        let mut state = LedgerState {
            js,
            book: Book::default(),
            last_seq: 0,
        };
        state.catch_up().await?;
        tracing::info!(
            transfers = state.book.transfer_count(),
            last_seq = state.last_seq,
            "ledger replayed"
        );
        if !state.book.invariants_hold() {
            return Err("ledger journal replays to balances that break the invariants".into());
        }
        Ok(state)
    }

    async fn handle(
        &self,
        _me: ActorRef<LedgerMsg>,
        msg: LedgerMsg,
        state: &mut LedgerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LedgerMsg::Transfer(t, reply) => {
                let result = state.transfer(t).await;
                let _ = reply.send(result);
            }
            LedgerMsg::Balance(account, reply) => {
                let _ = reply.send(state.book.balance(&account));
            }
            LedgerMsg::Balances(reply) => {
                let _ = reply.send(state.book.balances().clone());
            }
        }
        Ok(())
    }
}

impl LedgerState {
    async fn transfer(&mut self, t: Transfer) -> Result<Applied, LedgerError> {
        // One retry after catching up covers a second writer that appended meanwhile.
        for _ in 0..2 {
            if self.book.check(&t)? == Applied::Duplicate {
                return Ok(Applied::Duplicate);
            }
            match self.append(&t).await {
                Ok(seq) => {
                    self.last_seq = seq;
                    let applied = self.book.apply(t.clone())?;
                    tracing::info!(id = %t.id, debit = %t.debit, credit = %t.credit, amount = t.amount, "transfer");
                    return Ok(applied);
                }
                Err(AppendError::Fenced) => {
                    self.catch_up().await.map_err(|e| LedgerError::Journal(e.to_string()))?;
                }
                Err(AppendError::Other(e)) => return Err(LedgerError::Journal(e)),
            }
        }
        Err(LedgerError::Journal(
            "another ledger writer keeps appending; gave up".into(),
        ))
    }

    async fn append(&self, t: &Transfer) -> Result<u64, AppendError> {
        let publish = PublishMessage::build()
            .payload(encode(t).into())
            .message_id(&t.id)
            .expected_last_sequence(self.last_seq);
        let ack = self
            .js
            .send_publish(streams::LEDGER_SUBJECT, publish)
            .await
            .map_err(|e| AppendError::Other(e.to_string()))?
            .await;
        match ack {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(AppendError::Fenced),
            Err(e) => Err(AppendError::Other(e.to_string())),
        }
    }

    /// Applies every journal entry after `last_seq`.
    async fn catch_up(&mut self) -> Result<(), ActorProcessingErr> {
        let mut stream = self.js.get_stream(streams::LEDGER).await?;
        let last = stream.info().await?.state.last_sequence;
        if last <= self.last_seq {
            return Ok(());
        }
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: self.last_seq + 1,
                },
                filter_subject: streams::LEDGER_SUBJECT.to_string(),
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        while self.last_seq < last {
            let Some(message) = messages.next().await else { break };
            let message = message?;
            let seq = message.info()?.stream_sequence;
            let transfer: Transfer = decode(&message.payload)?;
            // A journal entry that no longer applies means the journal was tampered with.
            self.book
                .apply(transfer)
                .map_err(|e| format!("journal entry {seq} does not apply: {e}"))?;
            self.last_seq = seq;
        }
        Ok(())
    }
}

enum AppendError {
    Fenced,
    Other(String),
}

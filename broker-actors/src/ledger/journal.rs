//! The journal's I/O: appending one group of transfers to `HELIUM_LEDGER` as one message, and
//! reading the entries after a sequence. No state: the Ledger actor owns the book and decides
//! what an outcome means.
//!
//! Entry forms (PROTOCOL §10): a lone transfer is a plain [`Transfer`] with `Nats-Msg-Id` = its
//! id; a group of two or more is one [`Batch`] message (`{v, batch: [Transfer…]}`) with
//! `Nats-Msg-Id` = `batch.<uuid>`. Both carry `Nats-Expected-Last-Sequence`, so an append lands
//! only right after the entry the writer last saw, and a group lands whole or not at all. The
//! point of the group: nats-server with `sync_interval: always` fsyncs each message it stores,
//! so one message per group is one fsync per group.

use async_nats::jetstream::{self, consumer::DeliverPolicy, context::PublishErrorKind, message::PublishMessage};
use futures::StreamExt;
use helium_protocol::{decode, encode, ledger::Transfer, subjects::streams, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};

/// Several transfers journaled as one message, applied in order and all or none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub v: u32,
    pub batch: Vec<Transfer>,
}

/// A journal message, in either form.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum Entry {
    Batch(Batch),
    One(Transfer),
}

/// The encoded message for a group (not empty) and its message id.
pub fn encode_entry(transfers: &[Transfer]) -> (Vec<u8>, String) {
    match transfers {
        [one] => (encode(one), one.id.clone()),
        group => (
            encode(&Batch {
                v: PROTOCOL_VERSION,
                batch: group.to_vec(),
            }),
            format!("batch.{}", uuid::Uuid::now_v7().simple()),
        ),
    }
}

/// The transfers of one journal message, in order.
pub fn decode_entry(payload: &[u8]) -> Result<Vec<Transfer>, String> {
    match decode::<Entry>(payload).map_err(|e| e.to_string())? {
        // `decode` checked the batch's `v`; each transfer in it carries one too.
        Entry::Batch(b) if b.batch.iter().any(|t| t.v != PROTOCOL_VERSION) => {
            Err(format!("a journal batch holds a transfer of another protocol version than {PROTOCOL_VERSION}"))
        }
        Entry::Batch(b) => Ok(b.batch),
        Entry::One(t) => Ok(vec![t]),
    }
}

/// Why an append did not confirm its group.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Another entry was appended after `after` (a second writer): nothing of ours landed.
    Fenced,
    /// The stream already holds a message under our message id (a lone transfer's id): ours was
    /// dropped as a duplicate, whatever that other message says.
    MsgIdTaken,
    /// Anything else (timeout, connection, no stream): ours may or may not have landed.
    Failed(String),
}

/// One journal entry as read back: its sequence, when the stream stored it (milliseconds since
/// the Unix epoch) and its transfers.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub seq: u64,
    pub time_ms: i64,
    pub transfers: Vec<Transfer>,
}

/// What became of one append.
#[derive(Debug)]
pub enum Appended {
    /// The group is the entry at `seq` (= `after` + 1), acknowledged at `time_ms` by this
    /// process's clock (a PubAck carries no time; the stream's own stamp, which a replay reads,
    /// is earlier by the acknowledgement's latency).
    Journaled { seq: u64, time_ms: i64 },
    /// Not confirmed; `tail` is every entry after `after` as read from the stream afterwards
    /// (so the actor can make its book equal to the journal again), or why it could not be read.
    Unconfirmed {
        refusal: Refusal,
        tail: Result<Vec<Stored>, String>,
    },
}

/// Appends `transfers` as one entry right after sequence `after`, waits for the stream's ack
/// (which, with `sync_interval: always`, comes after the fsync), and on anything but a clean
/// ack reads what the journal holds after `after`.
pub async fn append(js: &jetstream::Context, after: u64, transfers: &[Transfer]) -> Appended {
    let (payload, msg_id) = encode_entry(transfers);
    let publish = PublishMessage::build()
        .payload(payload.into())
        .message_id(msg_id)
        .expected_last_sequence(after);
    let ack = match js.send_publish(streams::LEDGER_SUBJECT, publish).await {
        Ok(future) => future.await,
        Err(e) => Err(e),
    };
    let refusal = match ack {
        Ok(ack) if !ack.duplicate && ack.sequence == after + 1 => {
            return Appended::Journaled {
                seq: ack.sequence,
                time_ms: crate::now_ms() as i64,
            }
        }
        Ok(ack) if ack.duplicate => Refusal::MsgIdTaken,
        Ok(ack) => Refusal::Failed(format!("appended at {} instead of {}", ack.sequence, after + 1)),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Refusal::Fenced,
        Err(e) => Refusal::Failed(e.to_string()),
    };
    let tail = read(js, after).await;
    Appended::Unconfirmed { refusal, tail }
}

/// Every entry after sequence `after`, up to the stream's last sequence when asked, with the
/// time the stream stored each.
pub async fn read(js: &jetstream::Context, after: u64) -> Result<Vec<Stored>, String> {
    let error = |e: &dyn std::fmt::Display| format!("reading the ledger journal: {e}");
    let mut stream = js.get_stream(streams::LEDGER).await.map_err(|e| error(&e))?;
    let last = stream.info().await.map_err(|e| error(&e))?.state.last_sequence;
    let mut entries = Vec::new();
    if last <= after {
        return Ok(entries);
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            filter_subject: streams::LEDGER_SUBJECT.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|e| error(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| error(&e))?;
    while entries.last().map_or(after, |e: &Stored| e.seq) < last {
        let Some(message) = messages.next().await else {
            return Err(error(&"the journal ended early"));
        };
        let message = message.map_err(|e| error(&e))?;
        let info = message.info().map_err(|e| error(&e))?;
        let (seq, time_ms) = (
            info.stream_sequence,
            (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
        );
        let transfers = decode_entry(&message.payload).map_err(|e| format!("journal entry {seq}: {e}"))?;
        entries.push(Stored {
            seq,
            time_ms,
            transfers,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str) -> Transfer {
        Transfer {
            v: PROTOCOL_VERSION,
            id: id.into(),
            debit: "mint".into(),
            credit: "user:a".into(),
            amount: 1,
            memo: String::new(),
        }
    }

    #[test]
    fn both_entry_forms_decode_to_their_transfers() {
        let (one, id) = encode_entry(&[t("a")]);
        assert_eq!(id, "a");
        assert_eq!(decode_entry(&one).unwrap(), vec![t("a")]);
        let (group, id) = encode_entry(&[t("a"), t("b")]);
        assert!(id.starts_with("batch."), "{id}");
        assert_eq!(decode_entry(&group).unwrap(), vec![t("a"), t("b")]);
        assert!(decode_entry(b"\x01").is_err());
        let mut old = t("c");
        old.v = 0;
        assert!(decode_entry(&encode(&Batch { v: PROTOCOL_VERSION, batch: vec![t("a"), old] })).is_err());
    }
}

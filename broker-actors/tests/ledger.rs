//! The ledger against a real JetStream journal: invariants, idempotency, and replay.

use std::collections::BTreeMap;

use helium_broker_actors::{
    ledger::{Applied, BookError, Ledger, LedgerError, LedgerMsg},
    streams,
};
use helium_protocol::ledger::{escrow, user, Transfer, MINT};
use helium_test_support::NatsServer;
use ractor::{Actor, ActorRef};

fn t(id: &str, debit: &str, credit: &str, amount: u64) -> Transfer {
    Transfer::new(id, debit, credit, amount)
}

async fn apply(ledger: &ActorRef<LedgerMsg>, transfer: Transfer) -> Result<Applied, LedgerError> {
    ractor::call_t!(ledger, LedgerMsg::Transfer, 5_000, transfer).unwrap()
}

async fn balances(ledger: &ActorRef<LedgerMsg>) -> BTreeMap<String, i128> {
    ractor::call_t!(ledger, LedgerMsg::Balances, 5_000).unwrap()
}

fn assert_invariants(b: &BTreeMap<String, i128>) {
    assert_eq!(b.values().sum::<i128>(), 0, "sum of balances: {b:?}");
    assert!(b.iter().all(|(a, v)| a == MINT || *v >= 0), "negative account: {b:?}");
}

#[tokio::test]
async fn hold_post_void_keep_the_books_balanced_and_replay_to_the_same_balances() {
    let mut server = NatsServer::start().unwrap();
    let js = async_nats::jetstream::new(server.connect().await.unwrap());
    streams::ensure(&js, 1, &Default::default()).await.unwrap();
    let (ledger, handle) = Actor::spawn(None, Ledger, js.clone()).await.unwrap();

    apply(&ledger, t("grant.1", MINT, &user("r"), 1_000)).await.unwrap();
    apply(&ledger, t("hold.j.1", &user("r"), &escrow("j"), 600))
        .await
        .unwrap();
    apply(&ledger, t("pay.j.1", &escrow("j"), &user("owner"), 450))
        .await
        .unwrap();
    apply(&ledger, t("refund.j.1", &escrow("j"), &user("r"), 150))
        .await
        .unwrap();
    // Refused: overdraft, and a different transfer under a used id. Neither changes anything.
    let overdraft = apply(&ledger, t("hold.j.2", &user("r"), &escrow("j"), 10_000))
        .await
        .unwrap_err();
    assert!(matches!(
        overdraft,
        LedgerError::Book(BookError::InsufficientFunds { .. })
    ));
    let reused = apply(&ledger, t("pay.j.1", &escrow("j"), &user("owner"), 1))
        .await
        .unwrap_err();
    assert!(matches!(reused, LedgerError::Book(BookError::IdReused(_))));
    // A retry of the same transfer is a no-op.
    assert_eq!(
        apply(&ledger, t("pay.j.1", &escrow("j"), &user("owner"), 450))
            .await
            .unwrap(),
        Applied::Duplicate
    );

    let before = balances(&ledger).await;
    assert_eq!(before[&user("r")], 550);
    assert_eq!(before[&user("owner")], 450);
    assert_eq!(before[&escrow("j")], 0);
    assert_invariants(&before);

    ledger.stop(None);
    handle.await.unwrap();
    // Restart the ledger and the server itself: the journal alone rebuilds the books.
    drop(js);
    server.restart().unwrap();
    let js = async_nats::jetstream::new(server.connect().await.unwrap());
    let (replayed, _) = Actor::spawn(None, Ledger, js).await.unwrap();
    assert_eq!(balances(&replayed).await, before);
    // Idempotency survives the restart.
    assert_eq!(
        apply(&replayed, t("grant.1", MINT, &user("r"), 1_000)).await.unwrap(),
        Applied::Duplicate
    );
    assert_eq!(balances(&replayed).await, before);
}

#[tokio::test]
async fn a_second_ledger_writer_catches_up_instead_of_forking_the_journal() {
    let server = NatsServer::start().unwrap();
    let js = async_nats::jetstream::new(server.connect().await.unwrap());
    streams::ensure(&js, 1, &Default::default()).await.unwrap();
    let (first, _) = Actor::spawn(None, Ledger, js.clone()).await.unwrap();
    let (second, _) = Actor::spawn(None, Ledger, js.clone()).await.unwrap();
    apply(&first, t("g1", MINT, &user("a"), 100)).await.unwrap();
    // `second` has not seen g1; its append is fenced by expected-last-sequence, it catches up,
    // and then refuses the overdraft that g1 makes impossible to miss.
    apply(&second, t("g2", MINT, &user("a"), 5)).await.unwrap();
    assert_eq!(
        apply(&second, t("spend", &user("a"), &user("b"), 105)).await.unwrap(),
        Applied::New
    );
    let b = balances(&second).await;
    assert_eq!((b[&user("a")], b[&user("b")]), (0, 105));
    assert_invariants(&b);
}

// Group commit, against nats-server with `sync_interval: always` (as `deploy/grid.sh` runs it).

use async_nats::jetstream::{self, message::PublishMessage};
use futures::future::join_all;
use helium_protocol::{encode, subjects::streams as names};

/// Stops `ledger`, restarts nats-server on the same store, and starts a ledger that rebuilds
/// its book from the journal alone.
async fn restarted(
    ledger: ActorRef<LedgerMsg>,
    js: jetstream::Context,
    server: &mut NatsServer,
) -> ActorRef<LedgerMsg> {
    ledger.stop(None);
    drop(js);
    server.restart().unwrap();
    ledger_on(server).await.0
}

/// The balances a ledger replays from the journal after [`restarted`].
async fn replay_after_restart(
    ledger: ActorRef<LedgerMsg>,
    js: jetstream::Context,
    server: &mut NatsServer,
) -> BTreeMap<String, i128> {
    balances(&restarted(ledger, js, server).await).await
}

async fn ledger_on(server: &NatsServer) -> (ActorRef<LedgerMsg>, jetstream::Context) {
    let js = jetstream::new(server.connect().await.unwrap());
    streams::ensure(&js, 1, &Default::default()).await.unwrap();
    let (ledger, _) = Actor::spawn(None, Ledger, js.clone()).await.unwrap();
    (ledger, js)
}

async fn journal_messages(js: &jetstream::Context) -> u64 {
    js.get_stream(names::LEDGER)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

/// 64 callers move credits around a ring of accounts at once, some transfers overdrawing:
/// the books balance, nobody but the mint is negative, the balances are exactly the sum of the
/// transfers that were answered ok, transfers shared journal messages, and replaying the
/// journal after restarting the ledger and nats-server gives the same balances.
#[tokio::test]
async fn group_commit_keeps_the_invariants_under_concurrent_callers() {
    let mut server = NatsServer::start_synced().unwrap();
    let (ledger, js) = ledger_on(&server).await;
    const ACCOUNTS: usize = 64;
    for a in 0..ACCOUNTS {
        apply(&ledger, t(&format!("grant.{a}"), MINT, &user(&format!("a{a}")), 50))
            .await
            .unwrap();
    }
    let callers = (0..ACCOUNTS).map(|c| {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let mut ok = Vec::new();
            let mut refused = 0;
            for i in 0..40u64 {
                // Amounts 1..=30 against a balance of about 50: some overdraw.
                let amount = 1 + (c as u64 * 7 + i * 13) % 30;
                let to = (c + 1 + i as usize) % ACCOUNTS;
                let transfer = t(
                    &format!("t.{c}.{i}"),
                    &user(&format!("a{c}")),
                    &user(&format!("a{to}")),
                    amount,
                );
                match apply(&ledger, transfer.clone()).await {
                    Ok(Applied::New) => ok.push(transfer),
                    Err(LedgerError::Book(BookError::InsufficientFunds { .. })) => refused += 1,
                    other => panic!("{}: {other:?}", transfer.id),
                }
            }
            (ok, refused)
        })
    });
    let results = join_all(callers).await;
    let mut expected: BTreeMap<String, i128> = BTreeMap::new();
    *expected.entry(MINT.into()).or_default() -= 50 * ACCOUNTS as i128;
    for a in 0..ACCOUNTS {
        *expected.entry(user(&format!("a{a}"))).or_default() += 50;
    }
    let (mut applied, mut refused) = (0, 0);
    for result in results {
        let (ok, r) = result.unwrap();
        refused += r;
        applied += ok.len();
        for transfer in ok {
            *expected.entry(transfer.debit.clone()).or_default() -= i128::from(transfer.amount);
            *expected.entry(transfer.credit.clone()).or_default() += i128::from(transfer.amount);
        }
    }
    assert!(
        refused > 0 && applied > 0,
        "the mix should both apply and overdraw: {applied} / {refused}"
    );
    let books = balances(&ledger).await;
    assert_invariants(&books);
    assert_eq!(books, expected);
    // Group commit happened: fewer journal messages than transfers.
    let messages = journal_messages(&js).await;
    assert!(
        messages < (ACCOUNTS + applied) as u64,
        "{messages} messages for {} transfers",
        ACCOUNTS + applied
    );

    assert_eq!(replay_after_restart(ledger, js, &mut server).await, books);
}

/// Many holds on one account at once, together worth more than its balance: exactly the
/// excess is refused, although they are checked while earlier ones are still being journaled.
#[tokio::test]
async fn concurrent_overdrafts_refuse_exactly_the_excess() {
    let server = NatsServer::start_synced().unwrap();
    let (ledger, _js) = ledger_on(&server).await;
    apply(&ledger, t("grant", MINT, &user("r"), 100)).await.unwrap();
    let holds = (0..50).map(|i| {
        apply(
            &ledger,
            t(&format!("hold.{i}"), &user("r"), &escrow(&format!("j{i}")), 3),
        )
    });
    let results = join_all(holds).await;
    let ok = results.iter().filter(|r| matches!(r, Ok(Applied::New))).count();
    let short = results
        .iter()
        .filter(|r| matches!(r, Err(LedgerError::Book(BookError::InsufficientFunds { .. }))))
        .count();
    assert_eq!((ok, short), (33, 17), "{results:?}");
    let books = balances(&ledger).await;
    assert_eq!(books[&user("r")], 1);
    assert_invariants(&books);
}

/// A transfer sent again while the first copy is still pending gets the same outcome once
/// (one `New`, the rest `Duplicate`); a different transfer under a pending id is refused; after
/// journaling, a retry is a no-op and a differing one is refused.
#[tokio::test]
async fn a_retried_id_is_a_noop_and_a_differing_transfer_with_a_used_id_is_refused() {
    let server = NatsServer::start_synced().unwrap();
    let (ledger, _js) = ledger_on(&server).await;
    apply(&ledger, t("grant", MINT, &user("r"), 100)).await.unwrap();
    let same = t("hold.j.1", &user("r"), &escrow("j"), 10);
    let mut calls: Vec<_> = (0..10).map(|_| apply(&ledger, same.clone())).collect();
    calls.push(apply(&ledger, t("hold.j.1", &user("r"), &escrow("j"), 11)));
    let results = join_all(calls).await;
    let new = results.iter().filter(|r| matches!(r, Ok(Applied::New))).count();
    let dup = results.iter().filter(|r| matches!(r, Ok(Applied::Duplicate))).count();
    assert_eq!((new, dup), (1, 9), "{results:?}");
    assert!(
        matches!(results[10], Err(LedgerError::Book(BookError::IdReused(_)))),
        "{results:?}"
    );
    assert_eq!(apply(&ledger, same.clone()).await.unwrap(), Applied::Duplicate);
    assert!(matches!(
        apply(&ledger, t("hold.j.1", &user("r"), &escrow("j"), 9)).await,
        Err(LedgerError::Book(BookError::IdReused(_)))
    ));
    let books = balances(&ledger).await;
    assert_eq!((books[&user("r")], books[&escrow("j")]), (90, 10));
}

/// Someone who can publish on the journal subject pre-publishes `Nats-Msg-Id: pay.j.1` (with
/// another, valid entry as payload), once before the ledger starts and once while it runs.
/// JetStream then acks the ledger's real `pay.j.1` as a duplicate: the ledger must refuse it,
/// not apply a transfer that was never journaled. The book stays equal to the journal.
#[tokio::test]
async fn a_pre_published_message_id_is_not_applied() {
    let mut server = NatsServer::start_synced().unwrap();
    let js = jetstream::new(server.connect().await.unwrap());
    streams::ensure(&js, 1, &Default::default()).await.unwrap();
    let squat = |msg_id: &str, payload: Transfer| {
        let js = js.clone();
        let publish = PublishMessage::build()
            .payload(encode(&payload).into())
            .message_id(msg_id);
        async move {
            js.send_publish(names::LEDGER_SUBJECT, publish)
                .await
                .unwrap()
                .await
                .unwrap()
        }
    };
    squat("pay.j.1", t("noise.1", MINT, &user("m"), 1)).await;
    let (ledger, _) = Actor::spawn(None, Ledger, js.clone()).await.unwrap();
    apply(&ledger, t("grant", MINT, &user("r"), 100)).await.unwrap();
    apply(&ledger, t("hold.j", &user("r"), &escrow("j"), 60)).await.unwrap();
    let refused = apply(&ledger, t("pay.j.1", &escrow("j"), &user("owner"), 60)).await;
    assert!(
        matches!(refused, Err(LedgerError::MsgIdTaken(ref id)) if id == "pay.j.1"),
        "{refused:?}"
    );
    // The same while the ledger runs (the squatter's entry is the one the ledger has not seen).
    squat("pay.j.2", t("noise.2", MINT, &user("m"), 1)).await;
    let refused = apply(&ledger, t("pay.j.2", &escrow("j"), &user("owner"), 60)).await;
    assert!(
        matches!(refused, Err(LedgerError::MsgIdTaken(ref id)) if id == "pay.j.2"),
        "{refused:?}"
    );
    let books = balances(&ledger).await;
    assert_eq!(
        (books[&escrow("j")], books.get(&user("owner"))),
        (60, None),
        "{books:?}"
    );
    assert_eq!(books[&user("m")], 2, "the journal's own entries are the book's");
    assert_invariants(&books);
    // A differently named transfer pays; the book still equals what a replay gives.
    apply(&ledger, t("pay.j.1b", &escrow("j"), &user("owner"), 60))
        .await
        .unwrap();
    let books = balances(&ledger).await;
    assert_eq!(replay_after_restart(ledger, js, &mut server).await, books);
}

/// Two ledgers append to the same journal at once, each with concurrent callers: every append
/// is fenced by expected-last-sequence, so the journal never forks; every transfer answered ok
/// is journaled exactly once, and each writer's book, once caught up, equals the replay.
#[tokio::test]
async fn a_second_writer_is_fenced_under_group_commit() {
    let server = NatsServer::start_synced().unwrap();
    let (first, js) = ledger_on(&server).await;
    let (second, _) = ledger_on(&server).await;
    let writers = [first.clone(), second.clone()];
    let callers = (0..32).map(|c| {
        let ledger = writers[c % 2].clone();
        tokio::spawn(async move {
            let mut ok = Vec::new();
            for i in 0..20u64 {
                let transfer = t(&format!("g.{c}.{i}"), MINT, &user(&format!("a{c}")), 1 + i);
                match apply(&ledger, transfer.clone()).await {
                    Ok(Applied::New) => ok.push(transfer),
                    // Fenced twice in a row by the other writer: not journaled.
                    Err(LedgerError::Journal(_)) => {}
                    other => panic!("{}: {other:?}", transfer.id),
                }
            }
            ok
        })
    });
    let ok: Vec<Transfer> = join_all(callers).await.into_iter().flat_map(|r| r.unwrap()).collect();
    assert!(!ok.is_empty());
    let (replayed, _) = ledger_on(&server).await;
    // Every ok transfer is in the journal: retrying it on a fresh replay is a no-op.
    for transfer in &ok {
        assert_eq!(
            apply(&replayed, transfer.clone()).await.unwrap(),
            Applied::Duplicate,
            "{}",
            transfer.id
        );
    }
    let mut expected: BTreeMap<String, i128> = BTreeMap::new();
    for transfer in &ok {
        *expected.entry(transfer.debit.clone()).or_default() -= i128::from(transfer.amount);
        *expected.entry(transfer.credit.clone()).or_default() += i128::from(transfer.amount);
    }
    let replay = balances(&replayed).await;
    assert_eq!(
        replay, expected,
        "a transfer not answered ok was journaled, or one was journaled twice"
    );
    // Each writer catches up on its next append, and its book is then exactly the journal.
    for (n, writer) in writers.iter().enumerate() {
        apply(writer, t(&format!("last.{n}"), MINT, &user("z"), 1))
            .await
            .unwrap();
        let (fresh, _) = ledger_on(&server).await;
        assert_eq!(balances(writer).await, balances(&fresh).await, "writer {n}");
    }
    assert!(journal_messages(&js).await > 0);
}

/// nats-server dies while 32 callers transfer. Callers answered ok had their transfer
/// journaled; the ledger's book holds exactly those (none that failed); after the server is
/// back, a ledger replaying the journal finds every one of them.
#[tokio::test]
async fn a_failed_append_fails_only_what_was_not_journaled() {
    let mut server = NatsServer::start_synced().unwrap();
    let (ledger, js) = ledger_on(&server).await;
    let (progress, mut progressed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let callers = (0..32).map(|c| {
        let (ledger, progress) = (ledger.clone(), progress.clone());
        tokio::spawn(async move {
            let mut ok = Vec::new();
            for i in 0u64.. {
                let transfer = t(&format!("g.{c}.{i}"), MINT, &user(&format!("a{c}")), 1);
                // Without a server the answer waits for the ack's and the journal read's timeouts.
                let answer = ractor::call_t!(ledger, LedgerMsg::Transfer, 60_000, transfer.clone()).unwrap();
                match answer {
                    Ok(Applied::New) => {
                        ok.push(transfer);
                        let _ = progress.send(());
                    }
                    Err(LedgerError::Journal(_)) => break,
                    other => panic!("{}: {other:?}", transfer.id),
                }
            }
            ok
        })
    });
    let callers: Vec<_> = callers.collect();
    for _ in 0..300 {
        progressed.recv().await.unwrap();
    }
    server.stop();
    let ok: Vec<Transfer> = join_all(callers).await.into_iter().flat_map(|r| r.unwrap()).collect();
    let mut expected: BTreeMap<String, i128> = BTreeMap::new();
    for transfer in &ok {
        *expected.entry(transfer.debit.clone()).or_default() -= i128::from(transfer.amount);
        *expected.entry(transfer.credit.clone()).or_default() += i128::from(transfer.amount);
    }
    assert_eq!(
        balances(&ledger).await,
        expected,
        "the book holds exactly the transfers answered ok"
    );
    let replayed = restarted(ledger, js, &mut server).await;
    for transfer in &ok {
        assert_eq!(
            apply(&replayed, transfer.clone()).await.unwrap(),
            Applied::Duplicate,
            "{}",
            transfer.id
        );
    }
    assert_invariants(&balances(&replayed).await);
}

// The per-principal index behind `account.statement`.

use helium_broker_actors::ledger::{
    audit::{Audit, StatementLine},
    reader, Page,
};

/// A whole statement from the ledger, asked `limit` lines at a time from each page's last seq.
async fn statement(ledger: &ActorRef<LedgerMsg>, account: &str, limit: usize) -> (Vec<StatementLine>, i128) {
    let (mut lines, mut since_seq) = (Vec::new(), 0);
    loop {
        let account = account.to_string();
        let (Page { lines: page, more }, balance) = ractor::call_t!(
            ledger,
            |reply| LedgerMsg::Statement {
                account,
                since_seq,
                limit,
                max_bytes: usize::MAX,
                reply
            },
            5_000
        )
        .unwrap();
        since_seq = page.last().map_or(since_seq, |l| l.seq);
        lines.extend(page);
        if !more {
            return (lines, balance);
        }
    }
}

/// Concurrent holds, pays and refunds (so entries are groups): the statement the ledger serves
/// from its index is the audit's replay of the journal line for line (times within the
/// acknowledgement's latency), its last balance the book's; after a restart the index rebuilt
/// from the journal gives the audit's statement exactly, and a second writer that learns of
/// entries by catching up indexes them too.
#[tokio::test]
async fn the_statement_index_matches_the_journal_live_and_after_a_restart() {
    let mut server = NatsServer::start_synced().unwrap();
    let (ledger, js) = ledger_on(&server).await;
    let (alice, owner) = (user("alice"), user("owner"));
    apply(&ledger, t("grant.a", MINT, &alice, 1_000_000)).await.unwrap();
    apply(&ledger, t("grant.o", MINT, &owner, 500)).await.unwrap();
    let jobs: Vec<_> = (0..32)
        .map(|i| {
            let (ledger, alice, owner) = (ledger.clone(), alice.clone(), owner.clone());
            async move {
                let (j, e) = (format!("j{i}"), escrow(&format!("j{i}")));
                apply(&ledger, t(&format!("hold.{j}.1"), &alice, &e, 1_000))
                    .await
                    .unwrap();
                let pay = t(&format!("pay.{j}.1"), &e, &owner, 700);
                let refund = t(&format!("refund.{j}.1"), &e, &alice, 300);
                let (p, r) = tokio::join!(apply(&ledger, pay), apply(&ledger, refund));
                (p.unwrap(), r.unwrap())
            }
        })
        .collect();
    join_all(jobs).await;
    apply(&ledger, t("hold.own.1", &owner, &escrow("own"), 10_000))
        .await
        .unwrap();

    let audit = Audit::replay(reader::read_journal(&js).await.unwrap());
    assert!(audit.ok(), "{:?}", audit.violations);
    assert!(journal_messages(&js).await < 2 + 32 * 3 + 1, "some entries are groups");
    for account in [&alice, &owner] {
        let (live, balance) = statement(&ledger, account, 7).await;
        let replayed = audit.statement(account);
        assert_eq!(balance, audit.book.balance(account));
        assert_eq!(live.last().map(|l| l.balance), Some(balance));
        assert_eq!(live.len(), replayed.len());
        for (l, r) in live.iter().zip(&replayed) {
            let stamped = l.time_ms - r.time_ms;
            assert!(
                (0..2_000).contains(&stamped),
                "acknowledged {stamped} ms after it was stored"
            );
            assert_eq!(
                StatementLine {
                    time_ms: r.time_ms,
                    ..l.clone()
                },
                *r
            );
        }
    }
    assert_eq!(statement(&ledger, &owner, 1000).await.0.len(), 1 + 32 + 1);

    let ledger = restarted(ledger, js, &mut server).await;
    for account in [&alice, &owner, &user("nobody")] {
        let (lines, balance) = statement(&ledger, account, 1000).await;
        assert_eq!(lines, audit.statement(account));
        assert_eq!(balance, audit.book.balance(account));
    }

    // A second writer learns of the first one's entry by catching up after being fenced.
    let (second, _) = ledger_on(&server).await;
    apply(&ledger, t("grant.late", MINT, &owner, 5)).await.unwrap();
    apply(&second, t("grant.second", MINT, &owner, 6)).await.unwrap();
    let last_two: Vec<_> = statement(&second, &owner, 1000)
        .await
        .0
        .iter()
        .rev()
        .take(2)
        .map(|l| l.transfer.clone())
        .collect();
    assert_eq!(last_two, ["grant.second", "grant.late"]);
}

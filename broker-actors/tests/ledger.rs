//! The ledger against a real JetStream journal: invariants, idempotency, and replay.

use std::collections::BTreeMap;

use helium_broker_actors::{
    ledger::{Applied, BookError, Ledger, LedgerError, LedgerMsg},
    streams,
};
use helium_protocol::{
    ledger::{escrow, user, Transfer, MINT},
    PROTOCOL_VERSION,
};
use helium_test_support::NatsServer;
use ractor::{Actor, ActorRef};

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
    streams::ensure(&js, 1).await.unwrap();
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
    streams::ensure(&js, 1).await.unwrap();
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

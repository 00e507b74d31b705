//! `helium ledger` against a real journal: transfers made through the broker's Ledger actor,
//! read back with an operator's credential (read-only), then the journal corrupted with the
//! broker's (a repeated transfer, a credit from nowhere) and the corruption reported.

use std::process::{Command, Output};

use helium_broker_actors::{
    ledger::{journal::encode_entry, Ledger, LedgerMsg},
    streams,
};
use helium_protocol::{
    auth::Role,
    ledger::{escrow, user, Transfer, MINT},
    subjects::streams as names,
};
use helium_test_support::NatsServer;
use ractor::Actor;
use serde_json::Value;

fn t(id: &str, debit: &str, credit: &str, amount: u64) -> Transfer {
    Transfer::new(id, debit, credit, amount)
}

fn helium(server: &NatsServer, role: &Role, name: &str, args: &[&str]) -> Output {
    let creds = server.creds(role, name).unwrap();
    Command::new(env!("CARGO_BIN_EXE_helium"))
        .args(["ledger"])
        .args(args)
        .args(["--nats", &server.url, "--creds"])
        .arg(creds)
        .env_remove("HELIUM_TLS_CA")
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn violations(summary: &Value) -> Vec<(String, String)> {
    let list = summary["violations"].as_array().unwrap();
    list.iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_string(),
                v["id"].as_str().or(v["job"].as_str()).unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_operator_audits_the_journal_and_corruption_is_reported() {
    let server = NatsServer::start().unwrap();
    let js = async_nats::jetstream::new(server.connect().await.unwrap());
    streams::ensure(&js, 1, &Default::default()).await.unwrap();
    let (ledger, handle) = Actor::spawn(None, Ledger, js.clone()).await.unwrap();
    let (alice, j1, j2) = (user("alice"), escrow("j1"), escrow("j2"));
    for transfer in [
        t("grant.g1", MINT, &alice, 20_000_000),
        t("hold.j1.1", &alice, &j1, 3_000_000),
        t("pay.j1.1", &j1, &user("owner"), 1_000_000),
        t("refund.j1.1", &j1, &alice, 2_000_000),
        t("hold.j2.1", &alice, &j2, 500_000),
    ] {
        ractor::call_t!(ledger, LedgerMsg::Transfer, 5_000, transfer)
            .unwrap()
            .unwrap();
    }
    ledger.stop(None);
    handle.await.unwrap();

    let check = helium(&server, &Role::Operator, "ops", &["check", "--json"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let s = json(&check);
    assert_eq!(
        (s["ok"].as_bool(), s["transfers"].as_u64(), s["sum"].as_i64()),
        (Some(true), Some(5), Some(0)),
        "{s}"
    );
    assert_eq!(
        (s["holds_open"].as_u64(), s["held"].as_i64()),
        (Some(1), Some(500_000)),
        "{s}"
    );
    let human = helium(&server, &Role::Operator, "ops", &["check"]);
    assert!(human.status.success());
    assert!(String::from_utf8_lossy(&human.stdout).contains("holds     1 open, 0.500000 credits"));

    let balance = json(&helium(
        &server,
        &Role::Operator,
        "ops",
        &["balance", "alice", "--json"],
    ));
    assert_eq!(
        balance,
        serde_json::json!({"account": "user:alice", "micro": 18_500_000})
    );
    let owner = helium(&server, &Role::Operator, "ops", &["balance", "owner"]);
    assert_eq!(String::from_utf8_lossy(&owner.stdout).trim(), "user:owner 1.000000");
    let statement = json(&helium(
        &server,
        &Role::Operator,
        "ops",
        &["statement", "alice", "--json"],
    ));
    let rows: Vec<(String, String, i64, i64)> = statement
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let text = |k: &str| l[k].as_str().unwrap().to_string();
            (
                text("transfer"),
                text("kind"),
                l["micro"].as_i64().unwrap(),
                l["balance"].as_i64().unwrap(),
            )
        })
        .collect();
    let row = |id: &str, kind: &str, micro: i64, balance: i64| (id.to_string(), kind.to_string(), micro, balance);
    assert_eq!(
        rows,
        [
            row("grant.g1", "grant", 20_000_000, 20_000_000),
            row("hold.j1.1", "hold", -3_000_000, 17_000_000),
            row("refund.j1.1", "refund", 2_000_000, 19_000_000),
            row("hold.j2.1", "hold", -500_000, 18_500_000),
        ]
    );

    // With --jobs: the open hold belongs to no job in the bucket.
    let jobs = helium(&server, &Role::Operator, "ops", &["check", "--jobs", "--json"]);
    assert_eq!(jobs.status.code(), Some(1));
    assert_eq!(
        violations(&json(&jobs)),
        [("unknown_job".to_string(), "j2".to_string())]
    );

    // The operator read without writing: the journal is as the ledger left it.
    let mut stream = js.get_stream(names::LEDGER).await.unwrap();
    let before = stream.info().await.unwrap().state.clone();
    assert_eq!(before.consumer_count, 0, "reading left a consumer behind");

    // Corrupt the journal with the broker's credential: a batch repeating a journaled pay
    // (under a fresh message id, so the stream's dedup does not catch it), and a credit to a
    // principal out of another's account.
    for entry in [
        vec![
            t("pay.j1.1", &j1, &user("owner"), 1_000_000),
            t("grant.g2", MINT, &user("bob"), 10),
        ],
        vec![t("gift.1", &alice, &user("mallory"), 1_000_000)],
    ] {
        let (payload, msg_id) = encode_entry(&entry);
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(msg_id);
        js.send_publish(names::LEDGER_SUBJECT, message)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let corrupt = helium(&server, &Role::Operator, "ops", &["check", "--json"]);
    assert_eq!(corrupt.status.code(), Some(1));
    let s = json(&corrupt);
    assert_eq!(
        violations(&s),
        [
            ("repeated".to_string(), "pay.j1.1".to_string()),
            ("unbacked".to_string(), "gift.1".to_string())
        ],
        "{s}"
    );
    assert_eq!(s["sum"].as_i64(), Some(0), "the repeat applied once");
    let human = String::from_utf8_lossy(&helium(&server, &Role::Operator, "ops", &["check"]).stdout).to_string();
    assert!(
        human.contains("VIOLATION transfer pay.j1.1 is journaled again in entry 6 (first in entry 3)"),
        "{human}"
    );

    // A researcher's credential cannot read the journal: the command says so and exits 2.
    let refused = helium(&server, &Role::Researcher, "alice", &["check"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
}

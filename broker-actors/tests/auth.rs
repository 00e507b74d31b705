//! Identity and permissions, each rule shown refused: by nats-server where a credential's
//! permissions can say it (the project's own generated operator config, a real server), by the
//! broker where they cannot (a worker's owner comes from its signed credential).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{Grid, CREDIT};
use helium_broker_actors::keydir;
use helium_protocol::{
    api::{Empty, Grant},
    auth::{authority::Authority, Role},
    encode,
    job::DeviceKind,
    subjects::{self, api as verbs, streams, worker},
    worker::{Ask, Register, Registered},
    decode, ErrorCode, Reply, PROTOCOL_VERSION,
};
use helium_test_support::{now, NatsServer};

fn researcher() -> Role {
    Role::Researcher
}

#[tokio::test]
async fn a_connection_without_a_valid_credential_is_refused() -> Result<()> {
    let server = NatsServer::start()?;
    let anonymous = async_nats::connect(&server.url).await;
    assert!(anonymous.is_err(), "an anonymous connection was accepted");
    // A credential of another grid (another operator's keys) is refused as well. (async-nats
    // may report the handshake as done when the server pings during its account lookup; the
    // refusal then arrives as an event, and the connection never works.)
    let stranger = Authority::generate().issue(&Role::Broker, "broker", now())?;
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let foreign = async_nats::ConnectOptions::with_credentials(&stranger.creds)?
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(&server.url)
        .await;
    if foreign.is_ok() {
        let refused = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(e) = events.recv().await {
                if e.to_lowercase().contains("authorization") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(refused.ok(), Some(true), "another grid's credential was accepted");
    }
    // The grid's own credential connects.
    server.connect_as(&researcher(), "alice").await?.flush().await?;
    Ok(())
}

#[tokio::test]
async fn a_researcher_cannot_write_the_ledger_the_job_bucket_or_the_streams() -> Result<()> {
    let grid = Grid::start().await?;
    let (mallory, mut refused) = grid.nats.connect_watched(&researcher(), "mallory").await?;
    let forged = encode(&serde_json_like_mint());
    for subject in [
        streams::LEDGER_SUBJECT.to_string(),
        format!("$KV.{}.job-1", streams::JOBS_BUCKET),
        format!("$JS.API.STREAM.PURGE.{}", streams::LEDGER),
        format!("$JS.API.STREAM.DELETE.{}", streams::EVENTS),
        format!("$JS.ACK.{}.helium-broker-runs.1.1.1.1.0", streams::RUNS),
    ] {
        mallory.publish(subject.clone(), forged.clone().into()).await?;
        refused.expect(&format!("violation for publish to \"{subject}\"")).await?;
    }
    let js = async_nats::jetstream::new(grid.client.clone());
    let mut ledger = js.get_stream(streams::LEDGER).await?;
    assert_eq!(ledger.info().await?.state.messages, 0, "a forged journal entry was stored");
    Ok(())
}

/// Anything shaped like a journal entry: nats-server refuses it whatever it holds.
fn serde_json_like_mint() -> Grant {
    Grant { v: PROTOCOL_VERSION, to: "mallory".into(), micro: 1_000 * CREDIT, id: "forged".into() }
}

#[tokio::test]
async fn a_researcher_acts_only_under_its_own_name_and_cannot_mint() -> Result<()> {
    let grid = Grid::start().await?;
    grid.grant("bob", 5 * CREDIT).await?;
    let (mallory, mut refused) = grid.nats.connect_watched(&researcher(), "mallory").await?;
    // Another researcher's API subject: mallory cannot ask for bob's balance, or spend it.
    let bob_balance = subjects::api("bob", verbs::ACCOUNT_BALANCE);
    mallory.publish(bob_balance.clone(), encode(&Empty { v: PROTOCOL_VERSION }).into()).await?;
    refused.expect(&format!("violation for publish to \"{bob_balance}\"")).await?;
    // Minting under its own name.
    let grant = subjects::api("mallory", verbs::ACCOUNT_GRANT);
    let body = Grant { v: PROTOCOL_VERSION, to: "mallory".into(), micro: CREDIT, id: "g1".into() };
    mallory.publish(grant.clone(), encode(&body).into()).await?;
    refused.expect(&format!("violation for publish to \"{grant}\"")).await?;
    // A worker's dispatch subject (a forged award or cancel).
    let award = subjects::dispatch("w1", subjects::dispatch::AWARD);
    mallory.publish(award.clone(), "x".into()).await?;
    refused.expect(&format!("violation for publish to \"{award}\"")).await?;
    assert_eq!(grid.balance("mallory").await?, 0);
    assert_eq!(grid.balance("bob").await?, 5 * CREDIT as i128);
    // What it may do: its own API.
    let own: Reply<helium_protocol::api::Balance> = decode(
        &mallory
            .request(subjects::api("mallory", verbs::ACCOUNT_BALANCE), encode(&Empty { v: PROTOCOL_VERSION }).into())
            .await?
            .payload,
    )?;
    assert_eq!(own.into_result().map_err(|e| anyhow::anyhow!("{e}"))?.micro, 0);
    Ok(())
}

#[tokio::test]
async fn a_researcher_reads_neither_anothers_events_nor_inbox() -> Result<()> {
    let grid = Grid::start().await?;
    let (mallory, mut refused) = grid.nats.connect_watched(&researcher(), "mallory").await?;
    for subject in [subjects::job_events("bob", ">"), "_INBOX.>".to_string(), "_INBOX.p.bob.>".to_string()] {
        let _sub = mallory.subscribe(subject.clone()).await?;
        refused.expect(&format!("violation for subscription to \"{subject}\"")).await?;
    }
    // A JetStream consumer on bob's events, or even on her own (its deliver subject could be
    // the ledger journal): researchers hold no JetStream API rights.
    for whose in ["bob", "mallory"] {
        let create = format!("$JS.API.CONSUMER.CREATE.{}.spy.{}", streams::EVENTS, subjects::job_events(whose, ">"));
        mallory.publish(create.clone(), "{}".into()).await?;
        refused.expect(&format!("violation for publish to \"{create}\"")).await?;
    }
    Ok(())
}

/// The broker makes the consumer of a researcher's events, and delivers only into the
/// researcher's own inbox.
#[tokio::test]
async fn job_events_are_delivered_only_into_the_callers_inbox() -> Result<()> {
    use futures::StreamExt;
    use helium_protocol::api::{FollowJob, Following};
    let grid = Grid::start().await?;
    let follow = |deliver: &str| FollowJob { v: PROTOCOL_VERSION, job_id: "j1".into(), deliver: deliver.into(), start_seq: 0 };
    for elsewhere in [streams::LEDGER_SUBJECT, "_INBOX.p.bob.x", "_INBOX.p.alice"] {
        let refused: Result<Following> = grid.request("alice", verbs::JOB_FOLLOW, &follow(elsewhere)).await;
        assert!(refused.expect_err("delivered outside alice's inbox").to_string().contains("Unauthorized"));
    }
    // Alice's own events of j1 arrive in her inbox.
    let js = async_nats::jetstream::new(grid.client.clone());
    js.publish(subjects::job_events("alice", "j1"), "e1".into()).await?.await?;
    js.publish(subjects::job_events("bob", "j1"), "bob's".into()).await?.await?;
    let alice = grid.as_principal("alice").await?;
    let inbox = format!("_INBOX.p.alice.{}", uuid::Uuid::new_v4().simple());
    let mut sub = alice.subscribe(inbox.clone()).await?;
    let following: Following = grid.request("alice", verbs::JOB_FOLLOW, &follow(&inbox)).await?;
    assert_eq!(following.pending, 1);
    let first = tokio::time::timeout(Duration::from_secs(10), sub.next()).await?.expect("an event");
    assert_eq!(&first.payload[..], b"e1");
    Ok(())
}

#[tokio::test]
async fn a_worker_hears_only_its_own_dispatch_and_reports_only_as_itself() -> Result<()> {
    let grid = Grid::start().await?;
    let role = Role::Worker { owner: "owner-1".into() };
    let (w1, mut refused) = grid.nats.connect_watched(&role, "w1").await?;
    let theirs = subjects::dispatch("w2", ">");
    let _sub = w1.subscribe(theirs.clone()).await?;
    refused.expect(&format!("violation for subscription to \"{theirs}\"")).await?;
    let report = subjects::worker("w2", worker::RUN_EVENT);
    w1.publish(report.clone(), "x".into()).await?;
    refused.expect(&format!("violation for publish to \"{report}\"")).await?;
    let api = subjects::api("owner-1", verbs::JOB_LIST);
    w1.publish(api.clone(), "x".into()).await?;
    refused.expect(&format!("violation for publish to \"{api}\"")).await?;
    Ok(())
}

fn ask() -> Ask {
    Ask { price_per_hour: CREDIT, device: DeviceKind::Cpu, device_name: "cpu".into(), memory_bytes: 1 << 30, throughput: 1e9, sandbox: vec![] }
}

async fn register(client: &async_nats::Client, id: &str, owner: &str, credential: String) -> Result<Reply<Registered>> {
    let body = Register { v: PROTOCOL_VERSION, owner: owner.into(), credential, ask: ask(), incarnation: String::new() };
    let reply = client.request(subjects::worker(id, worker::REGISTER), encode(&body).into()).await?;
    Ok(decode(&reply.payload)?)
}

#[tokio::test]
async fn a_workers_owner_comes_from_its_credential() -> Result<()> {
    let grid = Grid::start().await?;
    let role = Role::Worker { owner: "owner-1".into() };
    let mine = grid.nats.authority.issue(&role, "w1", now())?;
    let w1 = grid.nats.connect_issued(&mine, &role, "w1").await?;
    let refused = |reply: Reply<Registered>, why: &str| match reply.into_result() {
        Err(e) => {
            assert_eq!(e.code, ErrorCode::Unauthorized, "{e}");
            assert!(e.message.contains(why), "{} lacks {why:?}", e.message);
        }
        Ok(_) => panic!("registration accepted; expected it refused ({why})"),
    };
    // Directing earnings elsewhere: the payload names another owner.
    refused(register(&w1, "w1", "mallory", mine.jwt.clone()).await?, "pays owner-1, not mallory");
    // Another worker's credential (a JWT is not secret): it names w2, not w1.
    let other = grid.nats.authority.issue(&Role::Worker { owner: "mallory".into() }, "w2", now())?;
    refused(register(&w1, "w1", "mallory", other.jwt).await?, "worker w2's, not w1's");
    // A credential signed by another account.
    let forged = Authority::generate().issue(&Role::Worker { owner: "mallory".into() }, "w1", now())?;
    refused(register(&w1, "w1", "mallory", forged.jwt).await?, "not by the grid's account");
    // A researcher's credential is not a worker's.
    let alice = grid.nats.authority.issue(&Role::Researcher, "w1", now())?;
    refused(register(&w1, "w1", "owner-1", alice.jwt).await?, "not a worker's");
    refused(register(&w1, "w1", "owner-1", "garbage".into()).await?, "credential refused");
    // Its own credential registers, and the registry names the credential's owner.
    register(&w1, "w1", "owner-1", mine.jwt.clone())
        .await?
        .into_result()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let workers: helium_protocol::api::WorkerList = grid.request("alice", verbs::WORKER_LIST, &Empty { v: PROTOCOL_VERSION }).await?;
    let w = workers.workers.iter().find(|w| w.worker_id == "w1").expect("w1 listed");
    assert_eq!(w.owner, "owner-1");
    Ok(())
}

#[tokio::test]
async fn a_revoked_credential_is_refused_at_once_without_a_restart() -> Result<()> {
    let mut server = NatsServer::start()?;
    let issued = server.authority.issue(&researcher(), "alice", now())?;
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let alice = async_nats::ConnectOptions::with_credentials(&issued.creds)?
        .custom_inbox_prefix("_INBOX.p.alice")
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(&server.url)
        .await?;
    alice.flush().await?;

    server.authority.revoke(&issued.public_key, now());
    let dir = tempfile::tempdir()?;
    let system = dir.path().join("system.creds");
    std::fs::write(&system, server.authority.system_user(now())?.creds)?;
    keydir::push_account(&server.url, &system, None, &server.authority.account_jwt(now())?).await?;

    // The live connection is dropped...
    let dropped = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            if e.contains("disconnected") || e.to_lowercase().contains("revoked") || e.to_lowercase().contains("authorization") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(dropped.ok(), Some(true), "the revoked connection stayed up");
    // ...and a new one is refused, while a fresh credential for the same principal works.
    let again = async_nats::ConnectOptions::with_credentials(&issued.creds)?.connect(&server.url).await;
    assert!(again.is_err(), "a revoked credential connected");
    server.connect_as(&researcher(), "alice").await?.flush().await?;
    // A restarted server keeps the revocation: its config is rewritten with the revoked
    // account, as `helium creds revoke` does (a preloaded account replaces a pushed one).
    server.write_auth_config()?;
    server.restart()?;
    let after = async_nats::ConnectOptions::with_credentials(&issued.creds)?.connect(&server.url).await;
    assert!(after.is_err(), "a revoked credential connected after a restart");
    Ok(())
}


/// What NATS cannot express, the broker checks: a worker reads only artifacts of a job awarded
/// to it, a researcher only its own jobs'.
#[tokio::test]
async fn artifacts_are_read_only_by_their_job_and_its_awarded_worker() -> Result<()> {
    use common::{requirements, Script, ScriptedWorker};
    use helium_protocol::{artifacts::{ArtifactChunk, ReadArtifact}, job::JobState};
    let grid = Grid::start().await?;
    grid.grant("alice", 5 * CREDIT).await?;
    let _w1 = ScriptedWorker::with_script(&grid, "w1", "owner-1", CREDIT, 36.0, 8, Script::Idle).await?;
    let job = grid.submit("alice", requirements(2 * CREDIT, CREDIT), 16).await?;
    grid.wait_state("alice", &job.job_id, JobState::Running).await?;
    let read = |name: &str| ReadArtifact { v: PROTOCOL_VERSION, job_id: job.job_id.clone(), name: name.into(), offset: 0, len: 16 };
    let as_worker = |id: &'static str| {
        let role = Role::Worker { owner: "owner-2".into() };
        let nats = &grid.nats;
        async move { nats.connect_as(&role, id).await }
    };
    let worker_read = |client: async_nats::Client, body: ReadArtifact, id: &'static str| async move {
        let reply = client.request(subjects::worker(id, worker::ARTIFACT_READ), encode(&body).into()).await?;
        anyhow::Ok(decode::<Reply<ArtifactChunk>>(&reply.payload)?.into_result())
    };
    // The awarded worker reads the model and the data; another worker reads neither.
    for name in ["model", "data"] {
        let mine = worker_read(as_worker("w1").await?, read(name), "w1").await?;
        assert!(mine.is_ok(), "the awarded worker could not read {name}: {mine:?}");
        let theirs = worker_read(as_worker("w2").await?, read(name), "w2").await?;
        let err = theirs.expect_err("a worker read an artifact of a job not awarded to it");
        assert!(matches!(err.code, ErrorCode::Unauthorized | ErrorCode::NotFound), "{err}");
    }
    // The researcher reads its own job's artifacts; another researcher does not see the job.
    let own: Result<ArtifactChunk> = grid.request("alice", verbs::ARTIFACT_READ, &read("model")).await;
    assert!(own.is_ok(), "{own:?}");
    let other: Result<ArtifactChunk> = grid.request("mallory", verbs::ARTIFACT_READ, &read("model")).await;
    assert!(other.expect_err("mallory read alice's model").to_string().contains("NotFound"));
    Ok(())
}

/// A worker reports only for its own award: a run event it publishes (on its own subject, all
/// nats-server lets it) about another worker's job is refused by the broker.
#[tokio::test]
async fn a_worker_cannot_report_for_another_workers_job() -> Result<()> {
    use common::{requirements, Script, ScriptedWorker};
    use helium_protocol::{
        job::JobState,
        worker::{RunEvent, RunEventKind},
    };
    let grid = Grid::start().await?;
    grid.grant("alice", 5 * CREDIT).await?;
    let _w1 = ScriptedWorker::with_script(&grid, "w1", "owner-1", CREDIT, 36.0, 8, Script::Idle).await?;
    let job = grid.submit("alice", requirements(2 * CREDIT, CREDIT), 16).await?;
    grid.wait_state("alice", &job.job_id, JobState::Running).await?;
    let w2 = grid.nats.connect_as(&Role::Worker { owner: "mallory".into() }, "w2").await?;
    let forged = RunEvent {
        v: PROTOCOL_VERSION,
        job_id: job.job_id.clone(),
        award_id: format!("{}-1", job.job_id),
        kind: RunEventKind::Failed { reason: "forged".into(), worker_fault: false },
    };
    let js = async_nats::jetstream::new(w2);
    let ack = js.publish(subjects::worker("w2", worker::RUN_EVENT), encode(&forged).into()).await?.await?;
    // The broker has handled it once its durable consumer's ack floor passes it.
    let broker_js = async_nats::jetstream::new(grid.client.clone());
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        broker_js.get_stream(streams::RUNS).await?.get_consumer(streams::RUNS_CONSUMER).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let handled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if consumer.info().await?.ack_floor.stream_sequence >= ack.sequence {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(matches!(handled, Ok(Ok(()))), "the broker never handled the forged event");
    let view = grid.job("alice", verbs::JOB_STATUS, &job.job_id).await?;
    assert_eq!(view.state, JobState::Running, "a forged failure moved alice's job");
    Ok(())
}

/// nats-server lets a requester name any reply subject; the broker answers only into the
/// caller's own inbox, so a request cannot make the broker write to the journal for it.
#[tokio::test]
async fn the_broker_answers_only_into_the_callers_inbox() -> Result<()> {
    let grid = Grid::start().await?;
    let mallory = grid.nats.connect_as(&researcher(), "mallory").await?;
    let balance = subjects::api("mallory", verbs::ACCOUNT_BALANCE);
    let body = encode(&Empty { v: PROTOCOL_VERSION });
    for reply in [streams::LEDGER_SUBJECT.to_string(), format!("$KV.{}.j1", streams::JOBS_BUCKET), "_INBOX.p.bob.x".into()] {
        mallory.publish_with_reply(balance.clone(), reply, body.clone().into()).await?;
    }
    // Requests are taken in order: once later ones are answered, the forged ones were handled.
    for _ in 0..3 {
        let answer: Reply<helium_protocol::api::Balance> = decode(&mallory.request(balance.clone(), body.clone().into()).await?.payload)?;
        assert!(answer.into_result().is_ok());
    }
    let js = async_nats::jetstream::new(grid.client.clone());
    assert_eq!(js.get_stream(streams::LEDGER).await?.info().await?.state.messages, 0, "the broker wrote its answer into the journal");
    let bucket = js.get_key_value(streams::JOBS_BUCKET).await?;
    assert!(bucket.get("j1").await?.is_none(), "the broker wrote its answer into the job bucket");
    Ok(())
}

/// A researcher's connection holds at most `RESEARCHER_MAX_SUBS` subscriptions: nats-server
/// refuses the next one (its JWT's `subs`), so a credential cannot exhaust the server with them.
#[tokio::test]
async fn a_researcher_over_its_subscription_cap_is_refused() -> Result<()> {
    use helium_protocol::limits::RESEARCHER_MAX_SUBS;
    let server = NatsServer::start()?;
    let (alice, mut events) = server.connect_watched(&researcher(), "alice").await?;
    let mut subs = Vec::new();
    for i in 0..RESEARCHER_MAX_SUBS {
        subs.push(alice.subscribe(format!("_INBOX.p.alice.s{i}")).await?);
    }
    alice.flush().await?;
    let early = events.received();
    assert!(!early.iter().any(|e| e.to_lowercase().contains("maximum subscriptions")), "refused under the cap: {early:?}");
    let _over = alice.subscribe("_INBOX.p.alice.over".to_string()).await?;
    events.expect("maximum subscriptions exceeded").await?;
    // The broker's credential is not capped so (beyond the account's per-connection ceiling).
    let broker = server.connect().await?;
    let mut many = Vec::new();
    for i in 0..RESEARCHER_MAX_SUBS + 1 {
        many.push(broker.subscribe(format!("x.{i}")).await?);
    }
    broker.flush().await?;
    Ok(())
}

/// A principal's message is at most an artifact chunk at its largest with its envelope, even
/// on a server that takes larger ones; the broker's may be as large as the server's.
#[tokio::test]
async fn a_principals_message_over_the_largest_chunk_is_refused() -> Result<()> {
    use helium_protocol::limits::PRINCIPAL_MAX_PAYLOAD_BYTES;
    let server = NatsServer::start_with_max_payload(8 * 1024 * 1024)?;
    let cap = PRINCIPAL_MAX_PAYLOAD_BYTES as usize;
    let broker = server.connect().await?;
    broker.publish("anything", vec![0u8; 6 * 1024 * 1024].into()).await?;
    broker.flush().await?;
    let subject = subjects::api("alice", verbs::ARTIFACT_CHUNK);
    let (alice, mut events) = server.connect_watched(&researcher(), "alice").await?;
    alice.publish(subject.clone(), vec![0u8; cap].into()).await?;
    alice.flush().await?;
    let early = events.received();
    assert!(!early.iter().any(|e| e.to_lowercase().contains("payload")), "a full chunk was refused: {early:?}");
    alice.publish(subject, vec![0u8; cap + 1].into()).await?;
    // The server answers `-ERR 'Maximum Payload Violation'` and closes the connection; the
    // error may be lost with the socket, the disconnection is not.
    let mut refused = false;
    for _ in 0..8 {
        let Ok(e) = events.expect("").await else { break };
        let e = e.to_lowercase();
        if e.contains("maximum payload") || e.contains("disconnected") {
            refused = true;
            break;
        }
    }
    assert!(refused, "a message over the largest chunk was taken");
    Ok(())
}

/// Issued to expire in the past: refused at connect. (async-nats may report the handshake
/// done and the refusal as an event.)
async fn refused_at_connect(server: &NatsServer, creds: &str) -> Result<bool> {
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let connected = async_nats::ConnectOptions::with_credentials(creds)?
        .custom_inbox_prefix("_INBOX.p.alice")
        .max_reconnects(Some(1))
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(&server.url)
        .await;
    let Ok(client) = connected else { return Ok(true) };
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.recv().await {
            let e = e.to_lowercase();
            if e.contains("authorization") || e.contains("expired") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    drop(client);
    Ok(refused)
}

#[tokio::test]
async fn an_expired_credential_is_refused_at_connect_and_dropped_when_it_expires() -> Result<()> {
    let server = NatsServer::start()?;
    let t = now();
    let expired = server.authority.issue_until(&researcher(), "alice", t - 100, Some(t - 1))?;
    assert!(refused_at_connect(&server, &expired.creds).await?, "an expired credential connected");
    // One that expires in 2 s works until then, and its connection is dropped then.
    let brief = server.authority.issue_until(&researcher(), "alice", t, Some(t + 2))?;
    let (alice, mut events) = server.connect_issued_watched(&brief, &researcher(), "alice").await?;
    alice.flush().await?;
    let mut dropped = false;
    for _ in 0..8 {
        let Ok(e) = events.expect("").await else { break };
        let e = e.to_lowercase();
        if e.contains("expired") || e.contains("disconnected") {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the connection outlived its credential");
    Ok(())
}

#[tokio::test]
async fn a_worker_presenting_an_expired_credential_is_refused() -> Result<()> {
    let grid = Grid::start().await?;
    let role = Role::Worker { owner: "owner-1".into() };
    let live = grid.nats.authority.issue(&role, "w1", now())?;
    let w1 = grid.nats.connect_issued(&live, &role, "w1").await?;
    let t = now();
    let expired = grid.nats.authority.issue_until(&role, "w1", t - 100, Some(t - 1))?;
    match register(&w1, "w1", "owner-1", expired.jwt).await?.into_result() {
        Err(e) => assert!(e.code == ErrorCode::Unauthorized && e.message.contains("expired"), "{e}"),
        Ok(_) => panic!("a worker registered with an expired credential"),
    }
    register(&w1, "w1", "owner-1", live.jwt).await?.into_result().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// A worker id live under one owner cannot be registered by another owner's credential for the
/// same id (say, issued from another key directory): the two would be one worker to the grid.
#[tokio::test]
async fn a_live_worker_id_is_not_taken_by_another_owner() -> Result<()> {
    use common::{Script, ScriptedWorker};
    let grid = Grid::start().await?;
    let _w1 = ScriptedWorker::with_script(&grid, "w1", "owner-1", CREDIT, 36.0, 8, Script::Idle).await?;
    let theirs = Role::Worker { owner: "mallory".into() };
    let cred = grid.nats.authority.issue(&theirs, "w1", now())?;
    let impostor = grid.nats.connect_issued(&cred, &theirs, "w1").await?;
    match register(&impostor, "w1", "mallory", cred.jwt).await?.into_result() {
        Err(e) => assert!(e.code == ErrorCode::Unauthorized && e.message.contains("registered to owner-1"), "{e}"),
        Ok(_) => panic!("another owner took a live worker's id"),
    }
    let workers: helium_protocol::api::WorkerList = grid.request("alice", verbs::WORKER_LIST, &Empty { v: PROTOCOL_VERSION }).await?;
    let w = workers.workers.iter().find(|w| w.worker_id == "w1").expect("w1 listed");
    assert_eq!(w.owner, "owner-1");
    Ok(())
}

/// A credential answers a request it received once, and only within its response TTL (here a
/// credential issued with a TTL of 1 s; the grid's is `RESPONSE_TTL_SECS`): nats-server reads
/// the JWT's `resp` as this code writes it.
#[tokio::test]
async fn a_request_is_answered_once_and_only_within_the_response_ttl() -> Result<()> {
    use futures::StreamExt;
    use helium_protocol::auth::{permissions, Responses};
    let server = NatsServer::start()?;
    let role = Role::Worker { owner: "owner-1".into() };
    let mut p = permissions(&role, "w1");
    p.responses = Some(Responses { max: 1, ttl: Duration::from_secs(1) });
    let issued = server.authority.issue_with(&role, "w1", &p, now(), None)?;
    let (w1, mut refused) = server.connect_issued_watched(&issued, &role, "w1").await?;
    let mut dispatch = w1.subscribe(subjects::dispatch("w1", ">")).await?;
    w1.flush().await?;
    let broker = server.connect().await?;
    let mut answers = broker.subscribe("_INBOX.asker.>".to_string()).await?;
    broker.flush().await?;
    let invite = subjects::dispatch("w1", subjects::dispatch::INVITE);
    // Answered at once: the first answer arrives, a second is refused.
    broker.publish_with_reply(invite.clone(), "_INBOX.asker.1", "bid?".into()).await?;
    let reply = next_reply(&mut dispatch).await?;
    w1.publish(reply.clone(), "first".into()).await?;
    w1.publish(reply.clone(), "second".into()).await?;
    refused.expect(&format!("violation for publish to \"{reply}\"")).await?;
    let first = tokio::time::timeout(Duration::from_secs(5), answers.next()).await?.expect("an answer");
    assert_eq!(&first.payload[..], b"first");
    // Answered after the TTL: refused.
    broker.publish_with_reply(invite, "_INBOX.asker.2", "bid?".into()).await?;
    let reply = next_reply(&mut dispatch).await?;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    w1.publish(reply.clone(), "late".into()).await?;
    refused.expect(&format!("violation for publish to \"{reply}\"")).await?;
    Ok(())
}

/// The reply subject of the next request `requests` receives.
async fn next_reply(requests: &mut async_nats::Subscriber) -> Result<String> {
    use futures::StreamExt;
    let asked = tokio::time::timeout(Duration::from_secs(5), requests.next()).await?;
    let reply = asked.and_then(|m| m.reply).ok_or_else(|| anyhow::anyhow!("no request with a reply subject"))?;
    Ok(reply.to_string())
}

/// Operators watch the broker's run-event consumer, but read no researcher's `job.follow`
/// consumer (its info names the researcher's inbox), nor the consumer list.
#[tokio::test]
async fn an_operator_reads_the_brokers_consumer_but_no_researchers() -> Result<()> {
    let grid = Grid::start().await?;
    let (ops, mut refused) = grid.nats.connect_watched(&Role::Operator, "ops").await?;
    let runs = format!("$JS.API.CONSUMER.INFO.{}.{}", streams::RUNS, streams::RUNS_CONSUMER);
    let info: serde_json::Value = serde_json::from_slice(&ops.request(runs, "".into()).await?.payload)?;
    assert_eq!(info["name"], streams::RUNS_CONSUMER, "{info}");
    for subject in [
        format!("$JS.API.CONSUMER.INFO.{}.some-follow", streams::EVENTS),
        format!("$JS.API.CONSUMER.LIST.{}", streams::EVENTS),
    ] {
        ops.publish(subject.clone(), "".into()).await?;
        refused.expect(&format!("violation for publish to \"{subject}\"")).await?;
    }
    Ok(())
}

/// `helium ledger` reads the journal with an operator's credential: the stream's get API
/// answers it, but it cannot append to the journal, delete or purge the stream, nor create a
/// consumer on it (whose deliver subject could point anywhere). A researcher cannot read it.
#[tokio::test]
async fn an_operator_reads_the_journal_and_cannot_write_it() -> Result<()> {
    let grid = Grid::start().await?;
    grid.grant("alice", 5 * CREDIT).await?;
    let get = format!("$JS.API.STREAM.MSG.GET.{}", streams::LEDGER);
    let (ops, mut refused) = grid.nats.connect_watched(&Role::Operator, "ops").await?;
    let answer: serde_json::Value = serde_json::from_slice(&ops.request(get.clone(), r#"{"seq":1}"#.into()).await?.payload)?;
    assert_eq!(answer["message"]["subject"], streams::LEDGER_SUBJECT, "{answer}");
    for subject in [
        streams::LEDGER_SUBJECT.to_string(),
        format!("$JS.API.STREAM.PURGE.{}", streams::LEDGER),
        format!("$JS.API.STREAM.DELETE.{}", streams::LEDGER),
        format!("$JS.API.STREAM.MSG.DELETE.{}", streams::LEDGER),
        format!("$JS.API.STREAM.UPDATE.{}", streams::LEDGER),
        format!("$JS.API.CONSUMER.CREATE.{}", streams::LEDGER),
        format!("$JS.API.CONSUMER.CREATE.{}.audit.{}", streams::LEDGER, streams::LEDGER_SUBJECT),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{}.audit", streams::LEDGER),
    ] {
        ops.publish(subject.clone(), "{}".into()).await?;
        refused.expect(&format!("violation for publish to \"{subject}\"")).await?;
    }
    let (alice, mut refused) = grid.nats.connect_watched(&researcher(), "alice").await?;
    alice.publish(get.clone(), r#"{"seq":1}"#.into()).await?;
    refused.expect(&format!("violation for publish to \"{get}\"")).await?;
    let js = async_nats::jetstream::new(grid.client.clone());
    let state = js.get_stream(streams::LEDGER).await?.info().await?.state.clone();
    assert_eq!((state.messages, state.consumer_count), (1, 0), "the journal changed");
    Ok(())
}

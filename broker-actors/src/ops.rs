//! What the operator's `helium workers` and `helium jobs` show, and how they ask for it: the
//! workers through the `worker.list` API verb (which any principal may call, under its own
//! name), the jobs across every principal from the job bucket ([`crate::ledger::reader::jobs`],
//! gets an operator's credential may make). Both read only. The tables are pure functions of
//! the wire views, so they are tested without a grid.

use std::path::Path;

use helium_protocol::{
    api::{Empty, JobView, WorkerList, WorkerView},
    decode, encode,
    limits::MICRO_PER_CREDIT,
    subjects::{self, api},
    Reply, PROTOCOL_VERSION,
};
use serde::Serialize;

use crate::ledger::{audit::credits, reader::ReadError};

/// How long `helium workers` waits for the broker's answer.
const REQUEST_SECS: u64 = 30;

/// The principal a `.creds` file is for (its API subjects carry that name).
pub fn principal_of(creds: &Path) -> Result<String, ReadError> {
    let bad = |e: &dyn std::fmt::Display| ReadError::Creds(creds.display().to_string(), e.to_string());
    let text = std::fs::read_to_string(creds).map_err(|e| bad(&e))?;
    let (name, _role, _inbox) = helium_protocol::auth::identity(&text).map_err(|e| bad(&e))?;
    Ok(name)
}

/// The grid's workers, as `worker.list` answers `principal` (the caller's own name).
pub async fn workers(client: &async_nats::Client, principal: &str) -> Result<Vec<WorkerView>, ReadError> {
    let error = |e: &dyn std::fmt::Display| ReadError::Read(api::WORKER_LIST, e.to_string());
    let request = client.request(
        subjects::api(principal, api::WORKER_LIST),
        encode(&Empty { v: PROTOCOL_VERSION }).into(),
    );
    let message = tokio::time::timeout(std::time::Duration::from_secs(REQUEST_SECS), request)
        .await
        .map_err(|_| error(&format!("no answer in {REQUEST_SECS} s")))?
        .map_err(|e| error(&e))?;
    let list = decode::<Reply<WorkerList>>(&message.payload)
        .and_then(Reply::into_result)
        .map_err(|e| error(&e))?;
    Ok(list.workers)
}

/// A wire enum's name as it is spelled on the wire (`running`, `cpu`).
fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

fn optional(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// Lays out `rows` under `header`, each column as wide as its widest cell, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    out.join("\n")
}

/// `helium workers`: one line per worker.
pub fn workers_table(workers: &[WorkerView]) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.worker_id.clone(),
                w.owner.clone(),
                format!("{} {}", wire_name(&w.device), w.device_name),
                format!("{:.1} GiB", w.memory_bytes as f64 / f64::from(1u32 << 30)),
                credits(i128::from(w.price_per_hour)),
                format!("{:.3e}", w.throughput),
                optional(w.busy_with.as_deref()).to_string(),
                if w.alive { "yes" } else { "no" }.to_string(),
                format!("{:.2} ({}/{})", w.reputation, w.completed, w.failed),
                optional(w.paused.as_deref()).to_string(),
            ]
        })
        .collect();
    let header = [
        "WORKER",
        "OWNER",
        "DEVICE",
        "MEMORY",
        "PRICE/H",
        "THROUGHPUT",
        "BUSY_WITH",
        "ALIVE",
        "REPUTATION (DONE/ABANDONED)",
        "PAUSED",
    ];
    table(&header, &rows)
}

/// `helium jobs`: one line per job.
pub fn jobs_table(jobs: &[JobView]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.job_id.clone(),
                j.principal.clone(),
                optional(j.name.as_deref()).to_string(),
                wire_name(&j.state),
                optional(j.reason_code.as_deref()).to_string(),
                optional(j.worker.as_deref()).to_string(),
                j.price.map_or("-".to_string(), |p| credits(i128::from(p))),
                credits(i128::from(j.paid)),
                format!("{}/{}", j.epochs_done, j.epochs),
            ]
        })
        .collect();
    let header = [
        "JOB",
        "PRINCIPAL",
        "NAME",
        "STATE",
        "REASON",
        "WORKER",
        "PRICE",
        "PAID",
        "EPOCHS",
    ];
    table(&header, &rows)
}

/// One worker as `helium workers --json` prints it: the wire view, with the price also in
/// credits.
#[derive(Debug, Serialize)]
pub struct WorkerRow<'a> {
    #[serde(flatten)]
    pub view: &'a WorkerView,
    pub price_per_hour_credits: f64,
}

impl<'a> From<&'a WorkerView> for WorkerRow<'a> {
    fn from(view: &'a WorkerView) -> Self {
        Self {
            view,
            price_per_hour_credits: view.price_per_hour as f64 / MICRO_PER_CREDIT as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helium_protocol::job::JobState;

    /// A worker view read from the wire, so fields added to `WorkerView` later take their
    /// defaults.
    fn worker(id: &str, busy: Option<&str>) -> WorkerView {
        let map = serde_json::json!({
            "worker_id": id, "owner": "gpu-owner", "device": "cpu", "device_name": "cpu",
            "memory_bytes": 16u64 << 30, "price_per_hour": 1_500_000, "throughput": 1e9,
            "busy_with": busy, "alive": true,
        });
        rmp_serde::from_slice(&encode(&map)).expect("a WorkerView")
    }

    #[test]
    fn the_workers_table_has_a_line_per_worker_under_aligned_columns() {
        let text = workers_table(&[worker("w1", None), worker("w-long-name", Some("job-1"))]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("WORKER       OWNER"), "{text}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "w1",
                "gpu-owner",
                "cpu",
                "cpu",
                "16.0",
                "GiB",
                "1.500000",
                "1.000e9",
                "-",
                "yes",
                "1.00",
                "(0/0)",
                "-"
            ]
        );
        assert!(lines[2].contains("job-1"));
        // Columns line up: the owner starts at the same place on every line.
        let at: Vec<usize> = lines
            .iter()
            .map(|l| l.find("OWNER").or(l.find("gpu-owner")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] == w[1]), "{text}");
    }

    #[test]
    fn the_jobs_table_shows_state_reason_money_and_epochs() {
        let job = JobView {
            job_id: "j1".into(),
            principal: "alice".into(),
            name: Some("digits".into()),
            state: JobState::Queued,
            reason: Some("waiting: no idle worker".into()),
            reason_code: Some("no_worker".into()),
            worker: None,
            price: Some(2_500_000),
            paid: 1_000_000,
            epochs: 10,
            epochs_done: 4,
            last_loss: None,
            result: None,
            created_ms: 0,
            updated_ms: 0,
        };
        let text = jobs_table(&[job]);
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "j1",
                "alice",
                "digits",
                "queued",
                "no_worker",
                "-",
                "2.500000",
                "1.000000",
                "4/10"
            ]
        );
    }
}

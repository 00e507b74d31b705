//! Fuzzing the trainer child's event lines as the agent reads them (see
//! `helium_test_support::fuzz`; docs/ARCHITECTURE.md §10): [`report::read_line`] splits any
//! byte stream into bounded lines and never stops at bad bytes, [`report::parse_line`] never
//! panics, and an event parses back from the line the child writes for it.

use helium_test_support::fuzz::{bytes, mutated, one_of, CountingAlloc, Target, JSON_TOKENS};
use helium_worker_actors::trainer::report::{self, Line, TrainerEvent, MAX_LINE_BYTES};
use proptest::{collection::vec, option, prelude::*};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn target(name: &'static str, cases: u32) -> Target {
    Target::new(env!("CARGO_MANIFEST_DIR"), env!("CARGO_TARGET_TMPDIR"), name, cases)
}

fn num() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(f64::MAX)]
}

fn event() -> impl Strategy<Value = TrainerEvent> {
    let text = prop_oneof![".{0,12}", Just("../../etc/passwd".to_string()), Just("checkpoints/../../x".to_string())];
    prop_oneof![
        (text.clone(), any::<u64>(), any::<u64>()).prop_map(|(device, parameters, samples)| TrainerEvent::Started { device, parameters, samples }),
        (any::<u32>(), any::<u32>(), any::<u64>(), num(), num(), option::of(num()), option::of(num())).prop_map(
            |(epoch, epochs, step, loss, samples_per_sec, val_loss, val_accuracy)| TrainerEvent::Progress {
                epoch,
                epochs,
                step,
                loss,
                samples_per_sec,
                val_loss,
                val_accuracy,
            }
        ),
        (any::<u64>(), any::<u32>()).prop_map(|(step, epoch)| TrainerEvent::Checkpoint { step, epoch }),
        Just(TrainerEvent::Completed {}),
        text.prop_map(|reason| TrainerEvent::Failed { reason }),
    ]
}

/// The line the child writes for `event` (what `TrainerEvent::emit` prints, less the `\n`).
fn line_of(event: &TrainerEvent) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_default()
}

/// What the agent reads back from the line of `event`: JSON has no NaN or infinity, so a
/// non-finite metric is written as `null`; an optional one then reads as absent, and a
/// `progress` line with a `null` loss is no event (the trainer fails the run on a non-finite
/// loss before it would print one).
fn expected(event: &TrainerEvent) -> Option<TrainerEvent> {
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    match event.clone() {
        TrainerEvent::Progress { loss, samples_per_sec, .. } if !loss.is_finite() || !samples_per_sec.is_finite() => None,
        TrainerEvent::Progress { epoch, epochs, step, loss, samples_per_sec, val_loss, val_accuracy } => Some(TrainerEvent::Progress {
            epoch,
            epochs,
            step,
            loss,
            samples_per_sec,
            val_loss: finite(val_loss),
            val_accuracy: finite(val_accuracy),
        }),
        other => Some(other),
    }
}

/// Equal, metrics up to a relative 1e-14: serde_json (without `float_roundtrip`) may parse a
/// float a few units in the last place off the one printed.
fn same(a: &TrainerEvent, b: &TrainerEvent) -> bool {
    let close = |x: f64, y: f64| x == y || (x - y).abs() <= 1e-14 * x.abs().max(y.abs()).max(f64::MIN_POSITIVE);
    let close_opt = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => close(x, y),
        (x, y) => x.is_none() && y.is_none(),
    };
    match (a, b) {
        (
            TrainerEvent::Progress { epoch, epochs, step, loss, samples_per_sec, val_loss, val_accuracy },
            TrainerEvent::Progress { epoch: e2, epochs: es2, step: s2, loss: l2, samples_per_sec: r2, val_loss: v2, val_accuracy: a2 },
        ) => {
            (epoch, epochs, step) == (e2, es2, s2)
                && close(*loss, *l2)
                && close(*samples_per_sec, *r2)
                && close_opt(*val_loss, *v2)
                && close_opt(*val_accuracy, *a2)
        }
        (a, b) => a == b,
    }
}

fn reads_back(event: &TrainerEvent) -> Result<(), String> {
    let back = report::parse_line(&String::from_utf8_lossy(&line_of(event)));
    match (expected(event), &back) {
        (Some(want), Some(got)) if same(&want, got) => Ok(()),
        (None, None) => Ok(()),
        (want, got) => Err(format!("{event:?} should read back as {want:?}, reads as {got:?}")),
    }
}

#[test]
fn fuzz_event_lines() {
    let t = target("event_lines", 20_000);
    let lines = event().prop_map(|e| line_of(&e));
    let strategy = prop_oneof![
        1 => bytes(64),
        1 => event().prop_map(|e| line_of(&e)),
        6 => mutated(prop_oneof![lines, one_of(t.seeds())], JSON_TOKENS),
    ];
    t.run(strategy, |input| {
        let line = String::from_utf8_lossy(input);
        // Whatever parses is an event that survives its own line.
        match report::parse_line(&line) {
            Some(event) => reads_back(&event),
            None => Ok(()),
        }
    });
}

/// Every event the child can report reaches the agent as itself (see [`expected`]).
#[test]
fn fuzz_event_round_trips() {
    let t = target("event_lines", 5_000);
    t.run_values(event().prop_map(Event), |Event(e)| reads_back(e));
}

#[derive(Debug, Clone)]
struct Event(TrainerEvent);

impl AsRef<[u8]> for Event {
    fn as_ref(&self) -> &[u8] {
        &[]
    }
}

/// The child's whole stdout, as `read_line` cuts it: each line back exactly (up to invalid
/// UTF-8), overlong lines reported and skipped, the heap bounded by the limit and not by
/// the stream.
#[test]
fn fuzz_stdout_stream() {
    let t = target("stdout_stream", 1_000).alloc_bound(8, 4 * MAX_LINE_BYTES);
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let piece = prop_oneof![
        12 => bytes(24),
        6 => event().prop_map(|e| line_of(&e)),
        3 => Just(b"\n".to_vec()),
        3 => Just(vec![0xff, 0xfe, b'\n']),
        1 => (MAX_LINE_BYTES - 2..MAX_LINE_BYTES + 3).prop_map(|n| vec![b'x'; n]),
    ];
    let strategy = vec(piece, 0..12).prop_map(|p| p.concat());
    t.run(strategy, |input| {
        let got = rt.block_on(async {
            // A small buffer, so lines arrive in many pieces, as from a pipe.
            let mut reader = tokio::io::BufReader::with_capacity(7, input);
            let mut got = Vec::new();
            while let Some(line) = report::read_line(&mut reader).await.map_err(|e| e.to_string())? {
                got.push(line);
            }
            Ok::<_, String>(got)
        })?;
        let mut want: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if want.last().is_some_and(|l| l.is_empty()) {
            want.pop();
        }
        if got.len() != want.len() {
            return Err(format!("{} lines read, {} in the stream", got.len(), want.len()));
        }
        for (g, w) in got.iter().zip(want) {
            let expected = if w.len() > MAX_LINE_BYTES {
                Line::TooLong(w.len() as u64)
            } else {
                Line::Text(String::from_utf8_lossy(w).into_owned())
            };
            if *g != expected {
                return Err(format!("read {g:?}, the stream has {} bytes", w.len()));
            }
        }
        Ok(())
    });
}

/// A child printing one endless line costs the agent at most the line bound.
#[test]
fn an_endless_line_is_skipped_in_bounded_memory() {
    use tokio::io::AsyncReadExt;
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let flood = 64u64 << 20;
    let (lines, peak) = helium_test_support::fuzz::peak_bytes(|| {
        rt.block_on(async {
            let stream = tokio::io::repeat(b'x').take(flood).chain(&b"\n{\"event\":\"completed\"}\n"[..]);
            let mut reader = tokio::io::BufReader::new(stream);
            let mut lines = Vec::new();
            while let Some(line) = report::read_line(&mut reader).await.expect("read") {
                lines.push(line);
            }
            lines
        })
    });
    assert_eq!(lines, [Line::TooLong(flood), Line::Text(r#"{"event":"completed"}"#.into())]);
    assert!(peak < 2 * MAX_LINE_BYTES + (64 << 10), "held {peak} bytes");
}

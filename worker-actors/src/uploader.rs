//! The checkpoint uploader of one run: checkpoints go to the broker in a task of their own, so
//! neither the trainer nor the run's reporting waits for hashing or the network.
//!
//! Guarantees:
//! - at most one upload is in flight, and at most one checkpoint waits behind it: a newer
//!   checkpoint supersedes a waiting one, whose file is deleted at once. Disk use and memory
//!   stay bounded (two checkpoint files, one chunk buffer) however fast the trainer checkpoints
//!   and however slow the link is;
//! - checkpoints are uploaded in the order they were taken (the steps only grow), and each
//!   file is deleted once its upload ended, uploaded or not;
//! - every upload's outcome is reported through the `done` callback, in order.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use helium_protocol::artifacts::ArtifactInfo;
use tokio::{sync::Notify, task::JoinHandle};

/// A checkpoint on disk, waiting to be uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub step: u64,
    /// Epochs complete at `step`.
    pub epoch: u32,
    /// Relative to the uploader's job directory; reached (and deleted) only through
    /// [`crate::jobfs`], so a link the trainer planted leads nowhere outside it.
    pub path: PathBuf,
}

/// The outcome of one checkpoint's upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Uploaded {
    pub step: u64,
    pub epoch: u32,
    pub result: Result<ArtifactInfo, String>,
}

#[derive(Default)]
struct Shared {
    waiting: Option<Pending>,
    closed: bool,
    /// Checkpoints dropped unsent because a newer one came.
    superseded: u64,
}

pub struct Uploader {
    root: PathBuf,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Uploader {
    /// Starts the upload task for checkpoints under `root`: `upload(&pending)` sends one
    /// checkpoint, `done` hears of each.
    pub fn spawn<U, Fut, D>(root: PathBuf, upload: U, done: D) -> Self
    where
        U: Fn(Pending) -> Fut + Send + 'static,
        Fut: Future<Output = Result<ArtifactInfo, String>> + Send,
        D: Fn(Uploaded) + Send + 'static,
    {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn({
            let (shared, wake, root) = (shared.clone(), wake.clone(), root.clone());
            async move {
                loop {
                    let next = {
                        let mut s = lock(&shared);
                        match s.waiting.take() {
                            Some(p) => Some(p),
                            None if s.closed => return,
                            None => None,
                        }
                    };
                    let Some(pending) = next else {
                        wake.notified().await;
                        continue;
                    };
                    let (step, epoch, path) = (pending.step, pending.epoch, pending.path.clone());
                    let result = upload(pending).await;
                    let _ = crate::jobfs::remove(&root, &path);
                    done(Uploaded { step, epoch, result });
                }
            }
        });
        Self { root, shared, wake, task }
    }

    /// Queues `pending` behind the upload in flight, superseding (and deleting) a checkpoint
    /// still waiting there. Never waits.
    pub fn offer(&self, pending: Pending) {
        let old = {
            let mut s = lock(&self.shared);
            if s.closed {
                Some(pending)
            } else {
                let old = s.waiting.replace(pending);
                s.superseded += u64::from(old.is_some());
                old
            }
        };
        if let Some(old) = old {
            tracing::debug!(step = old.step, "checkpoint superseded before it was sent");
            let _ = crate::jobfs::remove(&self.root, &old.path);
        }
        self.wake.notify_one();
    }

    /// How many checkpoints were dropped unsent so far.
    pub fn superseded(&self) -> u64 {
        lock(&self.shared).superseded
    }

    /// Drops a waiting checkpoint (the result supersedes it) and waits for the upload in
    /// flight, if any, to end.
    pub async fn finish(self) {
        let waiting = {
            let mut s = lock(&self.shared);
            s.closed = true;
            s.waiting.take()
        };
        if let Some(p) = waiting {
            let _ = crate::jobfs::remove(&self.root, &p.path);
        }
        self.wake.notify_one();
        let _ = self.task.await;
    }

    /// Stops at once, abandoning an upload in flight (the run is over).
    pub fn abort(&self) {
        lock(&self.shared).closed = true;
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::{mpsc, Semaphore};

    fn info(step: u64) -> ArtifactInfo {
        ArtifactInfo {
            name: format!("checkpoints/{step}"),
            size: step,
            sha256: "00".repeat(32),
        }
    }

    fn checkpoint(dir: &std::path::Path, step: u64) -> Pending {
        let path = PathBuf::from(format!("{step}.safetensors"));
        std::fs::write(dir.join(&path), vec![0u8; 1024]).unwrap();
        Pending { step, epoch: 0, path }
    }

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    /// An upload gate: each upload waits for a permit, so the test decides when uploads end.
    struct Harness {
        gate: Arc<Semaphore>,
        started: mpsc::UnboundedReceiver<u64>,
        done: mpsc::UnboundedReceiver<Uploaded>,
        uploader: Uploader,
        most_files: Arc<AtomicUsize>,
    }

    fn harness(dir: PathBuf) -> Harness {
        let gate = Arc::new(Semaphore::new(0));
        let (started_tx, started) = mpsc::unbounded_channel();
        let (done_tx, done) = mpsc::unbounded_channel();
        let most_files = Arc::new(AtomicUsize::new(0));
        let uploader = Uploader::spawn(
            dir.clone(),
            {
                let (gate, most_files) = (gate.clone(), most_files.clone());
                move |p: Pending| {
                    let (gate, started_tx, most_files, dir) =
                        (gate.clone(), started_tx.clone(), most_files.clone(), dir.clone());
                    async move {
                        assert!(dir.join(&p.path).exists(), "the file being uploaded was deleted");
                        most_files.fetch_max(files(&dir), Ordering::SeqCst);
                        let _ = started_tx.send(p.step);
                        gate.acquire().await.unwrap().forget();
                        Ok(info(p.step))
                    }
                }
            },
            move |u| {
                let _ = done_tx.send(u);
            },
        );
        Harness {
            gate,
            started,
            done,
            uploader,
            most_files,
        }
    }

    #[tokio::test]
    async fn a_newer_checkpoint_supersedes_one_not_yet_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path().to_owned());
        h.uploader.offer(checkpoint(dir.path(), 10));
        assert_eq!(h.started.recv().await, Some(10)); // 10 is in flight
        let waiting = checkpoint(dir.path(), 20);
        let waiting_path = dir.path().join(&waiting.path);
        h.uploader.offer(waiting);
        h.uploader.offer(checkpoint(dir.path(), 30)); // 20 never goes out
        assert!(
            !waiting_path.exists(),
            "a superseded checkpoint's file is deleted at once"
        );
        assert_eq!(h.uploader.superseded(), 1);
        h.gate.add_permits(1);
        assert_eq!(h.started.recv().await, Some(30));
        h.gate.add_permits(1);
        let first = h.done.recv().await.unwrap();
        let second = h.done.recv().await.unwrap();
        assert_eq!((first.step, second.step), (10, 30));
        assert_eq!(second.result, Ok(info(30)));
        h.uploader.finish().await;
        assert_eq!(files(dir.path()), 0, "every file is deleted once its upload ended");
        assert!(h.done.try_recv().is_err(), "20 was never uploaded");
    }

    #[tokio::test]
    async fn disk_use_stays_bounded_however_fast_checkpoints_come() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path().to_owned());
        h.uploader.offer(checkpoint(dir.path(), 1));
        assert_eq!(h.started.recv().await, Some(1));
        for step in 2..=500 {
            h.uploader.offer(checkpoint(dir.path(), step));
            assert!(files(dir.path()) <= 2, "in flight + one waiting, at step {step}");
        }
        assert_eq!(h.uploader.superseded(), 498);
        h.gate.add_permits(2);
        assert_eq!(h.started.recv().await, Some(500));
        h.uploader.finish().await;
        let steps: Vec<u64> = std::iter::from_fn(|| h.done.try_recv().ok()).map(|u| u.step).collect();
        assert_eq!(steps, vec![1, 500]);
        assert!(h.most_files.load(Ordering::SeqCst) <= 2);
        assert_eq!(files(dir.path()), 0);
    }

    #[tokio::test]
    async fn finish_drops_the_waiting_checkpoint_and_waits_for_the_one_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = harness(dir.path().to_owned());
        h.uploader.offer(checkpoint(dir.path(), 1));
        assert_eq!(h.started.recv().await, Some(1));
        h.uploader.offer(checkpoint(dir.path(), 2));
        let gate = h.gate.clone();
        let finishing = tokio::spawn(h.uploader.finish());
        tokio::task::yield_now().await;
        assert!(!finishing.is_finished(), "finish waits for the upload in flight");
        gate.add_permits(1);
        finishing.await.unwrap();
        let steps: Vec<u64> = std::iter::from_fn(|| h.done.try_recv().ok()).map(|u| u.step).collect();
        assert_eq!(steps, vec![1]);
        assert_eq!(files(dir.path()), 0);
    }
}

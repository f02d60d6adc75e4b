//! The reports spool (`--spool-dir`): what dataplanes handed over, kept on disk until it was delivered.
//!
//! Write side: the Analytics service appends a dataplane batch and acknowledges it only once the frame
//! is written and, with `--spool-fsync batch` (the default), fsynced. Batches arriving together share one
//! fsync (group commit). When the spool holds `--spool-max-bytes`, appends wait: acknowledgements stop,
//! dataplanes keep their records, and only they drop (counted) once their own queues are full. Nothing
//! undelivered is ever deleted to make room. The wait ends as soon as uploads free room for the waiting
//! batch, or when its sender is gone. A batch that could never fit (larger than the whole bound) is
//! refused at once with [`AppendError::TooLarge`]: waiting for it would need the spool to be empty
//! and then overfill it, stalling every dataplane behind one batch (one forged batch used to latch the
//! spool "full").
//!
//! Read side: the uploader reads sealed segments only (the active segment is sealed at the segment size,
//! after the flush interval, or when the spool is full), in order, and advances a cursor after each
//! delivered batch; a segment is deleted once every document in it was delivered (or rejected and kept
//! under `rejected/`). A crash between delivery and cursor update resends: documents keep their `_id`
//! (the request id), so the Elasticsearch side does not count them twice.
//!
//! Directory layout: `*.seg` segments ([`super::segment`]), `cursor`, `rejected/`, and `lock` (flock), so
//! two agents never share a spool.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::segment::{self, Cursor, FrameRef, MAGIC, Problem};
use crate::metrics::Metrics;

/// Largest segment: big enough that files stay few (1 GiB is 256 of them), small enough to read one
/// into memory for upload.
pub const DEFAULT_SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Smallest `--spool-max-bytes` accepted: a few dataplane batches.
pub const MIN_MAX_BYTES: u64 = 64 * 1024;
/// Appends waiting for the writer; each stream has at most one in flight, so this is a bound on streams
/// that can wait without blocking in the channel (more only wait longer).
const APPEND_QUEUE: usize = 64;
/// Frames written under one fsync at most.
const MAX_GROUP: usize = 64;

/// When acknowledged batches reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// fsync before acknowledging (batches arriving together share one): survives a power loss.
    Batch,
    /// Written to the OS before acknowledging, never fsynced: survives a killed agent, not a host crash.
    Never,
}

#[derive(Debug, Clone)]
pub struct SpoolOptions {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub fsync: Fsync,
    /// The active segment is sealed (made uploadable) once its first frame is this old.
    pub roll_after: Duration,
}

impl SpoolOptions {
    /// Segments are at most a quarter of the spool, so uploads free space well before it is all used.
    pub fn segment_bytes(&self) -> u64 {
        DEFAULT_SEGMENT_BYTES.min(self.max_bytes / 4).max(4096)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {dir}: {source}")]
    Io { dir: String, source: io::Error },
    #[error("spool {dir} is in use by another agent (its `lock` is held): give each agent its own --spool-dir")]
    Locked { dir: String },
}

/// The writer has stopped (shutdown) or could not write: the batch is not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the reports spool is shutting down")]
    Closed,
    #[error("the reports spool cannot write: {0}")]
    Io(String),
    #[error("a batch of {bytes} bytes can never fit the reports spool (--spool-max-bytes {max}); refused")]
    TooLarge { bytes: u64, max: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sealed {
    id: u64,
    len: u64,
}

/// What both sides share: the segments waiting for upload and the sizes behind the gauges.
#[derive(Debug, Default)]
struct Ledger {
    sealed: VecDeque<Sealed>,
    active_len: u64,
    /// Bytes of every segment file (sealed and active): what `--spool-max-bytes` bounds.
    bytes: u64,
    /// Documents written and not yet delivered.
    records: u64,
    /// True while appends wait for space (acknowledgements stopped).
    full: bool,
}

impl Ledger {
    fn has_frames(&self) -> bool {
        !self.sealed.is_empty() || self.active_len > MAGIC.len() as u64
    }
}

#[derive(Debug)]
struct Shared {
    ledger: Mutex<Ledger>,
    /// A segment was sealed: the uploader has work.
    sealed: Notify,
    /// A segment was deleted: a waiting append may fit now.
    space: Notify,
    /// Held while any side of the spool lives.
    _lock: nix::fcntl::Flock<File>,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Read-only view for metrics and the node API.
#[derive(Debug, Clone)]
pub struct SpoolStats {
    shared: Arc<Shared>,
    pub max_bytes: u64,
    pub dir: PathBuf,
}

impl SpoolStats {
    pub fn bytes(&self) -> u64 {
        self.shared.ledger().bytes
    }
    pub fn records(&self) -> u64 {
        self.shared.ledger().records
    }
    pub fn segments(&self) -> usize {
        let ledger = self.shared.ledger();
        ledger.sealed.len() + usize::from(ledger.active_len > 0)
    }
    pub fn full(&self) -> bool {
        self.shared.ledger().full
    }
}

/// Opens (and recovers) the spool: the append handle for the Analytics service, the writer task, and
/// the reader for the uploader.
pub fn open(
    options: SpoolOptions,
    metrics: Arc<Metrics>,
) -> Result<(SpoolHandle, SpoolWriter, SpoolReader), SpoolError> {
    let dir = options.dir.clone();
    let err = |source: io::Error| SpoolError::Io { dir: dir.display().to_string(), source };
    std::fs::create_dir_all(&dir).map_err(err)?;
    std::fs::create_dir_all(dir.join("rejected")).map_err(err)?;
    let lock_file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock")).map_err(err)?;
    let lock = match nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(SpoolError::Locked { dir: dir.display().to_string() }),
        Err((_, errno)) => return Err(err(io::Error::from(errno))),
    };
    let (ledger, cursor, next_id) = recover(&dir, &metrics).map_err(err)?;
    let shared =
        Arc::new(Shared { ledger: Mutex::new(ledger), sealed: Notify::new(), space: Notify::new(), _lock: lock });
    let (tx, rx) = mpsc::channel(APPEND_QUEUE);
    let stats = SpoolStats { shared: shared.clone(), max_bytes: options.max_bytes, dir: dir.clone() };
    let files =
        Arc::new(Mutex::new(ActiveSegment { dir: dir.clone(), file: None, id: next_id, len: 0, fsync: options.fsync }));
    let writer = SpoolWriter { rx, files, shared: shared.clone(), options, first_frame_at: None, metrics };
    let reader = SpoolReader {
        dir: dir.clone(),
        rejected: dir.join("rejected"),
        shared: shared.clone(),
        cursor,
        ahead: cursor,
        loaded: None,
    };
    Ok((SpoolHandle { tx, stats }, writer, reader))
}

/// Start-up: cut torn or corrupt tails, drop segments the cursor says were delivered, find where to go on.
fn recover(dir: &Path, metrics: &Metrics) -> io::Result<(Ledger, Cursor, u64)> {
    let ids = segment::list_segments(dir)?;
    let saved = Cursor::load(dir);
    let mut ledger = Ledger::default();
    let mut cursor = None;
    // Never reuse an id at or below the cursor's: the next start would take it for delivered.
    let next_id = ids.last().copied().max(saved.map(|c| c.segment)).map_or(1, |id| id + 1);
    for id in ids {
        let path = segment::segment_path(dir, id);
        if saved.is_some_and(|c| id < c.segment) {
            tracing::debug!(segment = id, "removing a delivered spool segment left by the previous run");
            std::fs::remove_file(&path)?;
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let scan = segment::scan(&bytes);
        if let Some(problem) = scan.problem {
            let cut = bytes.len() as u64 - scan.valid_len;
            metrics.reports_spool_corrupt_bytes.add(cut);
            if matches!(problem, Problem::Torn { .. }) {
                tracing::warn!(segment = %path.display(), %problem, cut_bytes = cut, kept_frames = scan.frames.len(),
                    "spool segment ends in an interrupted write (never acknowledged); cutting it");
            } else {
                let copy = dir.join("rejected").join(format!("{id:020}.seg.corrupt"));
                std::fs::write(&copy, &bytes)?;
                tracing::error!(segment = %path.display(), %problem, cut_bytes = cut, kept_frames = scan.frames.len(),
                    copy = %copy.display(), "spool segment is corrupt; keeping the frames before the damage");
            }
        }
        if scan.frames.is_empty() {
            std::fs::remove_file(&path)?;
            continue;
        }
        if scan.valid_len < bytes.len() as u64 {
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            file.set_len(scan.valid_len)?;
            file.sync_all()?;
        }
        // Documents still to deliver in this segment.
        let mut records = scan.lines();
        if let Some(saved) = saved.filter(|c| c.segment == id) {
            match valid_position(&scan, saved) {
                Some(done) => {
                    records -= done;
                    cursor = Some(saved);
                }
                None => {
                    tracing::warn!(segment = id, ?saved, "spool cursor does not match the segment; uploading it whole")
                }
            }
        }
        ledger.sealed.push_back(Sealed { id, len: scan.valid_len });
        ledger.bytes += scan.valid_len;
        ledger.records += records;
    }
    let cursor =
        cursor.unwrap_or_else(|| Cursor { segment: ledger.sealed.front().map_or(0, |s| s.id), offset: 0, line: 0 });
    if !ledger.sealed.is_empty() {
        tracing::info!(
            segments = ledger.sealed.len(),
            bytes = ledger.bytes,
            documents = ledger.records,
            "reports spool holds documents from a previous run; uploading them first"
        );
    }
    Ok((ledger, cursor, next_id))
}

/// Documents before `cursor` in a scanned segment, when the cursor points at a frame boundary (or the
/// end) with a line inside that frame.
fn valid_position(scan: &segment::Scan, cursor: Cursor) -> Option<u64> {
    let mut done = 0u64;
    for frame in &scan.frames {
        if frame.offset == cursor.offset {
            return (cursor.line <= frame.lines).then_some(done + u64::from(cursor.line));
        }
        done += u64::from(frame.lines);
    }
    (cursor.offset == scan.valid_len && cursor.line == 0).then_some(done)
}

/// The Analytics service's side: appends a batch and returns once it is durable.
#[derive(Debug, Clone)]
pub struct SpoolHandle {
    tx: mpsc::Sender<Append>,
    pub stats: SpoolStats,
}

#[derive(Debug)]
struct Append {
    payload: Vec<u8>,
    records: u64,
    done: oneshot::Sender<Result<(), AppendError>>,
}

impl SpoolHandle {
    /// Writes the documents (NDJSON lines) as one frame; returns when they are on disk (per the fsync
    /// policy). Waits while the spool is full: that wait is the backpressure.
    pub async fn append(&self, lines: &[String]) -> Result<(), AppendError> {
        let size: usize = lines.iter().map(|l| l.len() + 1).sum();
        let bytes = (MAGIC.len() + segment::FRAME_HEADER + size) as u64;
        if bytes > self.stats.max_bytes || size > segment::MAX_FRAME_PAYLOAD {
            return Err(AppendError::TooLarge { bytes, max: self.stats.max_bytes });
        }
        let mut payload = Vec::with_capacity(size);
        for line in lines {
            payload.extend_from_slice(line.as_bytes());
            payload.push(b'\n');
        }
        let (done, wait) = oneshot::channel();
        self.tx.send(Append { payload, records: lines.len() as u64, done }).await.map_err(|_| AppendError::Closed)?;
        wait.await.map_err(|_| AppendError::Closed)?
    }
}

/// The segment being written. Behind a mutex so its blocking I/O runs on the blocking pool.
#[derive(Debug)]
struct ActiveSegment {
    dir: PathBuf,
    file: Option<File>,
    id: u64,
    len: u64,
    fsync: Fsync,
}

impl ActiveSegment {
    /// Appends frames; on failure cuts the segment back to its last complete frame.
    fn write(&mut self, frames: &[u8]) -> io::Result<u64> {
        if self.file.is_none() {
            let file = segment::create_segment(&self.dir, self.id)?;
            if self.fsync == Fsync::Batch {
                file.sync_all()?;
                segment::sync_dir(&self.dir)?;
            }
            self.file = Some(file);
            self.len = MAGIC.len() as u64;
        }
        let file = self.file.as_mut().expect("opened above");
        if let Err(error) = file.write_all(frames) {
            let _ = file.set_len(self.len);
            return Err(error);
        }
        self.len += frames.len() as u64;
        Ok(self.len)
    }

    fn sync(&mut self) -> io::Result<()> {
        match (&self.file, self.fsync) {
            (Some(file), Fsync::Batch) => file.sync_data(),
            _ => Ok(()),
        }
    }

    /// Closes the segment; returns it for upload (`None` when nothing was written).
    fn seal(&mut self) -> Option<Sealed> {
        self.file.take()?;
        let sealed = Sealed { id: self.id, len: self.len };
        self.id += 1;
        self.len = 0;
        Some(sealed)
    }
}

async fn blocking<T: Send + 'static>(
    files: &Arc<Mutex<ActiveSegment>>,
    f: impl FnOnce(&mut ActiveSegment) -> T + Send + 'static,
) -> T {
    let files = files.clone();
    tokio::task::spawn_blocking(move || f(&mut files.lock().unwrap_or_else(PoisonError::into_inner)))
        .await
        .expect("spool I/O does not panic")
}

/// How a wait for room in the spool ended.
enum Space {
    Free,
    /// The waiting batch's sender went away.
    Abandoned,
    Cancelled,
}

/// Takes appends, writes them in groups under one fsync, acknowledges, seals segments.
pub struct SpoolWriter {
    rx: mpsc::Receiver<Append>,
    files: Arc<Mutex<ActiveSegment>>,
    shared: Arc<Shared>,
    options: SpoolOptions,
    first_frame_at: Option<Instant>,
    metrics: Arc<Metrics>,
}

impl SpoolWriter {
    /// Runs until `cancel`; then stops taking appends (those not acknowledged stay with their dataplane)
    /// and seals the active segment so the uploader can deliver it during the shutdown.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval((self.options.roll_after / 2).max(Duration::from_millis(20)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                append = self.rx.recv() => match append {
                    Some(append) => append,
                    None => break,
                },
                _ = tick.tick() => {
                    self.roll_if_old().await;
                    continue;
                }
                _ = cancel.cancelled() => break,
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(append) => group.push(append),
                    Err(_) => break,
                }
            }
            if !self.commit(group, &cancel).await {
                break;
            }
        }
        self.rx.close();
        self.seal().await;
    }

    /// Writes the group, fsyncs once, acknowledges. Waits for space first when the spool is full.
    /// Returns false when cancelled while waiting.
    async fn commit(&mut self, group: Vec<Append>, cancel: &CancellationToken) -> bool {
        let mut written: Vec<Append> = Vec::with_capacity(group.len());
        let mut frames = Vec::new();
        let mut group = group.into_iter();
        while let Some(mut append) = group.next() {
            let need = (segment::FRAME_HEADER + append.payload.len()) as u64;
            if !self.fits(need + frames.len() as u64) {
                self.flush(&mut frames, &mut written).await;
                match self.wait_for_space(need, &mut append.done, cancel).await {
                    Space::Free => {}
                    // Its stream ended: nobody to acknowledge, nothing to write (the dataplane resends).
                    Space::Abandoned => continue,
                    Space::Cancelled => {
                        let _ = append.done.send(Err(AppendError::Closed));
                        for rest in group {
                            let _ = rest.done.send(Err(AppendError::Closed));
                        }
                        return false;
                    }
                }
            }
            segment::encode_frame(&append.payload, &mut frames);
            written.push(append);
        }
        self.flush(&mut frames, &mut written).await;
        true
    }

    /// Whether `need` more bytes stay within the bound (a single frame larger than the whole bound is
    /// taken when the spool holds nothing, so it cannot block forever).
    fn fits(&self, need: u64) -> bool {
        let ledger = self.shared.ledger();
        let header = if ledger.active_len == 0 { MAGIC.len() as u64 } else { 0 };
        ledger.bytes + header + need <= self.options.max_bytes || !ledger.has_frames()
    }

    /// Writes and syncs `frames`, then acknowledges `written` (or fails them all).
    async fn flush(&mut self, frames: &mut Vec<u8>, written: &mut Vec<Append>) {
        if written.is_empty() {
            return;
        }
        let bytes = std::mem::take(frames);
        let result = blocking(&self.files, move |active| {
            let before = active.len;
            let len = active.write(&bytes)?;
            active.sync()?;
            Ok::<_, io::Error>((before, len))
        })
        .await;
        match result {
            Ok((before, len)) => {
                let records: u64 = written.iter().map(|a| a.records).sum();
                {
                    let mut ledger = self.shared.ledger();
                    ledger.bytes += len - before;
                    ledger.active_len = len;
                    ledger.records += records;
                }
                self.metrics.reports_records_spooled.add(records);
                self.first_frame_at.get_or_insert_with(Instant::now);
                for append in written.drain(..) {
                    let _ = append.done.send(Ok(()));
                }
                if len >= self.options.segment_bytes() {
                    self.seal().await;
                }
            }
            Err(error) => {
                self.metrics.reports_spool_write_errors.inc();
                tracing::error!(%error, dir = %self.options.dir.display(), "cannot write the reports spool; batches not acknowledged (dataplanes keep them and retry)");
                let reason = error.to_string();
                for append in written.drain(..) {
                    let _ = append.done.send(Err(AppendError::Io(reason.clone())));
                }
            }
        }
    }

    /// Waits until `need` bytes fit, or the waiting batch's sender is gone; acknowledgements stop
    /// meanwhile, and start again either way.
    async fn wait_for_space(
        &mut self,
        need: u64,
        waiting: &mut oneshot::Sender<Result<(), AppendError>>,
        cancel: &CancellationToken,
    ) -> Space {
        self.shared.ledger().full = true;
        self.metrics.reports_spool_full_events.inc();
        tracing::warn!(
            bytes = self.shared.ledger().bytes,
            max = self.options.max_bytes,
            "reports spool full: acknowledgements to dataplanes stop until uploads free space"
        );
        // Everything written so far becomes uploadable now, so the uploader can make room.
        self.seal().await;
        let outcome = loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            if self.fits(need) {
                break Space::Free;
            }
            tokio::select! {
                _ = space => {}
                _ = waiting.closed() => break Space::Abandoned,
                _ = cancel.cancelled() => break Space::Cancelled,
            }
        };
        self.shared.ledger().full = false;
        match outcome {
            Space::Free => tracing::info!("reports spool has room again: acknowledging"),
            Space::Abandoned => {
                tracing::info!("the batch waiting for room in the reports spool was abandoned by its sender")
            }
            Space::Cancelled => {}
        }
        outcome
    }

    async fn roll_if_old(&mut self) {
        if self.first_frame_at.is_some_and(|at| at.elapsed() >= self.options.roll_after) {
            self.seal().await;
        }
    }

    /// Seals the active segment (if it holds frames) and wakes the uploader.
    async fn seal(&mut self) {
        self.first_frame_at = None;
        let sealed = blocking(&self.files, |active| active.seal()).await;
        if let Some(sealed) = sealed {
            let mut ledger = self.shared.ledger();
            ledger.active_len = 0;
            ledger.sealed.push_back(sealed);
            drop(ledger);
            self.shared.sealed.notify_one();
        }
    }
}

/// Completes [`SealedNotifier::sealed`] when the writer seals a segment (a seal while nobody waits is
/// remembered, so none is missed).
#[derive(Debug, Clone)]
pub struct SealedNotifier(Arc<Shared>);

impl SealedNotifier {
    pub async fn sealed(&self) {
        self.0.sealed.notified().await
    }
}

/// A batch of documents read from sealed segments, for one upload.
#[derive(Debug)]
pub struct Batch {
    /// The documents, one per line, each ending in `\n`.
    pub ndjson: Vec<u8>,
    pub records: u64,
    start: Cursor,
    end: Cursor,
}

/// A sealed segment in memory, with its frames.
struct Loaded {
    id: u64,
    bytes: Vec<u8>,
    frames: Vec<FrameRef>,
}

/// The uploader's side: reads batches in order, and deletes what was delivered.
pub struct SpoolReader {
    dir: PathBuf,
    rejected: PathBuf,
    shared: Arc<Shared>,
    /// Delivered up to here (stored in `cursor`).
    cursor: Cursor,
    /// Read up to here: batches handed out and not yet committed lie between `cursor` and `ahead`.
    ahead: Cursor,
    loaded: Option<Loaded>,
}

impl SpoolReader {
    /// Wakes the uploader when a segment is sealed (without holding the reader).
    pub fn notifier(&self) -> SealedNotifier {
        SealedNotifier(self.shared.clone())
    }

    /// Up to `max` documents after the last batch handed out (read ahead of the delivered cursor, so
    /// several uploads can be in flight), from sealed segments only; `None` when there is none. A batch
    /// with no documents (a segment whose frames were all damaged) just moves the cursor. Batches must
    /// be committed (or rejected) in the order they were read.
    pub fn next_batch(&mut self, max: usize) -> io::Result<Option<Batch>> {
        // Reading ahead can stand at the end of a segment that is not committed (so not deleted) yet:
        // nothing new there.
        let batch = self.read_batch(max)?.filter(|b| b.records > 0 || b.end != b.start);
        if let Some(batch) = &batch {
            self.ahead = batch.end;
        }
        Ok(batch)
    }

    fn read_batch(&mut self, max: usize) -> io::Result<Option<Batch>> {
        let sealed: Vec<Sealed> = self.shared.ledger().sealed.iter().copied().collect();
        let start = self.ahead;
        let mut pos = self.ahead;
        let mut ndjson = Vec::new();
        let mut records = 0u64;
        let mut moved = false;
        for seg in sealed {
            if seg.id < pos.segment {
                continue;
            }
            if seg.id > pos.segment {
                pos = Cursor { segment: seg.id, offset: 0, line: 0 };
            }
            if pos.offset >= seg.len {
                moved = true;
                continue;
            }
            let loaded = self.load(seg)?;
            let from = pos.offset;
            for frame in loaded.frames.iter().filter(|f| f.offset >= from) {
                let payload = &loaded.bytes[frame.payload.clone()];
                let mut taken = pos.line;
                for line in payload.split_inclusive(|b| *b == b'\n').skip(pos.line as usize) {
                    if records as usize == max {
                        break;
                    }
                    ndjson.extend_from_slice(line);
                    records += 1;
                    taken += 1;
                }
                if taken >= frame.lines {
                    pos = Cursor { segment: seg.id, offset: frame.end(), line: 0 };
                } else {
                    pos = Cursor { segment: seg.id, offset: frame.offset, line: taken };
                    return Ok(Some(Batch { ndjson, records, start, end: pos }));
                }
                if records as usize == max {
                    return Ok(Some(Batch { ndjson, records, start, end: pos }));
                }
            }
            // Every frame of the segment read (frames after damage, if any, are gone).
            pos = Cursor { segment: seg.id, offset: seg.len, line: 0 };
            moved = true;
        }
        Ok((records > 0 || moved).then_some(Batch { ndjson, records, start, end: pos }))
    }

    fn load(&mut self, seg: Sealed) -> io::Result<&Loaded> {
        if self.loaded.as_ref().is_none_or(|l| l.id != seg.id) {
            self.loaded = None;
            let path = segment::segment_path(&self.dir, seg.id);
            let bytes = std::fs::read(&path)?;
            let scan = segment::scan(&bytes);
            if let Some(problem) = scan.problem {
                let copy = self.rejected.join(format!("{:020}.seg.corrupt", seg.id));
                let _ = std::fs::write(&copy, &bytes);
                tracing::error!(segment = %path.display(), %problem, kept_frames = scan.frames.len(), copy = %copy.display(),
                    "spool segment damaged on disk; delivering the frames before the damage");
            }
            self.loaded = Some(Loaded { id: seg.id, bytes, frames: scan.frames });
        }
        Ok(self.loaded.as_ref().expect("loaded above"))
    }

    /// The batch was delivered: moves the cursor past it, deletes the segments it finished, frees space.
    pub fn commit(&mut self, batch: &Batch) -> io::Result<()> {
        debug_assert_eq!(batch.start, self.cursor, "batches are committed in the order they were read");
        self.cursor = batch.end;
        let mut deleted = Vec::new();
        {
            let mut ledger = self.shared.ledger();
            ledger.records = ledger.records.saturating_sub(batch.records);
            while let Some(front) = ledger.sealed.front().copied() {
                if front.id < batch.end.segment || (front.id == batch.end.segment && batch.end.offset >= front.len) {
                    ledger.sealed.pop_front();
                    ledger.bytes -= front.len;
                    deleted.push(front.id);
                } else {
                    break;
                }
            }
            if !ledger.has_frames() {
                ledger.records = 0;
            }
        }
        for id in &deleted {
            if self.loaded.as_ref().is_some_and(|l| l.id == *id) {
                self.loaded = None;
            }
            match std::fs::remove_file(segment::segment_path(&self.dir, *id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if !deleted.is_empty() {
            self.shared.space.notify_waiters();
        }
        self.cursor.store(&self.dir)
    }

    /// The batch was refused for good: keeps it under `rejected/` for the user, then moves on.
    pub fn reject(&mut self, batch: &Batch) -> io::Result<PathBuf> {
        let path = self.rejected.join(format!(
            "{:020}-{}-{}-{}.ndjson",
            batch.start.segment,
            batch.start.offset,
            batch.start.line,
            crate::reports::epoch_millis()
        ));
        let mut file = File::create(&path)?;
        file.write_all(&batch.ndjson)?;
        file.sync_all()?;
        self.commit(batch)?;
        Ok(path)
    }

    pub fn rejected_dir(&self) -> &Path {
        &self.rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path, max_bytes: u64) -> SpoolOptions {
        SpoolOptions { dir: dir.to_path_buf(), max_bytes, fsync: Fsync::Batch, roll_after: Duration::from_secs(3600) }
    }

    fn lines(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{{\"_id\":\"{prefix}-{i}\",\"pad\":\"{}\"}}", "p".repeat(20))).collect()
    }

    fn ids(batch: &Batch) -> Vec<String> {
        String::from_utf8(batch.ndjson.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Appends through the real writer task and waits for each acknowledgement.
    async fn append_all(handle: &SpoolHandle, batches: &[Vec<String>]) {
        for batch in batches {
            handle.append(batch).await.unwrap();
        }
    }

    #[tokio::test]
    async fn appended_batches_come_back_in_order_across_segments_and_are_deleted_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB spool: 16 KiB segments, so 200 documents of ~20 bytes roll a few times.
        let metrics = Arc::new(Metrics::default());
        let (handle, writer, mut reader) = open(options(dir.path(), 64 * 1024), metrics.clone()).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone()));
        let batches: Vec<Vec<String>> = (0..40).map(|b| lines(&format!("b{b}"), 25)).collect();
        append_all(&handle, &batches).await;
        assert_eq!(metrics.reports_records_spooled.get(), 1000);
        assert_eq!(handle.stats.records(), 1000);
        cancel.cancel();
        task.await.unwrap();
        let segments = segment::list_segments(dir.path()).unwrap();
        assert!(segments.len() >= 2, "rolled at the segment size: {segments:?}");
        assert_eq!(handle.stats.bytes(), segments.iter().map(|id| file_len(dir.path(), *id)).sum::<u64>());

        // 1000 documents in batches of 300: frames are split where a batch ends, and resume there.
        let expected: Vec<String> = batches.concat().iter().map(|l| l[8..l.find("\",").unwrap()].to_owned()).collect();
        let mut got = Vec::new();
        while let Some(batch) = reader.next_batch(300).unwrap() {
            assert!(batch.records <= 300);
            got.extend(ids(&batch));
            reader.commit(&batch).unwrap();
        }
        assert_eq!(got, expected);
        assert!(segment::list_segments(dir.path()).unwrap().is_empty(), "delivered segments are deleted");
        assert_eq!((handle.stats.bytes(), handle.stats.records()), (0, 0));
    }

    fn file_len(dir: &Path, id: u64) -> u64 {
        std::fs::metadata(segment::segment_path(dir, id)).unwrap().len()
    }

    #[tokio::test]
    async fn a_restart_resumes_at_the_cursor_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        {
            let (handle, writer, mut reader) = open(options(dir.path(), 1 << 30), metrics.clone()).unwrap();
            let cancel = CancellationToken::new();
            let task = tokio::spawn(writer.run(cancel.clone()));
            append_all(&handle, &[lines("a", 10), lines("b", 10)]).await;
            cancel.cancel();
            task.await.unwrap();
            let batch = reader.next_batch(15).unwrap().unwrap();
            reader.commit(&batch).unwrap();
            // A second lock on the same directory is refused while this one lives.
            assert!(matches!(open(options(dir.path(), 1 << 30), metrics.clone()), Err(SpoolError::Locked { .. })));
        }
        // A crash in the middle of a frame: half a header after the last complete frame.
        let id = segment::list_segments(dir.path()).unwrap()[0];
        let path = segment::segment_path(dir.path(), id);
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[9, 0, 0]).unwrap();
        drop(file);

        let (handle, _writer, mut reader) = open(options(dir.path(), 1 << 30), metrics.clone()).unwrap();
        assert_eq!(metrics.reports_spool_corrupt_bytes.get(), 3);
        assert_eq!(handle.stats.records(), 5, "15 of 20 were delivered before the restart");
        let batch = reader.next_batch(100).unwrap().unwrap();
        assert_eq!(ids(&batch), (5..10).map(|i| format!("b-{i}")).collect::<Vec<_>>());
        reader.commit(&batch).unwrap();
        assert!(reader.next_batch(100).unwrap().is_none());
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_corrupt_frame_keeps_what_came_before_and_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = MAGIC.to_vec();
        segment::encode_frame(b"{\"_id\":\"ok\"}\n", &mut bytes);
        let bad_at = bytes.len();
        segment::encode_frame(b"{\"_id\":\"bad\"}\n", &mut bytes);
        segment::encode_frame(b"{\"_id\":\"after\"}\n", &mut bytes);
        bytes[bad_at + segment::FRAME_HEADER + 3] ^= 1;
        std::fs::write(segment::segment_path(dir.path(), 4), &bytes).unwrap();

        let metrics = Arc::new(Metrics::default());
        let (handle, _writer, mut reader) = open(options(dir.path(), 1 << 30), metrics.clone()).unwrap();
        assert_eq!(handle.stats.records(), 1);
        assert!(dir.path().join("rejected/00000000000000000004.seg.corrupt").is_file());
        let batch = reader.next_batch(100).unwrap().unwrap();
        assert_eq!(ids(&batch), vec!["ok"]);
    }

    #[tokio::test]
    async fn a_full_spool_stops_acknowledging_until_a_delivery_frees_space() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let max = MIN_MAX_BYTES;
        let (handle, writer, mut reader) = open(options(dir.path(), max), metrics.clone()).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone()));
        // ~2 KiB per batch: the bound is reached after ~30.
        let mut acked = 0;
        let blocked = loop {
            let batch = lines(&format!("x{acked}"), 100);
            let handle = handle.clone();
            let mut append = tokio::spawn(async move { handle.append(&batch).await });
            match tokio::time::timeout(Duration::from_millis(500), &mut append).await {
                Ok(result) => {
                    result.unwrap().unwrap();
                    acked += 1;
                    assert!(acked < 100, "the bound must stop acknowledgements");
                }
                Err(_) => break append,
            }
        };
        assert!(handle.stats.full());
        assert!(handle.stats.bytes() <= max, "{} > {max}", handle.stats.bytes());
        assert_eq!(metrics.reports_spool_full_events.get(), 1);
        // Delivering the oldest segment makes room: the waiting append is acknowledged.
        let batch = reader.next_batch(100_000).unwrap().unwrap();
        reader.commit(&batch).unwrap();
        tokio::time::timeout(Duration::from_secs(10), blocked)
            .await
            .expect("acknowledged after space was freed")
            .unwrap()
            .unwrap();
        assert!(!handle.stats.full());
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_spool_is_refused_and_the_spool_keeps_acknowledging() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let max = MIN_MAX_BYTES;
        let (handle, writer, mut reader) = open(options(dir.path(), max), metrics.clone()).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone()));
        handle.append(&lines("before", 10)).await.unwrap();
        let forged = vec!["x".repeat(max as usize)];
        let refused = handle.append(&forged).await.unwrap_err();
        assert!(matches!(refused, AppendError::TooLarge { .. }), "{refused}");
        assert!(refused.to_string().contains("can never fit the reports spool"), "{refused}");
        assert!(!handle.stats.full(), "a refused batch does not latch the spool full");
        handle.append(&lines("after", 10)).await.unwrap();
        cancel.cancel();
        task.await.unwrap();
        let batch = reader.next_batch(100).unwrap().unwrap();
        assert_eq!(batch.records, 20, "both small batches were written, the forged one was not");
    }

    #[tokio::test]
    async fn a_full_spool_clears_when_the_waiting_sender_leaves_or_room_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let max = MIN_MAX_BYTES;
        let (handle, writer, mut reader) = open(options(dir.path(), max), metrics.clone()).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone()));
        // Fill the spool to a few hundred bytes of its bound.
        let mut filled = 0;
        while handle.stats.bytes() + 2048 < max {
            handle.append(&lines(&format!("f{filled}"), 20)).await.unwrap();
            filled += 1;
            assert!(filled < 1000);
        }
        // A batch that fits the bound but not the room left: it waits, the spool is full.
        let waiting = {
            let handle = handle.clone();
            let batch = vec!["y".repeat(8192)];
            tokio::spawn(async move { handle.append(&batch).await })
        };
        assert!(wait_until(|| handle.stats.full()).await, "the spool turns full");
        // Its sender gives up (a stream that ended): the latch clears without any upload.
        waiting.abort();
        assert!(wait_until(|| !handle.stats.full()).await, "an abandoned wait clears the latch");
        // Full again, then room is made by a delivery: the waiting batch is acknowledged.
        let again = {
            let handle = handle.clone();
            let batch = vec!["z".repeat(8192)];
            tokio::spawn(async move { handle.append(&batch).await })
        };
        assert!(wait_until(|| handle.stats.full()).await);
        let batch = reader.next_batch(100_000).unwrap().unwrap();
        reader.commit(&batch).unwrap();
        again.await.unwrap().unwrap();
        assert!(!handle.stats.full(), "room freed: the latch clears");
        assert_eq!(metrics.reports_spool_full_events.get(), 2);
        cancel.cancel();
        task.await.unwrap();
    }

    async fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
        for _ in 0..1000 {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn rejected_batches_are_kept_as_ndjson() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, writer, mut reader) = open(options(dir.path(), 1 << 20), Arc::new(Metrics::default())).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone()));
        append_all(&handle, &[lines("r", 3)]).await;
        cancel.cancel();
        task.await.unwrap();
        let batch = reader.next_batch(10).unwrap().unwrap();
        let kept = reader.reject(&batch).unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), batch.ndjson);
        assert!(kept.starts_with(reader.rejected_dir()));
        assert!(reader.next_batch(10).unwrap().is_none());
        assert!(segment::list_segments(dir.path()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn batches_are_read_ahead_and_a_restart_resumes_at_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, writer, mut reader) = open(options(dir.path(), 1 << 20), Arc::new(Metrics::default())).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone()));
        append_all(&handle, &[lines("a", 30)]).await;
        cancel.cancel();
        task.await.unwrap();
        // Three uploads in flight: three distinct batches before any commit.
        let first = reader.next_batch(10).unwrap().unwrap();
        let second = reader.next_batch(10).unwrap().unwrap();
        let third = reader.next_batch(10).unwrap().unwrap();
        assert!(reader.next_batch(10).unwrap().is_none(), "all 30 handed out");
        let handed: Vec<String> = [&first, &second, &third].iter().flat_map(|b| ids(b)).collect();
        assert_eq!(handed, (0..30).map(|i| format!("a-{i}")).collect::<Vec<_>>());
        // Only the first is delivered before a crash: the next start resends the other two.
        reader.commit(&first).unwrap();
        drop((reader, handle));
        let (_handle, _writer, mut reader) = open(options(dir.path(), 1 << 20), Arc::new(Metrics::default())).unwrap();
        let again = reader.next_batch(100).unwrap().unwrap();
        assert_eq!(ids(&again), (10..30).map(|i| format!("a-{i}")).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_active_segment_is_sealed_after_roll_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path(), 1 << 20);
        opts.roll_after = Duration::from_millis(100);
        let (handle, writer, mut reader) = open(opts, Arc::new(Metrics::default())).unwrap();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(writer.run(cancel.clone()));
        append_all(&handle, &[lines("t", 2)]).await;
        assert!(reader.next_batch(10).unwrap().is_none(), "the active segment is not read");
        tokio::time::timeout(Duration::from_secs(10), reader.notifier().sealed()).await.unwrap();
        assert_eq!(reader.next_batch(10).unwrap().unwrap().records, 2);
        cancel.cancel();
        task.await.unwrap();
    }
}

//! The threads that do what the event loop must not: SQLite, password hashing.
//!
//! Jobs go out over channels; results come back over one channel, and a
//! `mio::Waker` makes the loop look at them. Each thread owns its own SQLite
//! connection (WAL lets readers and the writer work at once).
//!
//! - API workers ([`API_WORKERS`] threads): HTTP API requests, files, token checks,
//!   sync reads.
//! - Hash workers ([`HASH_WORKERS`] thread): login and register (Argon2id).
//!
//! Both queues are bounded: a full queue refuses the job at once ([`Busy`]) and the
//! loop answers 503. A job whose connection has gone is dropped unrun ([`Ticket`]).
//! - The chat writer (one thread): stores chat messages. It takes every batch that
//!   is waiting and commits them in one transaction, so the cost of a commit is
//!   shared by everything that arrived meanwhile (group commit). It also records
//!   when users went offline (last seen) and moves read markers forward, each in a
//!   transaction of its own (the markers after the messages).
//! - The purge thread: when the loop asks (at start and hourly), deletes expired
//!   sessions, and removes the pictures uploaded without a session that no account
//!   took within [`api::ANONYMOUS_UPLOAD_KEEP_MS`] (`store/uploads.rs`),
//!   [`UPLOAD_SWEEP_BATCH`] per transaction with [`RETENTION_PAUSE`] between.
//! - The watch thread: every [`REVOCATION_POLL`] reads what `fastim admin` revoked
//!   since it last looked (blocked or deleted users, ended sessions; see
//!   `store/revocations.rs`) and hands it to the loop as [`Completion::Revoked`]; the
//!   loop closes those sockets. The loop never waits for the database.
//! - The retention thread, with `--history-days`: every [`Retention::interval`]
//!   removes the messages older than that, [`RETENTION_BATCH`] per transaction with
//!   [`RETENTION_PAUSE`] between, so the chat writer never waits long for the lock.

use std::cell::Cell;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, error, info, warn};
use mio::Waker;

use super::metrics::{self, WorkerStats};
use super::request::FileRequest;
use crate::api::{self, ApiReply, ApiRequest, Upload};
use crate::config;
use crate::files::{self, File};
use crate::http::{Refusal, Status};
use crate::im::cmd;
use crate::im::cmd::code::{ERROR, SYNC_BATCH, SYNC_DONE};
use crate::im::commit::{Outcome, commit_batch, commit_changes};
use crate::im::wire::{self, Reply};
use crate::resource::ResourceDir;
use crate::secret::token_digest;
use crate::store::{Change, Db, Message, ReadMark, Reason, Saved, Windows};
use crate::ws::{self, OpCode};
use crate::ws::{Deflater, PerMessageDeflate};

/// Threads serving API requests and reads.
pub const API_WORKERS: usize = 2;

/// Threads hashing passwords (login, register): their own pool, so that a burst of
/// logins cannot starve API reads, token checks and sync.
pub const HASH_WORKERS: usize = 1;

/// Most messages one sync reply carries; the client asks again for more.
pub const SYNC_LIMIT: usize = 500;

/// Most changes (recalls, edits) one sync reply carries; the client asks again for more.
pub const SYNC_CHANGES_LIMIT: usize = 500;

/// Most bytes one sync reply carries (plus one message): well under a chat
/// connection's outbound bound, so that a sync of long messages never looks like a
/// client that does not read.
pub const SYNC_MAX_BYTES: usize = 256 * 1024;

/// How often the watch thread looks for revocations: a blocked or deleted user's
/// sockets, and those of ended sessions, close within about this long.
pub const REVOCATION_POLL: Duration = Duration::from_secs(2);

/// Most revocations read at once (the watch thread reads on while pages are full).
const REVOCATION_PAGE: usize = 1_000;

/// Messages removed per retention transaction.
pub const RETENTION_BATCH: usize = 1_000;

/// Anonymous upload files removed per transaction of the purge thread's sweep.
pub const UPLOAD_SWEEP_BATCH: usize = 100;

/// The pause between two retention transactions, in which the chat writer commits.
pub const RETENTION_PAUSE: Duration = Duration::from_millis(100);

/// `--history-days`: how long messages are kept, and how often old ones are removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Messages older than this many days are removed.
    pub days: u32,
    /// The time between two runs (the first runs at start).
    pub interval: Duration,
}

/// Chat sockets to close because of an administrator's change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// Whose sockets; `None`: everyone's.
    pub user: Option<i64>,
    /// Only the sockets of this session ([`session_id`]); `None`: all of `user`'s.
    pub session: Option<u32>,
    /// Why: the close frame's reason.
    pub reason: Reason,
}

/// A connection as a job remembers it: the slot, and which occupant of the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    /// Slab key.
    pub key: usize,
    /// Distinguishes successive connections in the same slot.
    pub serial: u64,
}

/// Shared between a connection and its job: once the connection has gone (or
/// stopped waiting), a job that has not started is dropped instead of run.
#[derive(Clone, Debug, Default)]
pub struct Ticket(Arc<AtomicBool>);

impl Ticket {
    /// A ticket for a new job.
    pub fn new() -> Ticket {
        Ticket::default()
    }

    /// Nobody waits for the job any more.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the job may be skipped.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A job for the workers, on behalf of one connection.
#[derive(Debug)]
pub struct Job {
    /// The asking connection.
    pub conn: ConnRef,
    /// Cancelled when the connection goes away.
    pub ticket: Ticket,
    /// What to do.
    pub work: Work,
}

/// The work a [`Job`] carries.
#[derive(Debug)]
pub enum Work {
    /// An upload to check and store.
    Upload(Box<Upload>),
    /// A file to read from disk and answer with.
    ReadFile(FileRequest),
    /// An HTTP API call.
    Api(ApiRequest),
    /// Who does this token belong to (for a `/chat` upgrade or an upload)?
    Authenticate {
        /// The token as the client sent it.
        token: String,
    },
    /// Is the database writable? Answered as an HTTP response.
    Health {
        /// `HEAD` rather than `GET`.
        head_only: bool,
        /// Whether the connection stays open.
        keep_alive: bool,
    },
    /// Everything for `user` after message `after`, as ready-to-send frames.
    Sync {
        /// Its user.
        user: i64,
        /// The last id the client has.
        after: i64,
        /// One `cmd 25` message instead of a frame per message.
        batch: bool,
        /// The last change `seq` the client has; `None`: it wants no changes.
        changes: Option<i64>,
        /// The connection's permessage-deflate: long deliveries go compressed.
        deflate: Option<PerMessageDeflate>,
        /// See [`crate::config::DEFLATE_MIN_BYTES`].
        min_bytes: usize,
    },
}

/// The pools jobs are queued for, each with a bounded queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// API reads and writes, files, token checks, sync.
    Api,
    /// Password hashing: login and register.
    Hash,
}

impl Work {
    /// Which pool runs it.
    pub fn class(&self) -> Class {
        match self {
            Work::Api(req) if matches!(req.route, api::Route::Login | api::Route::Register) => {
                Class::Hash
            }
            _ => Class::Api,
        }
    }
}

/// A full queue: the job was not taken.
#[derive(Debug)]
pub struct Busy;

/// One chat message (or change to one) waiting to be stored.
#[derive(Debug)]
pub struct PendingChat {
    /// The sending connection, for the ack.
    pub conn: ConnRef,
    /// What to store, sender already set from the connection's identity.
    pub write: ChatWrite,
}

/// What the chat writer stores for a connection.
#[derive(Debug)]
pub enum ChatWrite {
    /// A new message.
    Send(Message),
    /// A recall or an edit of one.
    Change(Change),
}

/// What the chat writer is given.
#[derive(Debug)]
enum ToWriter {
    /// Messages (and changes) to store, with the windows changes must be in.
    Chat(Vec<PendingChat>, Windows),
    /// Users gone offline, with the time: last seen.
    LastSeen(Vec<(i64, i64)>),
    /// Read markers to move forward.
    Reads(Vec<ReadMark>),
}

/// A finished job, for the loop.
#[derive(Debug)]
pub enum Completion {
    /// A complete HTTP response (a file).
    Response {
        /// The asking connection.
        conn: ConnRef,
        /// The response bytes.
        bytes: Vec<u8>,
    },
    /// An API reply.
    Api {
        /// The asking connection.
        conn: ConnRef,
        /// The reply.
        reply: ApiReply,
    },
    /// A token check: the user, or `None` for an unknown or expired token.
    Authenticated {
        /// The upgrading connection.
        conn: ConnRef,
        /// The token's user.
        user: Option<i64>,
        /// [`session_id`] of the token.
        session: u32,
    },
    /// A sync reply: delivery frames followed by the sync-done frame.
    Synced {
        /// The asking connection.
        conn: ConnRef,
        /// The frames, counted.
        reply: SyncReply,
    },
    /// A chat batch was committed.
    Committed(Vec<Committed>),
    /// Read marks were stored (or failed to be).
    Read {
        /// How many marks the writer took.
        stored: usize,
        /// The markers that moved, each with the id it was set to.
        moved: Vec<ReadMark>,
    },
    /// Sockets to close: what `fastim admin` revoked, oldest first.
    Revoked(Vec<Revoked>),
}

/// The fate of one chat message.
#[derive(Debug)]
pub struct Committed {
    /// The sending connection.
    pub conn: ConnRef,
    /// The sender.
    pub sender: i64,
    /// The message as stored, when it was.
    pub outcome: Outcome,
    /// The client's reference.
    pub client_ref: Option<String>,
    /// The delivery frame for recipients (a new message only; not for duplicates),
    /// or the event of a change.
    pub delivery: Option<(crate::store::Peer, Vec<u8>)>,
    /// The delivery with the client's `ref`, for the sender's other connections (a
    /// new message that had a `ref`); `None`: they get `delivery`.
    pub own_delivery: Option<Vec<u8>>,
    /// Whether the sending connection gets the delivery too (a change's event: every
    /// connection of the conversation shows it the same way).
    pub echo: bool,
}

/// A job in a pool's queue, with the moment it was submitted (for its latency).
struct Queued {
    job: Job,
    at: Instant,
}

/// Handles to the worker threads.
pub struct Workers {
    api: Option<SyncSender<Queued>>,
    hash: Option<SyncSender<Queued>>,
    /// Jobs each pool has taken, by [`metrics::class_index`] (the loop's count; the
    /// workers count what they took off the queue in [`WorkerStats`]).
    submitted: [Cell<u64>; 2],
    purge: Option<Sender<()>>,
    /// Never sent on: dropping one wakes and stops the watch or the retention thread.
    stops: Vec<Sender<()>>,
    chat: Option<Sender<ToWriter>>,
    completions: Receiver<Completion>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts the threads, each with its own connection to the database at `db_path`;
    /// the API and hashing queues hold at most `api_queue` and `hash_queue` jobs. With
    /// `retention`, old messages are removed as it says. The threads measure into
    /// `stats`.
    pub fn start(
        db_path: PathBuf,
        resources: ResourceDir,
        waker: Arc<Waker>,
        api_queue: usize,
        hash_queue: usize,
        retention: Option<Retention>,
        stats: Arc<WorkerStats>,
    ) -> io::Result<Workers> {
        let (api_tx, api_rx) = mpsc::sync_channel::<Queued>(api_queue.max(1));
        let (hash_tx, hash_rx) = mpsc::sync_channel::<Queued>(hash_queue.max(1));
        let (purge_tx, purge_rx) = mpsc::channel::<()>();
        let (chat_tx, chat_rx) = mpsc::channel::<ToWriter>();
        let (done_tx, done_rx) = mpsc::channel::<Completion>();
        let mut stops = Vec::new();
        let mut threads = Vec::new();
        for (name, class, count, rx) in [
            ("api", Class::Api, API_WORKERS, api_rx),
            ("hash", Class::Hash, HASH_WORKERS, hash_rx),
        ] {
            let rx = Arc::new(Mutex::new(rx));
            for i in 0..count {
                let db = open(&db_path)?;
                let (rx, tx, waker) = (rx.clone(), done_tx.clone(), waker.clone());
                let resources = resources.clone();
                let measure = (stats.clone(), metrics::class_index(class));
                threads.push(
                    thread::Builder::new()
                        .name(format!("{name}-{i}"))
                        .spawn(move || api_worker(db, &resources, &rx, &tx, &waker, &measure))?,
                );
            }
        }
        let mut db = open(&db_path)?;
        let files = resources.clone();
        threads.push(thread::Builder::new().name("purge".into()).spawn(move || {
            while purge_rx.recv().is_ok() {
                purge_sessions(&mut db);
                if !sweep_anonymous_uploads(&mut db, &files, &purge_rx) {
                    return;
                }
            }
        })?);
        if let Some(policy) = retention {
            let mut db = open(&db_path)?;
            let (stop_tx, stop) = mpsc::channel::<()>();
            stops.push(stop_tx);
            threads.push(
                thread::Builder::new()
                    .name("retention".into())
                    .spawn(move || retain(&mut db, policy, &stop))?,
            );
        }
        let db = open(&db_path)?;
        let (stop_tx, stop) = mpsc::channel::<()>();
        stops.push(stop_tx);
        let (tx, wake) = (done_tx.clone(), waker.clone());
        threads.push(
            thread::Builder::new()
                .name("watch".into())
                .spawn(move || watch_revocations(&db, &stop, &tx, &wake))?,
        );
        let db = open(&db_path)?;
        threads.push(
            thread::Builder::new()
                .name("chat-writer".into())
                .spawn(move || chat_writer(db, &chat_rx, &done_tx, &waker, &stats))?,
        );
        Ok(Workers {
            api: Some(api_tx),
            hash: Some(hash_tx),
            submitted: [Cell::new(0), Cell::new(0)],
            purge: Some(purge_tx),
            stops,
            chat: Some(chat_tx),
            completions: done_rx,
            threads,
        })
    }

    /// Queues a job for its pool, or refuses it at once if that queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        let class = job.work.class();
        let queue = match class {
            Class::Api => &self.api,
            Class::Hash => &self.hash,
        };
        let Some(queue) = queue else {
            return Err(Busy);
        };
        let queued = Queued {
            job,
            at: Instant::now(),
        };
        match queue.try_send(queued) {
            Ok(()) => {
                let submitted = &self.submitted[metrics::class_index(class)];
                submitted.set(submitted.get() + 1);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(Busy),
            Err(TrySendError::Disconnected(_)) => {
                error!("workers are gone");
                Err(Busy)
            }
        }
    }

    /// Asks for expired sessions to be deleted.
    pub fn purge_sessions(&self) {
        if let Some(purge) = &self.purge {
            let _ = purge.send(());
        }
    }

    /// Queues a batch of chat messages for the writer (the loop bounds how many wait).
    pub fn submit_chat(&self, batch: Vec<PendingChat>, windows: Windows) {
        self.to_writer(ToWriter::Chat(batch, windows));
    }

    /// Queues `(user, time)` pairs of users gone offline, to be stored as last seen.
    pub fn submit_last_seen(&self, seen: Vec<(i64, i64)>) {
        self.to_writer(ToWriter::LastSeen(seen));
    }

    /// Queues read marks for the writer (the loop's rate limit bounds how many).
    pub fn submit_reads(&self, marks: Vec<ReadMark>) {
        self.to_writer(ToWriter::Reads(marks));
    }

    fn to_writer(&self, work: ToWriter) {
        if let Some(chat) = &self.chat {
            if chat.send(work).is_err() {
                error!("chat writer is gone");
            }
        }
    }

    /// Jobs submitted to the pool of [`metrics::class_index`] `class` so far.
    pub fn submitted(&self, class: usize) -> u64 {
        self.submitted[class].get()
    }

    /// A finished job, if one is waiting.
    pub fn try_completion(&self) -> Option<Completion> {
        self.completions.try_recv().ok()
    }

    /// Lets the threads finish what they have and waits for them.
    pub fn stop(mut self) {
        self.api = None;
        self.hash = None;
        self.purge = None;
        self.stops.clear();
        self.chat = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn open(path: &std::path::Path) -> io::Result<Db> {
    Db::open(path).map_err(|e| io::Error::other(format!("cannot open {}: {e}", path.display())))
}

/// A short name for a session: the first 4 bytes of its token's digest (a logout
/// closes the user's sockets whose session has this name).
pub fn session_id(token_digest: &[u8; 32]) -> u32 {
    let mut first = [0u8; 4];
    first.copy_from_slice(&token_digest[..4]);
    u32::from_le_bytes(first)
}

/// Unix time in milliseconds: the store takes time from its caller.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn api_worker(
    mut db: Db,
    resources: &ResourceDir,
    jobs: &Mutex<Receiver<Queued>>,
    done: &Sender<Completion>,
    waker: &Waker,
    (stats, class): &(Arc<WorkerStats>, usize),
) {
    // This worker's compressor for sync replies, reset for every message.
    let mut deflater = Deflater::new();
    loop {
        // Hold the lock only while taking a job, not while doing it.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(Queued {
            job: Job { conn, ticket, work },
            at,
        }) = job
        else {
            return;
        };
        stats.started[*class].fetch_add(1, Ordering::Relaxed);
        if ticket.is_cancelled() {
            // Its connection has gone or stopped waiting: nobody would read the answer.
            debug!("#{}: job dropped, nobody waits for it", conn.key);
            continue;
        }
        let completion = match work {
            Work::Upload(mut upload) => {
                upload.now_ms = now_ms();
                Completion::Api {
                    conn,
                    reply: api::upload(&mut db, resources, &upload),
                }
            }
            Work::ReadFile(file) => Completion::Response {
                conn,
                bytes: read_file(&file),
            },
            Work::Api(mut request) => {
                request.now_ms = now_ms();
                Completion::Api {
                    conn,
                    reply: api::handle(&mut db, request),
                }
            }
            Work::Authenticate { token } => {
                let user = match api::session_user(&db, &token, now_ms()) {
                    Ok(user) => user,
                    Err(e) => {
                        error!("token check failed: {e}");
                        None
                    }
                };
                Completion::Authenticated {
                    conn,
                    user,
                    session: session_id(&token_digest(&token)),
                }
            }
            Work::Health {
                head_only,
                keep_alive,
            } => Completion::Response {
                conn,
                bytes: health(&mut db, head_only, keep_alive),
            },
            Work::Sync {
                user,
                after,
                batch,
                changes,
                deflate,
                min_bytes,
            } => Completion::Synced {
                conn,
                reply: sync_frames(
                    &mut db,
                    user,
                    after,
                    batch,
                    changes,
                    (deflate, min_bytes, &mut deflater),
                ),
            },
        };
        if done.send(completion).is_err() {
            return;
        }
        stats.job_seconds[*class].observe_duration(at.elapsed());
        if let Err(e) = waker.wake() {
            warn!("cannot wake the event loop: {e}");
        }
    }
}

/// Waits `pause`; false once the workers are stopping.
fn pause(stop: &Receiver<()>, pause: Duration) -> bool {
    matches!(stop.recv_timeout(pause), Err(RecvTimeoutError::Timeout))
}

/// The watch thread: hands what `fastim admin` revoked to the loop (module docs).
fn watch_revocations(db: &Db, stop: &Receiver<()>, done: &Sender<Completion>, waker: &Waker) {
    // Only what is revoked from now on: sockets opened later are checked on opening.
    let mut cursor = None;
    loop {
        let Some(after) = cursor else {
            match db.revocation_cursor() {
                Ok(c) => cursor = Some(c),
                Err(e) => error!("reading revocations failed: {e}"),
            }
            if !pause(stop, REVOCATION_POLL) {
                return;
            }
            continue;
        };
        let full = match db.revocations_after(after, REVOCATION_PAGE) {
            Ok(rows) if rows.is_empty() => false,
            Ok(rows) => {
                let full = rows.len() == REVOCATION_PAGE;
                cursor = rows.last().map(|r| r.seq);
                let revoked = rows
                    .iter()
                    .map(|r| Revoked {
                        user: r.user,
                        session: r.session.as_ref().map(session_id),
                        reason: r.reason,
                    })
                    .collect();
                if done.send(Completion::Revoked(revoked)).is_err() {
                    return;
                }
                if let Err(e) = waker.wake() {
                    warn!("cannot wake the event loop: {e}");
                }
                full
            }
            Err(e) => {
                error!("reading revocations failed: {e}");
                false
            }
        };
        if !full && !pause(stop, REVOCATION_POLL) {
            return;
        }
    }
}

/// The retention thread: removes old messages now and at every interval.
fn retain(db: &mut Db, policy: Retention, stop: &Receiver<()>) {
    let keep_ms = i64::from(policy.days) * 86_400_000;
    loop {
        let cutoff = now_ms().saturating_sub(keep_ms);
        let mut removed = 0;
        loop {
            match db.remove_old_messages(cutoff, RETENTION_BATCH) {
                Ok(batch) => {
                    removed += batch.removed;
                    if !batch.more {
                        if removed > 0 {
                            info!(
                                "removed {removed} messages older than {} days; history \
                                 starts at message {}",
                                policy.days,
                                batch.horizon + 1
                            );
                        }
                        break;
                    }
                }
                Err(e) => {
                    error!("removing old messages failed (will try again): {e}");
                    break;
                }
            }
            if !pause(stop, RETENTION_PAUSE) {
                return;
            }
        }
        if !pause(stop, policy.interval) {
            return;
        }
    }
}

fn purge_sessions(db: &mut Db) {
    match db.delete_expired_sessions(now_ms()) {
        Ok(0) => {}
        Ok(n) => info!("deleted {n} expired sessions"),
        Err(e) => error!("deleting expired sessions failed: {e}"),
    }
}

/// Removes the pictures uploaded without a session that no account took within a day,
/// in batches with a pause between. False once the workers are stopping.
fn sweep_anonymous_uploads(db: &mut Db, files: &ResourceDir, asks: &Receiver<()>) -> bool {
    let cutoff = now_ms().saturating_sub(api::ANONYMOUS_UPLOAD_KEEP_MS);
    let mut removed = 0;
    loop {
        let remove = |name: &str| {
            if let Err(e) = files.remove(name) {
                warn!("cannot remove the anonymous upload {name}: {e}");
            }
        };
        match db.sweep_anonymous_uploads(cutoff, UPLOAD_SWEEP_BATCH, remove) {
            Ok(batch) => {
                removed += batch.removed;
                if !batch.more {
                    break;
                }
            }
            Err(e) => {
                error!("removing old anonymous uploads failed (will try again): {e}");
                break;
            }
        }
        // Another ask meanwhile changes nothing: this sweep goes on.
        if let Err(RecvTimeoutError::Disconnected) = asks.recv_timeout(RETENTION_PAUSE) {
            return false;
        }
    }
    if removed > 0 {
        info!(
            "removed {removed} files uploaded without a session that no account took within a day"
        );
    }
    true
}

/// 200 `{"code":0,"msg":"ok"}` when the database takes writes, else 503.
fn health(db: &mut Db, head_only: bool, keep_alive: bool) -> Vec<u8> {
    let mut bytes = match db.check_writable() {
        Ok(()) => {
            let mut out = Vec::new();
            crate::http::write_response(
                &mut out,
                Status::Ok,
                &[
                    ("Content-Type", "application/json; charset=utf-8"),
                    ("Cache-Control", "no-store"),
                    (
                        "Connection",
                        if keep_alive { "keep-alive" } else { "close" },
                    ),
                ],
                &crate::http::envelope(0, "ok"),
            );
            out
        }
        Err(e) => {
            error!("health check: the database is not writable: {e}");
            Refusal::new(Status::ServiceUnavailable, "the database is not writable")
                .retry_after(config::BUSY_RETRY_AFTER_SECS)
                .keep_alive(keep_alive)
                .to_bytes()
        }
    };
    if head_only {
        // The same head, no body (RFC 9110 §9.3.2).
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            bytes.truncate(end + 4);
        }
    }
    bytes
}

/// Reads a file and answers with it (or 404).
fn read_file(req: &FileRequest) -> Vec<u8> {
    match std::fs::read(&req.path) {
        Ok(body) => {
            let etag = req.etag.clone().unwrap_or_else(|| files::etag_of(&body));
            let file = File {
                body: body.into(),
                content_type: req.content_type,
                etag,
                caching: req.caching,
            };
            files::response(
                &file,
                req.head_only,
                req.if_none_match.as_deref(),
                req.keep_alive,
            )
        }
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound && e.kind() != io::ErrorKind::IsADirectory {
                warn!("reading {}: {e}", req.path.display());
            }
            Refusal::new(Status::NotFound, "not found")
                .keep_alive(req.keep_alive)
                .for_head(req.head_only)
                .to_bytes()
        }
    }
}

/// How a sync reply's deliveries are encoded: the connection's permessage-deflate,
/// the threshold, and this worker's own compressor.
type SyncDeflate<'a> = (Option<PerMessageDeflate>, usize, &'a mut Deflater);

/// A sync reply's encoded frames, counted by the worker as it writes them, so
/// the loop learns the numbers for its metrics without reading the frames again.
#[derive(Debug, Default)]
pub struct SyncReply {
    /// Encoded WebSocket frames.
    pub frames: Vec<u8>,
    /// How many.
    pub messages: u64,
    /// How many of them are compressed (RSV1).
    pub compressed: u64,
}

impl SyncReply {
    /// Appends one frame that `write` encodes.
    fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at = self.frames.len();
        write(&mut self.frames);
        if let Some(first) = self.frames.get(at) {
            self.messages += 1;
            self.compressed += u64::from(first & ws::deflate::RSV1 != 0);
        }
    }
}

/// The reply to a sync: the messages for `user` after `after` and, when `changes`
/// is given, the changes after that `seq`, then the closing frame; or all of it in
/// one `cmd 25` message with `batch`. Both within [`SYNC_LIMIT`],
/// [`SYNC_CHANGES_LIMIT`] and [`SYNC_MAX_BYTES`], with `more` when something waits.
fn sync_frames(
    db: &mut Db,
    user: i64,
    after: i64,
    batch: bool,
    changes: Option<i64>,
    deflate: SyncDeflate<'_>,
) -> SyncReply {
    let (deflate, min_bytes, deflater) = deflate;
    let mut reply = SyncReply::default();
    // A batch: the deliveries, and the changes, each as one JSON array, sent as one
    // (compressible) message.
    let mut batched = String::new();
    let mut changed = String::new();
    // The changes are read after the messages, and only up to the newest seq read
    // before them: a change committed before the messages were read is in them, one
    // committed after is in the log above `upto` (next sync, or live). Where history
    // starts is read last: retention running in between can only make it later,
    // never hide a gap the messages already show.
    let read = db
        .messages_for(user, after, SYNC_LIMIT + 1)
        .and_then(|messages| {
            let log = match changes {
                Some(seq) => {
                    let upto = db.latest_change()?;
                    Some((
                        db.changes_for(user, seq, upto, SYNC_CHANGES_LIMIT + 1)?,
                        upto,
                    ))
                }
                None => None,
            };
            Ok((messages, log, db.history_start()?))
        });
    let (messages, log, oldest) = match read {
        Ok(read) => read,
        Err(e) => {
            error!("sync for user {user} failed: {e}");
            let reply_error = Reply::Error {
                cmd: ERROR,
                client_ref: None,
                code: 500,
                msg: "sync failed; try again",
            };
            let error = reply_error.to_json();
            reply.push(|out| {
                let _ = ws::Sender::SHARED.send_text(&error, out);
            });
            return reply;
        }
    };
    let mut more = messages.len() > SYNC_LIMIT;
    let mut last = after;
    let full = |reply: &SyncReply, batched: &str, changed: &str| {
        reply.frames.len() + batched.len() + changed.len() >= SYNC_MAX_BYTES
    };
    let mut send = |reply: &mut SyncReply, batched: &mut String, json: String| {
        if batch {
            batched.push(if batched.is_empty() { '[' } else { ',' });
            batched.push_str(&json);
        } else {
            reply.push(|out| {
                deflater.write_message(deflate, min_bytes, OpCode::Text, json.as_bytes(), out)
            });
        }
    };
    for m in messages.iter().take(SYNC_LIMIT) {
        if full(&reply, &batched, &changed) {
            // Long messages: the rest comes with the client's next sync.
            more = true;
            break;
        }
        send(&mut reply, &mut batched, wire::delivery_json_for(m, user));
        last = m.id;
    }
    // The change cursor: the last change looked at, or `upto` once all were.
    let seq = log.map(|(rows, upto)| {
        let mut seq = changes.unwrap_or(0);
        let all = rows.len() <= SYNC_CHANGES_LIMIT;
        for c in rows.iter().take(SYNC_CHANGES_LIMIT) {
            if full(&reply, &batched, &changed) {
                more = true;
                return seq;
            }
            // A message past what this reply sent comes later as it is now.
            if c.message.id <= last {
                send(&mut reply, &mut changed, cmd::change_event_json(c));
            }
            seq = c.seq;
        }
        if all {
            upto.max(seq)
        } else {
            more = true;
            seq
        }
    });
    if batch {
        let array = |a: &mut String| {
            if a.is_empty() {
                a.push('[');
            }
            a.push(']');
        };
        array(&mut batched);
        // The closing frame's fields, with the messages (each a delivery as JSON) and
        // the changes (each a live event).
        let tail = match seq {
            Some(seq) => {
                array(&mut changed);
                format!(r#","changed":{changed},"changes":{seq}"#)
            }
            None => String::new(),
        };
        let json = format!(
            r#"{{"cmd":{SYNC_BATCH},"messages":{batched},"id":{last},"more":{more},"oldest":{oldest}{tail}}}"#
        );
        reply.push(|out| {
            deflater.write_message(deflate, min_bytes, OpCode::Text, json.as_bytes(), out)
        });
        return reply;
    }
    let done = Reply::SyncDone {
        cmd: SYNC_DONE,
        id: last,
        more,
        oldest,
        changes: seq,
    };
    let done = done.to_json();
    reply.push(|out| {
        let _ = ws::Sender::SHARED.send_text(&done, out);
    });
    reply
}

fn chat_writer(
    mut db: Db,
    work: &Receiver<ToWriter>,
    done: &Sender<Completion>,
    waker: &Waker,
    stats: &WorkerStats,
) {
    // Checkpoints run after a commit's results are on their way, not inside it.
    db.defer_checkpoints();
    while let Ok(first) = work.recv() {
        // Everything that queued up while the last commit was running goes in this one.
        let mut batch = Vec::new();
        let mut seen = Vec::new();
        let mut reads = Vec::new();
        let mut windows = None;
        for w in std::iter::once(first).chain(work.try_iter()) {
            match w {
                ToWriter::Chat(more, w) => {
                    batch.extend(more);
                    windows = Some(w);
                }
                ToWriter::LastSeen(more) => seen.extend(more),
                ToWriter::Reads(more) => reads.extend(more),
            }
        }
        if let Err(e) = db.set_last_seen(&seen) {
            // Only a time shown to contacts: the in-memory one stays right until a restart.
            warn!(
                "storing when {} users were last seen failed: {e}",
                seen.len()
            );
        }
        if let Some(windows) = windows.filter(|_| !batch.is_empty()) {
            if !commit_chat(&mut db, batch, windows, done, waker, stats) {
                return;
            }
        }
        // After the messages: a mark may name one committed just now.
        if !reads.is_empty() && !store_reads(&mut db, &reads, done, waker) {
            return;
        }
        // The acknowledgements are out: the loop and the clients go on meanwhile.
        if let Err(e) = db.checkpoint_if_due() {
            warn!("checkpoint failed: {e}");
        }
    }
}

/// Moves read markers forward in one transaction and tells the loop which moved;
/// false if the loop has gone.
fn store_reads(db: &mut Db, reads: &[ReadMark], done: &Sender<Completion>, waker: &Waker) -> bool {
    let moved: Vec<ReadMark> = match db.mark_read(reads) {
        Ok(ids) => reads
            .iter()
            .zip(ids)
            .filter_map(|(m, id)| Some(ReadMark { id: id?, ..*m }))
            .collect(),
        Err(e) => {
            // The clients mark again as they read on; nothing else depends on it.
            warn!("storing {} read markers failed: {e}", reads.len());
            Vec::new()
        }
    };
    let stored = reads.len();
    if done.send(Completion::Read { stored, moved }).is_err() {
        return false;
    }
    if let Err(e) = waker.wake() {
        warn!("cannot wake the event loop: {e}");
    }
    true
}

/// Commits one chat batch and hands the outcomes to the loop; false if it has gone.
/// The new messages go first, in one transaction, then the changes in another: a
/// change names a message its client already had acked.
fn commit_chat(
    db: &mut Db,
    batch: Vec<PendingChat>,
    windows: Windows,
    done: &Sender<Completion>,
    waker: &Waker,
    stats: &WorkerStats,
) -> bool {
    let mut sends = Vec::new();
    let mut changes = Vec::new();
    for p in batch {
        match p.write {
            ChatWrite::Send(m) => sends.push((p.conn, m)),
            ChatWrite::Change(c) => changes.push((p.conn, c)),
        }
    }
    let mut committed = Vec::with_capacity(sends.len() + changes.len());
    if !sends.is_empty() {
        let (conns, messages): (Vec<ConnRef>, Vec<Message>) = sends.into_iter().unzip();
        let started = Instant::now();
        let outcomes = commit_batch(db, &messages, now_ms());
        stats.commit_seconds.observe_duration(started.elapsed());
        stats.commit_batch.observe_units(messages.len() as u64);
        stats.commit_pages.observe_units(db.take_commit_pages());
        for ((conn, message), outcome) in conns.into_iter().zip(messages).zip(outcomes) {
            let sender = message.sender_id;
            let client_ref = message.client_ref.clone();
            let mut own_delivery = None;
            let delivery = match &outcome {
                Outcome::Saved(saved) if !saved.duplicate => {
                    let to = message.to;
                    let mut stored = message.stored(*saved);
                    if stored.reply_to != 0 {
                        // Read after the commit: it was checked inside it.
                        stored.quote = db.quote(stored.reply_to).unwrap_or_else(|e| {
                            warn!("reading the quote of message {}: {e}", stored.id);
                            None
                        });
                    }
                    if stored.client_ref.is_some() {
                        own_delivery = Some(frame_of(&wire::delivery_json_for(&stored, sender)));
                    }
                    Some((to, frame_of(&wire::delivery_json(&stored))))
                }
                _ => None,
            };
            committed.push(Committed {
                conn,
                sender,
                client_ref,
                outcome,
                delivery,
                own_delivery,
                echo: false,
            });
        }
    }
    if !changes.is_empty() {
        let (conns, changes): (Vec<ConnRef>, Vec<Change>) = changes.into_iter().unzip();
        let results = commit_changes(db, &changes, now_ms(), windows);
        for ((conn, change), result) in conns.into_iter().zip(changes).zip(results) {
            let (outcome, delivery) = match result {
                Ok(c) => (
                    Outcome::Saved(Saved {
                        id: c.message.id,
                        created_at: c.message.created_at,
                        duplicate: false,
                    }),
                    Some((c.message.to, frame_of(&cmd::change_event_json(&c)))),
                ),
                Err(refused) => (refused, None),
            };
            committed.push(Committed {
                conn,
                sender: change.user,
                client_ref: change.client_ref,
                outcome,
                delivery,
                own_delivery: None,
                echo: true,
            });
        }
    }
    if done.send(Completion::Committed(committed)).is_err() {
        return false;
    }
    if let Err(e) = waker.wake() {
        warn!("cannot wake the event loop: {e}");
    }
    true
}

/// A text frame, encoded once for every recipient.
fn frame_of(text: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(text.len() + 4);
    let _ = ws::Sender::SHARED.send_text(text, &mut frame);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Peer;
    use crate::store::testutil::{test_db, text, user};

    #[test]
    fn a_sync_reply_stops_at_its_byte_cap_and_says_more() {
        let mut t = test_db();
        let a = user(&mut t.db, "13900000001", 1).id;
        let b = user(&mut t.db, "13900000002", 1).id;
        t.db.add_friend(a, b, 1).expect("friends");
        let long = "x".repeat(4_000);
        let batch: Vec<_> = (0..200).map(|_| text(a, Peer::User(b), &long)).collect();
        t.db.save_messages(&batch, 2).expect("stored");
        let frames = sync_frames(
            &mut t.db,
            b,
            0,
            false,
            None,
            (None, 0, &mut Deflater::new()),
        )
        .frames;
        assert!(
            frames.len() <= SYNC_MAX_BYTES + 8 * 1024,
            "{} bytes in one sync reply",
            frames.len()
        );
        let tail = String::from_utf8_lossy(&frames[frames.len() - 40..]).into_owned();
        assert!(tail.contains(r#""more":true"#), "{tail}");
        // Short messages: all 200 in one reply, nothing more.
        let mut t = test_db();
        let a = user(&mut t.db, "13900000001", 1).id;
        let b = user(&mut t.db, "13900000002", 1).id;
        t.db.add_friend(a, b, 1).expect("friends");
        let batch: Vec<_> = (0..200).map(|_| text(a, Peer::User(b), "hi")).collect();
        t.db.save_messages(&batch, 2).expect("stored");
        let frames = sync_frames(
            &mut t.db,
            b,
            0,
            false,
            None,
            (None, 0, &mut Deflater::new()),
        )
        .frames;
        let tail = String::from_utf8_lossy(&frames[frames.len() - 40..]).into_owned();
        assert!(tail.contains(r#""more":false"#), "{tail}");
    }

    /// The payloads of the server frames in `bytes`, with their first byte.
    fn payloads(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((h, n)) = crate::ws::frame::decode_header(bytes).expect("valid frames") {
            let end = n + h.payload_len as usize;
            out.push((bytes[0], bytes[n..end].to_vec()));
            bytes = &bytes[end..];
        }
        out
    }

    #[test]
    fn a_batched_sync_is_one_message_with_the_same_deliveries_and_compresses() {
        let mut t = test_db();
        let a = user(&mut t.db, "13900000001", 1).id;
        let b = user(&mut t.db, "13900000002", 1).id;
        t.db.add_friend(a, b, 1).expect("friends");
        let batch: Vec<_> = (0..300)
            .map(|i| text(a, Peer::User(b), &format!("message {i}: see you at seven?")))
            .collect();
        t.db.save_messages(&batch, 2).expect("stored");
        let plain = payloads(
            &sync_frames(
                &mut t.db,
                b,
                0,
                false,
                None,
                (None, 0, &mut Deflater::new()),
            )
            .frames,
        );
        assert_eq!(plain.len(), 301, "300 deliveries and the closing frame");
        let one = payloads(
            &sync_frames(&mut t.db, b, 0, true, None, (None, 0, &mut Deflater::new())).frames,
        );
        assert_eq!(one.len(), 1);
        let reply: serde_json::Value = serde_json::from_slice(&one[0].1).expect("JSON");
        assert_eq!(reply["cmd"], 25);
        let done: serde_json::Value = serde_json::from_slice(&plain[300].1).expect("JSON");
        for field in ["id", "more", "oldest"] {
            assert_eq!(reply[field], done[field], "{field}");
        }
        let messages = reply["messages"].as_array().expect("an array");
        assert_eq!(messages.len(), 300);
        for (m, (_, d)) in messages.iter().zip(&plain) {
            let d: serde_json::Value = serde_json::from_slice(d).expect("JSON");
            assert_eq!(m, &d);
        }
        // With permessage-deflate the one message goes compressed (RSV1), and a
        // single short delivery would not have (under the threshold).
        let pmd = Some(PerMessageDeflate {
            server_window_bits: 15,
        });
        let frames = sync_frames(
            &mut t.db,
            b,
            0,
            true,
            None,
            (pmd, 1024, &mut Deflater::new()),
        )
        .frames;
        let z = payloads(&frames);
        assert_eq!(z.len(), 1);
        assert_eq!(z[0].0, 0x80 | 0x40 | 0x1, "final, compressed, text");
        let mut inflated = Vec::new();
        crate::ws::Inflater::new()
            .inflate(&z[0].1, 1 << 24, &mut inflated)
            .expect("inflates");
        assert_eq!(inflated, one[0].1);
        let plain_bytes: usize = plain.iter().map(|(_, p)| p.len() + 2).sum();
        assert!(
            frames.len() * 5 < plain_bytes,
            "{} compressed bytes against {plain_bytes} plain",
            frames.len()
        );
        // An empty batch is still one message, with an empty array.
        let empty = payloads(
            &sync_frames(
                &mut t.db,
                b,
                1_000_000,
                true,
                None,
                (None, 0, &mut Deflater::new()),
            )
            .frames,
        );
        let reply: serde_json::Value = serde_json::from_slice(&empty[0].1).expect("JSON");
        assert_eq!(reply["messages"], serde_json::json!([]));
        assert_eq!(reply["id"], 1_000_000);
    }

    #[test]
    fn a_sync_with_changes_sends_them_after_the_messages_and_pages_them() {
        use crate::store::{Change, Edit};
        let mut t = test_db();
        let a = user(&mut t.db, "13900000001", 1).id;
        let b = user(&mut t.db, "13900000002", 1).id;
        t.db.add_friend(a, b, 1).expect("friends");
        let n = SYNC_CHANGES_LIMIT + 20;
        let batch: Vec<_> = (0..n)
            .map(|i| text(a, Peer::User(b), &format!("m{i}")))
            .collect();
        let saved = t.db.save_messages(&batch, 2).expect("stored");
        let windows = Windows {
            recall_ms: 1_000,
            edit_ms: 1_000,
        };
        let edits: Vec<_> = saved
            .iter()
            .map(|s| Change {
                user: a,
                id: s.id,
                edit: Edit::Content("new".into()),
                client_ref: None,
            })
            .collect();
        t.db.change_messages(&edits, 3, windows).expect("edits");
        let last = saved[n - 1].id;
        let json = |frames: &[u8]| -> Vec<serde_json::Value> {
            payloads(frames)
                .iter()
                .map(|(_, p)| serde_json::from_slice(p).expect("JSON"))
                .collect()
        };
        // Without `changes`: only the closing frame, as before.
        let plain = json(
            &sync_frames(
                &mut t.db,
                b,
                last,
                false,
                None,
                (None, 0, &mut Deflater::new()),
            )
            .frames,
        );
        assert_eq!(plain.len(), 1);
        assert_eq!(
            plain[0],
            serde_json::json!({"cmd":23,"id":last,"more":false,"oldest":1})
        );
        // With them: a page of events, then more.
        let first = json(
            &sync_frames(
                &mut t.db,
                b,
                last,
                false,
                Some(0),
                (None, 0, &mut Deflater::new()),
            )
            .frames,
        );
        assert_eq!(first.len(), SYNC_CHANGES_LIMIT + 1);
        assert!(
            first[..SYNC_CHANGES_LIMIT]
                .iter()
                .all(|e| e["cmd"] == 17 && e["content"] == "new")
        );
        let done = &first[SYNC_CHANGES_LIMIT];
        assert_eq!(
            (done["cmd"].clone(), done["more"].clone()),
            (23.into(), true.into())
        );
        let seq = done["changes"].as_i64().expect("a seq");
        assert_eq!(
            seq,
            first[SYNC_CHANGES_LIMIT - 1]["seq"].as_i64().expect("seq")
        );
        // The rest, in a batch: the same events, and the newest seq.
        let rest = json(
            &sync_frames(
                &mut t.db,
                b,
                last,
                true,
                Some(seq),
                (None, 0, &mut Deflater::new()),
            )
            .frames,
        );
        assert_eq!(rest.len(), 1);
        let changed = rest[0]["changed"].as_array().expect("changed");
        assert_eq!(changed.len(), 20);
        assert_eq!(rest[0]["more"], false);
        assert_eq!(rest[0]["changes"], t.db.latest_change().expect("latest"));
        assert_eq!(rest[0]["messages"], serde_json::json!([]));
        // A change of a message this reply does not reach is left for later: the
        // message comes as it is now.
        let early = json(
            &sync_frames(
                &mut t.db,
                b,
                0,
                true,
                Some(0),
                (None, 0, &mut Deflater::new()),
            )
            .frames,
        );
        let changed = early[0]["changed"].as_array().expect("changed");
        let id = early[0]["id"].as_i64().expect("id");
        assert!(changed.iter().all(|e| e["id"].as_i64() <= Some(id)));
        assert_eq!(early[0]["messages"][0]["content"], "new");
    }

    #[test]
    fn a_sync_gives_the_ref_of_own_messages_only() {
        let mut t = test_db();
        let a = user(&mut t.db, "13900000001", 1).id;
        let b = user(&mut t.db, "13900000002", 1).id;
        t.db.add_friend(a, b, 1).expect("friends");
        let m = Message {
            client_ref: Some("r-1".into()),
            ..text(a, Peer::User(b), "hi")
        };
        t.db.save_messages(&[m], 2).expect("stored");
        let seen = |db: &mut Db, who: i64| -> serde_json::Value {
            let frames =
                sync_frames(db, who, 0, true, None, (None, 0, &mut Deflater::new())).frames;
            serde_json::from_slice(&payloads(&frames)[0].1).expect("JSON")
        };
        assert_eq!(seen(&mut t.db, a)["messages"][0]["ref"], "r-1");
        assert!(seen(&mut t.db, b)["messages"][0].get("ref").is_none());
    }
}

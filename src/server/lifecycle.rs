//! One connection's whole life as a state machine, sans-IO: no socket and no clock.
//!
//! ```text
//!  Request ──head──▶ Body ──complete──▶ Waiting ──reply──▶ Request (keep-alive)
//!     │  └─upload head─▶ Authorizing ─token ok─▶ Body            └──▶ Closing
//!     ├─/echo──────────────────────────────────▶ WebSocket ──close──▶ Closing ──FIN──▶ Lingering
//!     └─/chat─▶ Authorizing ─token ok─▶ WebSocket
//! ```
//!
//! Bytes come in through [`Lifecycle::handle_bytes`], time through
//! [`Lifecycle::handle_timeout`], and worker results through the `finish_*` methods;
//! output accumulates in [`Lifecycle::out`] for the driver to write, and
//! [`Lifecycle::handle_flushed`] tells the machine how that went. The driver asks
//! [`Lifecycle::wants_read`] before reading, [`Lifecycle::read_allowance`] for how
//! much, and [`Lifecycle::poll_timeout`] for when to call back.
//!
//! Every state has a deadline and a byte budget:
//!
//! | state | deadline | budget |
//! |---|---|---|
//! | Request | head within the handshake timeout | input ≤ head + API body; output ≤ [`config::HTTP_OUTPUT_BUDGET`] before the next pipelined request is read |
//! | Body | a byte every handshake timeout, and the whole at [`config::MIN_BODY_RATE`] | the declared length, grown as it arrives |
//! | Waiting, Authorizing | the worker's answer within the handshake timeout (else 503) | nothing is read |
//! | WebSocket | idle (echo) or ping/idle (chat); a started message progresses every frame timeout; a paused writer drains within the close timeout | output pauses reading above one message + 1 MiB; chat: [`Config::max_in_flight`] unacked messages, one sync running and one waiting |
//! | Closing, Lingering | the close timeout | input is discarded |
//!
//! Over a budget the machine stops consuming input and [`Lifecycle::wants_read`]
//! turns false: the driver stops reading, and TCP's window holds the sender.

use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::debug;

use super::chat;
use super::conn::Endpoint;
use super::echo;
use super::inspector;
use super::metrics::{self, Counters, Refused};
use super::outbound::{Flushed, Outbound};
use super::request::{self, Routed};
use super::workers::{Busy, ConnRef, Job, PendingChat, SyncReply, Ticket, Work};
use crate::api::{self, ApiReply, Upload};
use crate::config::{self, Config};
use crate::http::{self, HeadError, Refusal, Status};
use crate::im::cmd::{Fanout, SyncAfter};
use crate::im::index::ChatIndex;
use crate::throttle::Throttle;
use crate::ws::deflate::Agreement;
use crate::ws::{self, CloseCode, Codec, Event, Role, handshake};

/// Where a connection stands.
#[derive(Debug)]
pub enum State {
    /// Reading an HTTP request head (and a small API body with it).
    Request,
    /// Reading an upload's body as it arrives.
    Body {
        /// The upload so far; its body grows until `remaining` is 0.
        upload: Box<Upload>,
        /// Bytes of body still to come.
        remaining: usize,
        /// Whether to read the next request after the reply.
        keep_alive: bool,
        /// When the whole body must have arrived.
        until: Instant,
        /// This upload's place among the uploads read at once.
        slot: UploadSlot,
    },
    /// A request is with a worker; the reply is written when it comes back.
    Waiting {
        /// Whether to read the next request after the reply.
        keep_alive: bool,
        /// The account of a login, for the throttle once the outcome is known.
        login: Option<Box<str>>,
    },
    /// A token check runs before a `/chat` upgrade or an upload's body.
    Authorizing(Box<Authorized>),
    /// Upgraded: frames flow.
    WebSocket {
        /// The protocol state machine.
        ws: ws::Connection,
        /// The service behind the socket.
        endpoint: Endpoint,
    },
    /// A final response or close frame is queued; once it is written, the
    /// write side is shut down.
    Closing,
    /// Our side is shut down; input is discarded until the peer closes or the
    /// deadline passes.
    Lingering,
}

/// What follows a successful token check.
#[derive(Debug)]
pub enum Authorized {
    /// Send the 101 and open `/chat`.
    Upgrade {
        /// `Sec-WebSocket-Accept`.
        accept: Box<str>,
        /// The user id the client claimed (`?id=`), which must match the token's.
        claimed_user: Option<i64>,
        /// The permessage-deflate offer accepted, if any.
        deflate: Option<Agreement>,
    },
    /// Read the upload's body.
    Upload {
        /// The token, checked again with the body.
        token: String,
        /// `Content-Type`, with the boundary.
        content_type: String,
        /// Declared body length.
        content_length: usize,
        /// Whether the connection stays open after the reply.
        keep_alive: bool,
    },
}

impl State {
    /// For logs.
    pub fn name(&self) -> &'static str {
        match self {
            State::Request => "reading a request",
            State::Body { .. } => "sending a request body",
            State::Waiting { .. } => "waiting for its reply",
            State::Authorizing(_) => "waiting for its token check",
            State::WebSocket { .. } => "open",
            State::Closing => "closing",
            State::Lingering => "waiting for the peer to close",
        }
    }
}

/// One of a bounded number of uploads being read; the count drops when it is dropped.
#[derive(Debug)]
pub struct UploadSlot(Rc<Cell<usize>>);

impl UploadSlot {
    /// A slot, if fewer than `max` are taken from `counter`.
    pub fn take(counter: &Rc<Cell<usize>>, max: usize) -> Option<UploadSlot> {
        if counter.get() >= max {
            return None;
        }
        counter.set(counter.get() + 1);
        Some(UploadSlot(counter.clone()))
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// What the machine needs from the rest of the server.
pub trait Services {
    /// Queues a job for its worker pool, or refuses it if the pool's queue is full.
    fn submit(&mut self, job: Job) -> Result<(), Busy>;
    /// Queues a chat message for the writer, or refuses it if the writer's backlog is full.
    fn submit_chat(&mut self, chat: PendingChat) -> Result<(), Busy>;
    /// Queues frames for other connections (typing, presence), delivered at the end
    /// of the loop turn with no storage.
    fn fan_out(&mut self, fanouts: Vec<Fanout>);
    /// A place for an upload's body, if fewer than the maximum are being read.
    fn upload_slot(&mut self) -> Option<UploadSlot>;
    /// A frame inspector feed's command, for the loop to run after the turn.
    fn inspector(&mut self, _feed: ConnRef, _command: inspector::Command) {}
}

/// The loop state one call may use.
pub struct Env<'a> {
    /// The connection, as jobs name it.
    pub conn: ConnRef,
    /// The server's configuration.
    pub config: &'a Config,
    /// Workers and budgets shared by all connections.
    pub services: &'a mut dyn Services,
    /// Online chat connections, memberships and friendships.
    pub index: &'a mut ChatIndex,
    /// Login and registration limits.
    pub throttle: &'a mut Throttle,
    /// The TCP peer's address (behind a trusted proxy, the proxy's: the request
    /// router finds the client's).
    pub peer: IpAddr,
    /// The (de)compressor lent to every connection with permessage-deflate.
    pub codec: &'a mut Codec,
    /// The loop's counters.
    pub metrics: &'a mut Counters,
}

/// Whether the driver keeps the connection after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it.
    Keep,
    /// Close the socket now.
    Drop,
}

/// What the driver must do to the socket after a flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFlush {
    /// Nothing.
    Nothing,
    /// Shut down the write side: our final bytes are out (RFC 6455 §7.1.1: the
    /// server closes the TCP connection first).
    ShutdownWrite,
}

/// A chat connection's sync requests: one runs, one more may wait (later ones are
/// read only after it starts). The waiting one's cursors are kept beside it, boxed:
/// a waiting sync is rare, and the connection's slot stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sync {
    Idle,
    Running,
    /// One waits: `Lifecycle::queued` holds it.
    Queued,
}

/// One connection's state, deadlines, budgets and output.
#[derive(Debug)]
pub struct Lifecycle {
    state: State,
    /// The moment the times below count from (see [`Ms`]).
    born: Instant,
    /// The current state's deadline, where it has a fixed one (head, body,
    /// waiting, closing); WebSocket deadlines are computed from the times below.
    deadline: Ms,
    /// Bytes waiting for the socket.
    pub out: Outbound,
    /// Input read but not consumed: part of a head or frame header, or bytes that
    /// arrived while the connection was over a budget.
    /// Boxed twice so that none costs one word, not a slice's or a vector's
    /// several: kept input is rare, idle connections are many.
    #[allow(clippy::box_collection)]
    pending: Option<Box<Vec<u8>>>,
    /// When input last arrived.
    last_input: Ms,
    /// When the message in progress last grew, and how long it was then.
    last_progress: Ms,
    progress_mark: u32,
    /// When output was last written while reading was paused.
    last_write: Ms,
    /// Cancelled when the connection goes or stops waiting for its job.
    ticket: Option<Ticket>,
    /// Chat messages sent to the writer and not acked yet.
    in_flight: u16,
    sync: Sync,
    /// The sync that waits while `sync` is `Queued`.
    queued: Option<Box<SyncAfter>>,
    /// Reading is paused because the outbound queue is over its high-water mark.
    paused: bool,
    /// Input stopped at a budget; read again once it frees.
    starved: bool,
    /// Bytes of the next input that were kept from earlier reads, not new.
    reoffered: u32,
    /// A ping went out in this quiet spell.
    pinged: bool,
    /// The last [`Lifecycle::handle_bytes`] stopped because it had queued
    /// [`config::CORK_BYTES`]: the driver writes them, then offers the rest again.
    corked: bool,
    /// The frame inspector asked for the next echo in fragments of this many
    /// bytes (0: whole, as always).
    echo_fragments: u32,
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        if let Some(ticket) = &self.ticket {
            ticket.cancel();
        }
    }
}

/// A moment as milliseconds after a connection's base instant: a connection keeps
/// four times, and four of these cost half of one `Instant`, so idle connections
/// stay small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ms(u32);

impl Ms {
    /// No deadline.
    const NONE: Ms = Ms(u32::MAX);

    /// Offsets past this re-base the clock (about 12 days).
    const REBASE: u32 = 1 << 30;

    fn since(base: Instant, t: Instant) -> Ms {
        let ms = t.saturating_duration_since(base).as_millis();
        Ms(u32::try_from(ms).unwrap_or(u32::MAX))
    }
}

/// Most input a connection keeps while reading HTTP: a head and a small body.
const HTTP_INPUT: usize = config::MAX_REQUEST_HEAD + config::MAX_API_BODY;

impl Lifecycle {
    /// A connection accepted at `now`, expected to send its request head in time.
    pub fn new(now: Instant, config: &Config) -> Self {
        Lifecycle {
            state: State::Request,
            born: now,
            deadline: Ms::since(now, now + config.handshake_timeout),
            out: Outbound::default(),
            pending: None,
            last_input: Ms(0),
            last_progress: Ms(0),
            progress_mark: 0,
            last_write: Ms(0),
            ticket: None,
            in_flight: 0,
            sync: Sync::Idle,
            queued: None,
            paused: false,
            starved: false,
            reoffered: 0,
            pinged: false,
            corked: false,
            echo_fragments: 0,
        }
    }

    /// `t` as a time of this connection, re-basing the clock if it ran far.
    fn ms(&mut self, t: Instant) -> Ms {
        let ms = Ms::since(self.born, t);
        if ms.0 < Ms::REBASE {
            return ms;
        }
        // After about 12 days: move the base forward so the offsets keep fitting.
        let shift = Ms::REBASE / 2;
        self.born += Duration::from_millis(u64::from(shift));
        for m in [
            &mut self.last_input,
            &mut self.last_progress,
            &mut self.last_write,
        ] {
            m.0 = m.0.saturating_sub(shift);
        }
        if self.deadline != Ms::NONE {
            self.deadline.0 = self.deadline.0.saturating_sub(shift);
        }
        Ms::since(self.born, t)
    }

    /// The instant of a time of this connection.
    fn at(&self, ms: Ms) -> Instant {
        self.born + Duration::from_millis(u64::from(ms.0))
    }

    fn set_deadline(&mut self, at: Instant) {
        self.deadline = self.ms(at).min(Ms(Ms::NONE.0 - 1));
    }

    /// The current state's fixed deadline, if it has one.
    fn deadline(&self) -> Option<Instant> {
        (self.deadline != Ms::NONE).then(|| self.at(self.deadline))
    }

    /// Where the connection stands.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The chat user, if this is an open `/chat` socket.
    pub fn chat_user(&self) -> Option<(i64, u32)> {
        match &self.state {
            State::WebSocket {
                endpoint: Endpoint::Chat { user, session },
                ..
            } => Some((*user, *session)),
            _ => None,
        }
    }

    /// Whether the driver should read from the socket now.
    pub fn wants_read(&self, config: &Config) -> bool {
        match &self.state {
            State::Request | State::Body { .. } => self.out.len() <= config::HTTP_OUTPUT_BUDGET,
            State::Waiting { .. } | State::Authorizing(_) => false,
            State::WebSocket { ws, endpoint } => {
                !self.paused
                    && self.out.len() <= config::pause_reading_above(ws.limits())
                    && match endpoint {
                        Endpoint::Echo | Endpoint::Inspector => true,
                        Endpoint::Chat { .. } => self.chat_has_room(config),
                    }
            }
            State::Closing | State::Lingering => true,
        }
    }

    fn chat_has_room(&self, config: &Config) -> bool {
        chat_room(self.in_flight, self.sync, config)
    }

    /// How many bytes the driver may read for this connection now.
    pub fn read_allowance(&self) -> usize {
        match &self.state {
            State::Request => HTTP_INPUT.saturating_sub(self.pending_len()),
            State::Waiting { .. } | State::Authorizing(_) => 0,
            _ => config::READ_BUFFER.saturating_sub(self.pending_len()),
        }
    }

    /// Marks the connection as not read although input may be waiting; see
    /// [`Lifecycle::take_resume`].
    pub fn starve(&mut self) {
        self.starved = true;
    }

    /// Whether the driver should read again now: input stopped at a budget that has
    /// since freed.
    pub fn take_resume(&mut self, config: &Config) -> bool {
        if self.starved && self.wants_read(config) {
            self.starved = false;
            true
        } else {
            false
        }
    }

    /// Input kept from earlier reads; the driver puts it before new bytes.
    pub fn take_pending(&mut self) -> Vec<u8> {
        let pending = self.pending.take().map(|b| *b).unwrap_or_default();
        // Offered again, these bytes are not new activity (idle and ping clocks).
        self.reoffered = u32::try_from(pending.len()).unwrap_or(u32::MAX);
        pending
    }

    fn pending_len(&self) -> usize {
        self.pending.as_ref().map_or(0, |p| p.len())
    }

    /// Keeps unconsumed input for the next call.
    pub fn keep_pending(&mut self, input: &[u8]) {
        self.pending = (!input.is_empty()).then(|| Box::new(input.to_vec()));
    }

    /// Whether input is kept.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Handles input; returns how many bytes of `input` were consumed. The rest must
    /// come back first in the next call. Stops early at a budget.
    pub fn handle_bytes(&mut self, now: Instant, input: &mut [u8], env: &mut Env<'_>) -> usize {
        let fresh = input.len() > self.reoffered as usize;
        self.reoffered = 0;
        if fresh {
            self.last_input = self.ms(now);
            self.pinged = false;
        }
        let mut pos = 0;
        // Output this call may queue before it hands the socket a turn (see
        // [`Lifecycle::take_corked`]).
        let cork_at = self.out.len().saturating_add(config::CORK_BYTES);
        self.corked = false;
        loop {
            let before = pos;
            let rest = &mut input[pos..];
            pos += match self.state {
                State::Request => self.on_request(now, rest, env),
                State::Body { .. } => self.on_body(now, rest, env),
                State::Waiting { .. } | State::Authorizing(_) => 0,
                State::WebSocket { .. } => self.on_frames(now, rest, env, cork_at),
                State::Closing | State::Lingering => rest.len(),
            };
            if pos == before || pos == input.len() {
                break;
            }
        }
        if pos < input.len()
            && self.out.len() >= cork_at
            && matches!(self.state, State::WebSocket { .. })
        {
            self.corked = true;
        }
        // Stopped at a budget (not merely at incomplete input, which only more bytes
        // can finish): read again once the budget frees.
        if pos < input.len() && !self.wants_read(env.config) {
            self.starved = true;
        }
        self.note_progress(now);
        pos
    }

    /// Whether the last [`Lifecycle::handle_bytes`] stopped with input left because
    /// it had queued [`config::CORK_BYTES`] of output: the driver should write
    /// them now and offer the rest again, so the peer reads the first replies
    /// while the rest are made (a client with many messages in flight then never
    /// waits for the whole batch). Cleared by asking.
    pub fn take_corked(&mut self) -> bool {
        std::mem::take(&mut self.corked)
    }

    /// The next moment [`Lifecycle::handle_timeout`] has something to do.
    pub fn poll_timeout(&self, config: &Config) -> Option<Instant> {
        let State::WebSocket { ws, endpoint } = &self.state else {
            return self.deadline();
        };
        let mut next = match endpoint {
            Endpoint::Echo | Endpoint::Inspector => {
                self.at(self.last_input) + config.echo_idle_timeout
            }
            Endpoint::Chat { .. } if self.pinged => {
                self.at(self.last_input) + config.ping_interval.mul_f64(config::IDLE_PINGS)
            }
            Endpoint::Chat { .. } => self.at(self.last_input) + config.ping_interval,
        };
        if ws.mid_message() {
            next = next.min(self.at(self.last_progress) + config.frame_timeout);
        }
        if self.paused {
            next = next.min(self.at(self.last_write) + config.close_timeout);
        }
        Some(next)
    }

    /// Acts on whatever deadline has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant, env: &mut Env<'_>) -> Verdict {
        let config = env.config;
        let (last_input, last_progress, last_write) = (
            self.at(self.last_input),
            self.at(self.last_progress),
            self.at(self.last_write),
        );
        match &mut self.state {
            State::Request | State::Body { .. } | State::Closing | State::Lingering => {
                if self.deadline().is_some_and(|d| d <= now) {
                    debug!("#{}: timed out while {}", env.conn.key, self.state.name());
                    return Verdict::Drop;
                }
            }
            State::Waiting { .. } | State::Authorizing(_) => {
                if self.deadline().is_some_and(|d| d <= now) {
                    debug!("#{}: no worker answer in time", env.conn.key);
                    env.metrics.refused(Refused::Busy);
                    self.cancel_job();
                    self.refuse(now, Why::Busy, Close::Yes, config);
                }
            }
            State::WebSocket { ws, endpoint } => {
                if self.paused && now >= last_write + config.close_timeout {
                    debug!(
                        "#{}: not reading ({} bytes queued): disconnecting",
                        env.conn.key,
                        self.out.len()
                    );
                    env.metrics.slow_consumers_dropped += 1;
                    return Verdict::Drop;
                }
                let quiet = now.saturating_duration_since(last_input);
                let close = if ws.mid_message() && now >= last_progress + config.frame_timeout {
                    Some((CloseCode::POLICY_VIOLATION, "message not completed in time"))
                } else {
                    match endpoint {
                        Endpoint::Echo | Endpoint::Inspector
                            if quiet >= config.echo_idle_timeout =>
                        {
                            Some((CloseCode::GOING_AWAY, "idle timeout"))
                        }
                        Endpoint::Chat { .. }
                            if quiet >= config.ping_interval.mul_f64(config::IDLE_PINGS) =>
                        {
                            Some((CloseCode::GOING_AWAY, "idle timeout"))
                        }
                        Endpoint::Chat { .. } if quiet >= config.ping_interval && !self.pinged => {
                            // Once per quiet spell; browsers answer pings by themselves.
                            let _ = ws.send_ping(b"", self.out.tail());
                            self.pinged = true;
                            None
                        }
                        _ => None,
                    }
                };
                if let Some((code, reason)) = close {
                    debug!("#{}: {reason}: closing", env.conn.key);
                    self.close(now, code, reason, env);
                }
            }
        }
        Verdict::Keep
    }

    /// Frees the message buffer of a quiet WebSocket (busy ones reuse theirs).
    pub fn release_idle(&mut self, now: Instant, quiet: Duration) {
        let last_input = self.at(self.last_input);
        if let State::WebSocket { ws, .. } = &mut self.state {
            if now.saturating_duration_since(last_input) >= quiet {
                ws.release_idle_buffer();
            }
        }
    }

    /// Whether the outbound queue is past the hard bound that only other
    /// connections' fan-out can reach: the reader is too far behind.
    pub fn over_hard_bound(&self) -> bool {
        match &self.state {
            State::WebSocket { ws, .. } => self.out.len() > config::max_outbound(ws.limits()),
            _ => false,
        }
    }

    /// Called after output was queued: pauses reading above the high-water mark.
    pub fn note_output(&mut self, now: Instant) {
        if self.must_pause() {
            self.paused = true;
            self.last_write = self.ms(now);
        }
    }

    /// Whether [`Lifecycle::note_output`] would pause reading: the driver asks
    /// first, so that a fan-out to many connections reads the clock only for the
    /// few that pause.
    pub fn must_pause(&self) -> bool {
        match &self.state {
            State::WebSocket { ws, .. } => {
                !self.paused && self.out.len() > config::pause_reading_above(ws.limits())
            }
            _ => false,
        }
    }

    /// The driver wrote what the socket took: `progressed` if any byte went out.
    pub fn handle_flushed(
        &mut self,
        now: Instant,
        flushed: Flushed,
        progressed: bool,
    ) -> AfterFlush {
        if progressed {
            self.last_write = self.ms(now);
        }
        if self.paused {
            if let State::WebSocket { ws, .. } = &self.state {
                if self.out.len() <= config::pause_reading_above(ws.limits()) / 2 {
                    self.paused = false;
                    self.starved = true;
                }
            }
        }
        if flushed == Flushed::All && matches!(self.state, State::Closing) {
            self.state = State::Lingering;
            return AfterFlush::ShutdownWrite;
        }
        AfterFlush::Nothing
    }

    /// Closes an open WebSocket with `code` (shutdown, logout, timeouts); any other
    /// state is simply ended. Returns whether the driver should drop the socket now.
    pub fn close(
        &mut self,
        now: Instant,
        code: CloseCode,
        reason: &str,
        env: &mut Env<'_>,
    ) -> Verdict {
        match &mut self.state {
            State::WebSocket { ws, .. } => {
                match ws.send_close(Some(code), reason, self.out.tail()) {
                    Ok(()) => env.metrics.close_sent(Some(code)),
                    Err(e) => debug!("#{}: {e}", env.conn.key),
                }
                self.begin_closing(now, env);
                Verdict::Keep
            }
            State::Closing | State::Lingering => Verdict::Keep,
            _ => Verdict::Drop,
        }
    }

    /// Queues a text frame on an open WebSocket (an ack, an error); nothing after our
    /// close frame (RFC 6455 §5.5.1). Returns whether it was queued.
    pub fn send_text(&mut self, text: &str) -> bool {
        match &self.state {
            // Refused after our close frame (RFC 6455 §5.5.1): the reply is for nobody.
            State::WebSocket { ws, .. } => ws.send_text(text, self.out.tail()).is_ok(),
            _ => false,
        }
    }

    /// Queues a ping on an open WebSocket (the frame inspector's "server ping").
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), ws::SendError> {
        match &self.state {
            State::WebSocket { ws, .. } => ws.send_ping(payload, self.out.tail()),
            _ => Err(ws::SendError::Closed),
        }
    }

    /// The next message an `/echo` connection echoes goes out in fragments of
    /// `size` bytes (the frame inspector's command).
    pub fn fragment_next_echo(&mut self, size: u32) {
        self.echo_fragments = size;
    }

    /// The permessage-deflate an open WebSocket negotiated (RFC 7692).
    pub fn deflate(&self) -> Option<ws::PerMessageDeflate> {
        match &self.state {
            State::WebSocket { ws, .. } => ws.deflate(),
            _ => None,
        }
    }

    /// Queues a frame encoded once for many recipients, on an open WebSocket.
    /// Returns whether it was queued.
    pub fn send_shared(&mut self, frame: Rc<[u8]>) -> bool {
        if let State::WebSocket { ws, .. } = &self.state {
            // Encoded once for every recipient; the protocol says whether it may go.
            if ws.may_send().is_ok() {
                self.out.push_shared(frame);
                return true;
            }
        }
        false
    }

    /// A chat message of this connection was acked or refused by the writer.
    pub fn finish_chat(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A sync reply came back.
    pub fn finish_sync(&mut self, reply: &SyncReply, env: &mut Env<'_>) {
        if !matches!(self.state, State::WebSocket { .. }) {
            return;
        }
        self.out.tail().extend_from_slice(&reply.frames);
        env.metrics.messages_sent[metrics::CHAT] += reply.messages;
        env.metrics.messages_sent_compressed[metrics::CHAT] += reply.compressed;
        let queued = std::mem::replace(&mut self.sync, Sync::Idle);
        let waiting = self.queued.take();
        if let (Sync::Queued, Some(sync), Some((user, _))) = (queued, waiting, self.chat_user()) {
            self.start_sync(user, *sync, env);
        }
    }

    /// A worker's complete HTTP response (a file) for the waiting request.
    pub fn finish_response(&mut self, now: Instant, response: &[u8], config: &Config) {
        let State::Waiting { keep_alive, .. } = self.state else {
            return;
        };
        self.ticket = None;
        self.out.tail().extend_from_slice(response);
        self.after_answer(now, keep_alive, config);
    }

    /// An API reply for the waiting request. Returns its effect on the loop's state,
    /// which applies whether or not the connection is still there.
    pub fn finish_api(&mut self, now: Instant, reply: ApiReply, env: &mut Env<'_>) {
        let State::Waiting { keep_alive, login } = &mut self.state else {
            return;
        };
        let keep_alive = *keep_alive;
        if let Some(account) = login.take() {
            if reply.set_cookie.is_some() {
                env.throttle.login_succeeded(now, &account);
            } else if reply.status == Status::Ok {
                // fastIM's shape: a wrong password is HTTP 200 with code -1.
                env.throttle.login_failed(now, env.peer, &account);
            }
        }
        self.ticket = None;
        let mut headers = vec![
            ("Content-Type", "application/json; charset=utf-8"),
            ("Cache-Control", "no-store"),
            (
                "Connection",
                if keep_alive { "keep-alive" } else { "close" },
            ),
        ];
        if let Some(cookie) = &reply.set_cookie {
            headers.push(("Set-Cookie", cookie));
        }
        http::write_response(self.out.tail(), reply.status, &headers, &reply.body);
        self.after_answer(now, keep_alive, env.config);
    }

    /// A token check came back: upgrade to `/chat`, start reading an upload's body,
    /// or refuse with 401.
    pub fn finish_auth(
        &mut self,
        now: Instant,
        user: Option<i64>,
        session: u32,
        env: &mut Env<'_>,
    ) {
        if !matches!(self.state, State::Authorizing(_)) {
            return;
        }
        let State::Authorizing(next) = std::mem::replace(&mut self.state, State::Request) else {
            return;
        };
        self.ticket = None;
        let config = env.config;
        match (*next, user) {
            (
                Authorized::Upgrade {
                    accept,
                    claimed_user,
                    deflate,
                },
                Some(user),
            ) if claimed_user.is_none_or(|claimed| claimed == user) => {
                let extensions = deflate.as_ref().map(|a| a.response.as_str());
                handshake::write_accept(self.out.tail(), &accept, extensions);
                self.state = State::WebSocket {
                    ws: ws::Connection::new(Role::Server, config::CHAT_LIMITS)
                        .with_deflate(deflate.map(|a| a.params)),
                    endpoint: Endpoint::Chat { user, session },
                };
                env.metrics.handshakes[metrics::CHAT] += 1;
                self.deadline = Ms::NONE;
                self.last_input = self.ms(now);
                env.index.connect(user, env.conn.key);
                debug!("#{}: chat open for user {user}", env.conn.key);
                // Frames may have arrived right behind the request.
                self.starved = true;
            }
            (
                Authorized::Upload {
                    token,
                    content_type,
                    content_length,
                    keep_alive,
                },
                Some(_),
            ) => {
                let upload = Upload {
                    token: Some(token),
                    content_type,
                    body: Vec::new(),
                    max_file: config.max_upload,
                    now_ms: 0,
                };
                self.start_body(now, upload, content_length, keep_alive, env);
            }
            (Authorized::Upgrade { .. }, _) => {
                env.metrics.refused(Refused::AuthFailed);
                self.refuse(
                    now,
                    Why::Status(Status::Unauthorized, "invalid or expired session token"),
                    Close::Yes,
                    config,
                );
            }
            (Authorized::Upload { .. }, None) => {
                env.metrics.refused(Refused::AuthFailed);
                self.refuse(
                    now,
                    Why::Status(Status::Unauthorized, api::MSG_SESSION_INVALID),
                    Close::Yes,
                    config,
                );
            }
        }
    }

    /// Starts reading an upload's body (its token, if any, checked), or refuses it
    /// with 503 if too many are being read.
    fn start_body(
        &mut self,
        now: Instant,
        upload: Upload,
        content_length: usize,
        keep_alive: bool,
        env: &mut Env<'_>,
    ) {
        let config = env.config;
        let Some(slot) = env.services.upload_slot() else {
            env.metrics.refused(Refused::Busy);
            return self.refuse(now, Why::Busy, Close::Yes, config);
        };
        let allowed = Duration::from_secs(content_length as u64 / config::MIN_BODY_RATE);
        self.state = State::Body {
            upload: Box::new(upload),
            remaining: content_length,
            keep_alive,
            until: now + config.handshake_timeout + allowed,
            slot,
        };
        self.set_deadline(now + config.handshake_timeout);
        self.starved = true;
        if content_length == 0 {
            // Nothing to read: hand it over at once.
            self.on_body(now, &mut [], env);
        }
    }

    // ---- input, by state ----

    /// One request head at the start of `input`; returns the bytes consumed.
    fn on_request(&mut self, now: Instant, input: &mut [u8], env: &mut Env<'_>) -> usize {
        if self.out.len() > config::HTTP_OUTPUT_BUDGET {
            // Pipelined requests wait until the client takes its replies.
            return 0;
        }
        let config = env.config;
        let (head_len, routed) = match http::parse_head(input, config::MAX_REQUEST_HEAD) {
            Ok(None) => return 0,
            Ok(Some(head)) => (head.len, request::route(&head, config, env.peer)),
            Err(HeadError::TooLarge) => {
                self.refuse(
                    now,
                    Why::Status(Status::HeaderFieldsTooLarge, "request head too large"),
                    Close::Yes,
                    config,
                );
                return input.len();
            }
            Err(HeadError::Malformed) => {
                self.refuse(
                    now,
                    Why::Status(Status::BadRequest, "malformed request"),
                    Close::Yes,
                    config,
                );
                return input.len();
            }
        };
        match routed {
            Routed::Upgrade {
                endpoint,
                accept,
                deflate,
            } => {
                let extensions = deflate.as_ref().map(|a| a.response.as_str());
                handshake::write_accept(self.out.tail(), &accept, extensions);
                self.state = State::WebSocket {
                    ws: ws::Connection::new(Role::Server, endpoint_limits(endpoint))
                        .with_deflate(deflate.map(|a| a.params)),
                    endpoint,
                };
                env.metrics.handshakes[metrics::endpoint(endpoint)] += 1;
                self.deadline = Ms::NONE;
                self.last_progress = self.ms(now);
                if endpoint == Endpoint::Inspector {
                    env.services.inspector(env.conn, inspector::Command::Open);
                }
                head_len
            }
            Routed::Api {
                mut request,
                client,
                content_length,
                keep_alive,
            } => {
                let end = head_len + content_length;
                let Some(body) = input.get(head_len..end) else {
                    // The body has not all arrived (it fits the input allowance).
                    return 0;
                };
                request.body = body.to_vec();
                let login = match request.route {
                    api::Route::Login => {
                        let account = api::login_account(&request).unwrap_or_default();
                        if let Err(wait) = env.throttle.check_login(now, client, &account) {
                            env.metrics.refused(Refused::RateLimit);
                            self.refuse(now, Why::Throttled(wait), Close::from(keep_alive), config);
                            return end;
                        }
                        Some(account.into_boxed_str())
                    }
                    api::Route::Register => {
                        if let Err(wait) = env.throttle.check_register(now, client) {
                            env.metrics.refused(Refused::RateLimit);
                            self.refuse(now, Why::Throttled(wait), Close::from(keep_alive), config);
                            return end;
                        }
                        None
                    }
                    _ => None,
                };
                self.hand_off(
                    now,
                    Work::Api(request),
                    State::Waiting { keep_alive, login },
                    env,
                );
                end
            }
            Routed::Upload {
                token: None,
                client,
                content_type,
                content_length,
                keep_alive,
            } => {
                // Without a session: a small picture, at the throttle's rate, before a
                // byte of the body is read.
                if let Err(wait) = env.throttle.check_anonymous_upload(now, client) {
                    env.metrics.refused(Refused::RateLimit);
                    self.refuse(now, Why::Throttled(wait), Close::Yes, config);
                    return input.len();
                }
                let upload = Upload {
                    token: None,
                    content_type,
                    body: Vec::new(),
                    max_file: request::anonymous_upload_max(config),
                    now_ms: 0,
                };
                self.start_body(now, upload, content_length, keep_alive, env);
                head_len
            }
            Routed::Upload {
                token: Some(token),
                content_type,
                content_length,
                keep_alive,
                ..
            } => {
                // The token is checked before a byte of the body is read.
                let work = Work::Authenticate {
                    token: token.clone(),
                };
                let next = Authorized::Upload {
                    token,
                    content_type,
                    content_length,
                    keep_alive,
                };
                self.hand_off(now, work, State::Authorizing(Box::new(next)), env);
                head_len
            }
            Routed::ReadFile(file) => {
                let keep_alive = file.keep_alive;
                self.hand_off(
                    now,
                    Work::ReadFile(file),
                    State::Waiting {
                        keep_alive,
                        login: None,
                    },
                    env,
                );
                head_len
            }
            Routed::Health {
                head_only,
                keep_alive,
            } => {
                self.hand_off(
                    now,
                    Work::Health {
                        head_only,
                        keep_alive,
                    },
                    State::Waiting {
                        keep_alive,
                        login: None,
                    },
                    env,
                );
                head_len
            }
            Routed::Reply {
                response,
                keep_alive,
            } => {
                self.out.tail().extend_from_slice(&response);
                self.after_answer(now, keep_alive, config);
                if keep_alive { head_len } else { input.len() }
            }
            Routed::Authenticate {
                accept,
                token,
                claimed_user,
                deflate,
            } => {
                let next = Authorized::Upgrade {
                    accept: accept.into_boxed_str(),
                    claimed_user,
                    deflate,
                };
                self.hand_off(
                    now,
                    Work::Authenticate { token },
                    State::Authorizing(Box::new(next)),
                    env,
                );
                head_len
            }
            Routed::Refuse(refusal) => {
                match refusal.status {
                    // The router's one 403: a /chat upgrade from a foreign origin.
                    Status::Forbidden => env.metrics.refused(Refused::Origin),
                    // No session token with a request that needs one.
                    Status::Unauthorized => env.metrics.refused(Refused::AuthFailed),
                    _ => {}
                }
                self.answer(now, &refusal, config);
                if refusal.keep_alive {
                    head_len
                } else {
                    input.len()
                }
            }
        }
    }

    /// Gives work to a worker pool and waits in `waiting`, or answers 503 at once.
    fn hand_off(&mut self, now: Instant, work: Work, waiting: State, env: &mut Env<'_>) {
        let ticket = Ticket::new();
        let job = Job {
            conn: env.conn,
            ticket: ticket.clone(),
            work,
        };
        if env.services.submit(job).is_err() {
            env.metrics.refused(Refused::WorkerQueueFull);
            return self.refuse(now, Why::Busy, Close::Yes, env.config);
        }
        self.ticket = Some(ticket);
        self.state = waiting;
        self.set_deadline(now + env.config.handshake_timeout);
    }

    /// Appends the arriving part of an upload's body; hands it to a worker once it
    /// is complete. The loop never waits for a slow body.
    fn on_body(&mut self, now: Instant, input: &mut [u8], env: &mut Env<'_>) -> usize {
        let config = env.config;
        let State::Body {
            upload,
            remaining,
            until,
            ..
        } = &mut self.state
        else {
            return 0;
        };
        let n = input.len().min(*remaining);
        if upload.body.try_reserve(n).is_err() {
            env.metrics.refused(Refused::Busy);
            self.refuse(now, Why::Busy, Close::Yes, config);
            return input.len();
        }
        upload.body.extend_from_slice(&input[..n]);
        *remaining -= n;
        let (done, until) = (*remaining == 0, *until);
        if n > 0 {
            // A large upload on a slow link may take long, but not forever.
            self.set_deadline((now + config.handshake_timeout).min(until));
        }
        if done {
            let State::Body {
                upload, keep_alive, ..
            } = std::mem::replace(&mut self.state, State::Request)
            else {
                return n;
            };
            self.hand_off(
                now,
                Work::Upload(upload),
                State::Waiting {
                    keep_alive,
                    login: None,
                },
                env,
            );
        }
        n
    }

    /// Runs frames through the protocol machine and the endpoint while the budgets
    /// allow; returns the bytes consumed.
    fn on_frames(
        &mut self,
        now: Instant,
        input: &mut [u8],
        env: &mut Env<'_>,
        cork_at: usize,
    ) -> usize {
        let config = env.config;
        let mut pos = 0;
        let State::WebSocket { ws, endpoint } = &mut self.state else {
            return 0;
        };
        let endpoint = *endpoint;
        let deflate = ws.deflate();
        let mut closing = false;
        let pause_above = config::pause_reading_above(ws.limits());
        loop {
            // Budgets are checked before each frame: a client that pipelines faster
            // than it reads is slowed down here, never cut off.
            let queued = self.out.len();
            let room = queued <= pause_above
                && queued < cork_at
                && match endpoint {
                    Endpoint::Echo | Endpoint::Inspector => true,
                    Endpoint::Chat { .. } => chat_room(self.in_flight, self.sync, config),
                };
            if !room {
                break;
            }
            if ws.wants_buffer() {
                // A large payload is being gathered: into a kept buffer, not a growing one.
                // Its own smaller buffer is let go: kept, it would only crowd the spares.
                if let Some(spare) = env.codec.spares.take_larger_than(ws.buffer_capacity()) {
                    drop(ws.give_buffer(spare));
                }
            }
            // For the echo, which is encoded while the message still borrows `ws`.
            let sender = ws.sender();
            let open = ws.phase() == ws::Phase::Open;
            // The protocol answers pings and close frames itself, into the same queue.
            match ws.handle_bytes_with(&mut env.codec.inflater, &mut input[pos..], self.out.tail())
            {
                Ok((0, None)) => break,
                Ok((n, None)) => pos += n,
                Ok((n, Some(event))) => {
                    pos += n;
                    match event {
                        Event::Message(message) => match endpoint {
                            Endpoint::Echo => {
                                env.metrics.messages_received[metrics::ECHO] += 1;
                                env.metrics.messages_sent[metrics::ECHO] += 1;
                                let (opcode, len) = echo::shape(&message);
                                if self.echo_fragments != 0 {
                                    // The inspector's fragmented echo (RFC 6455 §5.4).
                                    echo::reply_fragmented(
                                        message,
                                        sender,
                                        std::mem::take(&mut self.echo_fragments),
                                        inspector::MAX_FRAGMENTS,
                                        &mut self.out,
                                    );
                                } else if deflate.is_some_and(|d| d.compresses())
                                    && len >= config.deflate_min_bytes
                                {
                                    // RFC 7692 §7.2.1: compressed, with RSV1.
                                    let zipped = echo::reply_compressed(
                                        message,
                                        deflate,
                                        config.deflate_min_bytes,
                                        &mut env.codec.deflater,
                                        &mut self.out,
                                    );
                                    env.metrics.messages_sent_compressed[metrics::ECHO] +=
                                        u64::from(zipped);
                                } else if len < echo::ZERO_COPY_MIN {
                                    echo::reply(message, sender, &mut self.out);
                                } else {
                                    match ws.take_message() {
                                        Some(payload) => {
                                            // The buffer itself goes out behind its header.
                                            if ws
                                                .send_header(opcode, payload.len(), self.out.tail())
                                                .is_ok()
                                            {
                                                self.out.push_owned(payload);
                                            }
                                        }
                                        // Delivered from the input: its payload ends where the call stopped.
                                        None => {
                                            let _ = ws.send_data(
                                                opcode,
                                                &input[pos - len..pos],
                                                self.out.tail(),
                                            );
                                        }
                                    }
                                }
                            }
                            Endpoint::Chat { user, .. } => {
                                env.metrics.messages_received[metrics::CHAT] += 1;
                                let mut turn = chat::Turn {
                                    conn: env.conn,
                                    user,
                                    services: &mut *env.services,
                                    index: &mut *env.index,
                                    deflate,
                                    deflate_min_bytes: config.deflate_min_bytes,
                                };
                                let reply = match chat::on_message(message, &mut turn, now) {
                                    chat::Sent::Nothing => None,
                                    chat::Sent::Reply(reply) => Some(reply),
                                    chat::Sent::Message => {
                                        self.in_flight += 1;
                                        None
                                    }
                                    chat::Sent::Sync(after) => match self.sync {
                                        Sync::Idle => {
                                            let ticket = Ticket::new();
                                            match chat::start_sync(&mut turn, after, &ticket) {
                                                Ok(()) => {
                                                    self.sync = Sync::Running;
                                                    self.ticket = Some(ticket);
                                                    None
                                                }
                                                Err(busy) => Some(busy),
                                            }
                                        }
                                        Sync::Running | Sync::Queued => {
                                            self.sync = Sync::Queued;
                                            self.queued = Some(Box::new(after));
                                            None
                                        }
                                    },
                                };
                                if let Some(reply) = reply {
                                    // The message's borrow has ended: the connection sends.
                                    if ws.send_text(&reply, self.out.tail()).is_ok() {
                                        env.metrics.messages_sent[metrics::CHAT] += 1;
                                    }
                                }
                            }
                            Endpoint::Inspector => match inspector::Command::parse(message) {
                                Ok(command) => env.services.inspector(env.conn, command),
                                Err(msg) => {
                                    let _ =
                                        ws.send_text(&inspector::error_json(&msg), self.out.tail());
                                }
                            },
                        },
                        // Already answered by the protocol (its pong, its close frame).
                        Event::Ping(_) | Event::Pong(_) => {}
                        Event::Close(frame) => {
                            env.metrics.close_received(frame.code);
                            if open {
                                // The protocol echoed the code (RFC 6455 §5.5.1).
                                env.metrics.close_sent(frame.code);
                            }
                            closing = true;
                            pos = input.len();
                            break;
                        }
                    }
                }
                Err(e) => {
                    // The protocol has queued the close frame with the error's code.
                    debug!("#{}: protocol error: {e}", env.conn.key);
                    env.metrics.protocol_error(e.close_code());
                    if open {
                        env.metrics.close_sent(Some(e.close_code()));
                    }
                    closing = true;
                    pos = input.len();
                    break;
                }
            }
        }
        if closing {
            self.begin_closing(now, env);
        }
        pos
    }

    fn start_sync(&mut self, user: i64, sync: SyncAfter, env: &mut Env<'_>) {
        let mut turn = chat::Turn {
            conn: env.conn,
            user,
            services: &mut *env.services,
            index: &mut *env.index,
            deflate: self.deflate(),
            deflate_min_bytes: env.config.deflate_min_bytes,
        };
        let ticket = Ticket::new();
        match chat::start_sync(&mut turn, sync, &ticket) {
            Ok(()) => {
                self.sync = Sync::Running;
                self.ticket = Some(ticket);
            }
            Err(busy) => {
                if self.send_text(&busy) {
                    env.metrics.messages_sent[metrics::CHAT] += 1;
                }
            }
        }
        self.starved = true;
    }

    /// Records that a started message grew (for the frame progress deadline).
    fn note_progress(&mut self, now: Instant) {
        if let State::WebSocket { ws, .. } = &self.state {
            // The low bits suffice to tell growth from a stall.
            let mark = ws.message_progress() as u32;
            if mark != self.progress_mark || !ws.mid_message() {
                self.progress_mark = mark;
                self.last_progress = self.ms(now);
            }
        }
    }

    // ---- transitions ----

    /// After a response: the next request, or closing.
    fn after_answer(&mut self, now: Instant, keep_alive: bool, config: &Config) {
        if keep_alive {
            self.state = State::Request;
            self.set_deadline(now + config.handshake_timeout);
            // The next request may already be waiting.
            self.starved = true;
        } else {
            self.enter_closing(now, config);
        }
    }

    fn enter_closing(&mut self, now: Instant, config: &Config) {
        self.state = State::Closing;
        self.set_deadline(now + config.close_timeout);
    }

    /// Our close frame is queued: the connection leaves the chat index (nothing more
    /// may be sent after a close frame) and waits for the peer to end TCP.
    fn begin_closing(&mut self, now: Instant, env: &mut Env<'_>) {
        if let Some((user, _)) = self.chat_user() {
            env.index.disconnect(user, env.conn.key);
        }
        self.enter_closing(now, env.config);
    }

    fn cancel_job(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            ticket.cancel();
        }
    }

    /// Answers with the JSON error envelope and closes or keeps the connection as
    /// the refusal says: every refusal, the router's and the machine's, ends here.
    fn answer(&mut self, now: Instant, refusal: &Refusal, config: &Config) {
        refusal.write(self.out.tail());
        self.ticket = None;
        if refusal.keep_alive {
            self.after_answer(now, true, config);
        } else {
            self.enter_closing(now, config);
        }
    }

    /// A refusal of the machine's own (budgets, deadlines, rate limits).
    fn refuse(&mut self, now: Instant, why: Why, close: Close, config: &Config) {
        let refusal = match why {
            Why::Status(status, msg) => Refusal::new(status, msg),
            Why::Busy => Refusal::new(
                Status::ServiceUnavailable,
                "the server is busy; try again shortly",
            )
            .retry_after(config::BUSY_RETRY_AFTER_SECS),
            Why::Throttled(wait) => {
                let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
                Refusal::new(
                    Status::TooManyRequests,
                    format!("too many attempts; try again in {secs} s"),
                )
                .retry_after(secs)
            }
        };
        self.answer(now, &refusal.keep_alive(close == Close::No), config);
    }
}

/// Why the machine refuses a request.
enum Why {
    /// A status with its sentence.
    Status(Status, &'static str),
    /// A worker queue or budget is full: 503 with `Retry-After`.
    Busy,
    /// A rate limit: 429 with `Retry-After`.
    Throttled(Duration),
}

/// Whether a refusal ends the connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Close {
    Yes,
    No,
}

impl From<bool> for Close {
    /// From keep-alive.
    fn from(keep_alive: bool) -> Close {
        if keep_alive { Close::No } else { Close::Yes }
    }
}

/// A chat connection's budget for one more frame: an unacked slot and no second
/// sync waiting (shared by `wants_read` and the per-frame check, which holds the
/// protocol machine borrowed).
fn chat_room(in_flight: u16, sync: Sync, config: &Config) -> bool {
    (in_flight as usize) < config.max_in_flight && !matches!(sync, Sync::Queued)
}

/// How many frames `frames` (complete, encoded frames) holds.
fn endpoint_limits(endpoint: Endpoint) -> ws::Limits {
    match endpoint {
        Endpoint::Echo => config::ECHO_LIMITS,
        Endpoint::Chat { .. } => config::CHAT_LIMITS,
        Endpoint::Inspector => inspector::FEED_LIMITS,
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;

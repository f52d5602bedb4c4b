//! fastim: a small instant-messaging server with a hand-written WebSocket engine.
//!
//! The layers, and the one rule that keeps them apart: only `server` touches
//! sockets and the clock.
//!
//! ```text
//!            bytes                      events / bytes
//!  socket ─────────▶ server (mio loop) ─────────────────▶ ws   (RFC 6455, sans-IO)
//!            ◀─────────                ◀─────────────────  http (HTTP/1.1 heads, sans-IO)
//! ```
//!
//! - [`ws`]: the WebSocket protocol as pure functions and state machines.
//! - [`http`]: request-head parsing and response writing.
//! - [`server`]: the single-threaded `mio` event loop that owns every socket.
//! - [`config`]: limits and timeouts, each with its default.
//! - [`cli`]: the flags, and the same settings from `FASTIM_*` variables and a TOML file.
//! - [`store`]: the only code that touches SQLite (users, sessions, contacts, groups,
//!   messages); blocking, so it runs on worker threads, never on the event loop.
//! - [`secret`]: password hashing (Argon2id) and session tokens (stored as SHA-256 digests).
//! - [`admin`]: the administration subcommands (`fastim admin`, `backup`, `restore`,
//!   `check`), which call the store from a process of their own.
//! - [`api`]: the HTTP API routes (`/user/*`, `/contact/*`, `/message/history`), run on
//!   worker threads against the store.
//! - [`thumbnail`]: the small version of each uploaded picture, with decoding limits; pure
//!   computation, run by the API worker that stores the upload.

pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod files;
pub mod http;
pub mod im;
pub mod resource;
pub mod secret;
pub mod server;
pub mod store;
/// Login and registration throttling per address and per account, sans-IO (the caller passes the time).
pub mod throttle;
pub mod thumbnail;
pub mod ws;

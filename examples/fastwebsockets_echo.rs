//! A benchmark peer: a WebSocket echo server on `fastwebsockets`.
//!
//! Written as the crate's own `echo_server` example writes it: a
//! single-threaded (`current_thread`) tokio runtime; every connection is served
//! by hyper's HTTP/1 server, whose service answers the upgrade with
//! `fastwebsockets::upgrade::upgrade` and spawns a task for the WebSocket. That
//! task wraps it in a `FragmentCollector` (fragmented messages arrive whole)
//! and writes every text and binary message back as one frame, one write each
//! (a `writev` above 1 KiB, as the crate does by default). Pings are answered
//! and close frames echoed by the crate itself (auto pong, auto close).
//!
//! `TCP_NODELAY` is set, as fastim sets it; the frame limit is 16 MiB, the
//! limit of fastim's `/echo`. The crate has no limit on a fragmented message's
//! total, only on each frame.
//!
//! ```text
//! cargo run --release --example fastwebsockets_echo -- --listen 127.0.0.1:9003
//! ```
//!
//! The path of the request is not checked: any path upgrades to an echo.

use std::net::SocketAddr;

use clap::Parser;
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Largest frame accepted, as on fastim's `/echo`.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A fastwebsockets WebSocket echo server.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9003")]
    listen: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            // EMFILE and the like: keep serving the connections we have.
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(upgrade_to_echo))
                .with_upgrades();
            // A client that goes away during the handshake is no news.
            let _ = connection.await;
        });
    }
}

/// Answers the upgrade request and hands the connection to [`echo`].
async fn upgrade_to_echo(
    mut request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgraded) = upgrade::upgrade(&mut request)?;
    tokio::spawn(async move {
        // As in the crate's example: the echo loop is not preempted by tokio's
        // cooperative budget.
        let _ = tokio::task::unconstrained(echo(upgraded)).await;
    });
    Ok(response)
}

/// Echoes every data message of one connection until it closes.
async fn echo(upgraded: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = upgraded.await?;
    // The crate refuses a frame whose length reaches the limit: + 1 lets 16 MiB in.
    ws.set_max_message_size(MAX_MESSAGE + 1);
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

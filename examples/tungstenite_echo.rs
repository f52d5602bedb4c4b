//! A benchmark peer: a WebSocket echo server on `tokio-tungstenite`.
//!
//! Written as the crate's own echo example writes it: one task per connection
//! on a single-threaded (`current_thread`) tokio runtime; the connection is
//! split into its stream of messages and its sink, and the data messages are
//! forwarded from one to the other. `forward` flushes the sink only when the
//! stream has nothing more to give, so echoes that arrive together leave
//! together, not one flush per message. Pings are answered and close frames
//! echoed by tungstenite itself (control messages are filtered out of the
//! echo). Message and frame limits are raised to 16 MiB, the limits of
//! fastim's `/echo`, so both servers accept the same traffic; `TCP_NODELAY` is
//! set, as fastim sets it.
//!
//! ```text
//! cargo run --release --example tungstenite_echo -- --listen 127.0.0.1:9002
//! ```
//!
//! The path of the request is not checked: any path upgrades to an echo.

use std::future;
use std::net::SocketAddr;

use clap::Parser;
use futures_util::{StreamExt, TryStreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Largest message and frame accepted, as on fastim's `/echo`.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A tokio-tungstenite WebSocket echo server.
#[derive(Parser, Debug)]
#[command(about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9002")]
    listen: SocketAddr,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(serve(stream));
            }
            // EMFILE and the like: keep serving the connections we have.
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// Echoes every data message of one connection until it closes.
async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (sink, stream) = ws.split();
    // An error (the client went away, a protocol violation) ends the connection.
    let _ = stream
        .try_filter(|message: &Message| future::ready(message.is_text() || message.is_binary()))
        .forward(sink)
        .await;
}

// The uWebSockets peer of benches/compare.sh: an echo server on uWebSockets.js,
// the Node.js binding of uWebSockets, written as its WebSockets.js example
// writes one: App().ws('/*', { message: (ws, message, isBinary) =>
// ws.send(message, isBinary) }). uWebSockets itself answers pings and the
// closing handshake, and sets TCP_NODELAY.
//
// Limits raised as for the other peers: 16 MiB messages, the limit of fastim's
// /echo, and 64 MiB of backpressure (the default, 64 KiB, would drop 1 MiB
// echoes: uWebSockets drops a send over the limit). No idle timeout: scenario
// (d) holds 10,000 silent connections. The native binding is loaded directly,
// so the package's pure-JS fallback can never stand in for it.
//
//   node benches/uws/echo.js [PORT]      # default 0: any free port
//
// Prints "listening on 127.0.0.1:PORT" on stderr, as the other servers do.
'use strict';

const path = require('path');
const uWS = require(path.join(__dirname, 'node_modules/@trufflesuite/uws-js-unofficial/binaries',
  `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`));

const port = Number(process.argv[2] || 0);

uWS.App().ws('/*', {
  compression: uWS.SHARED_COMPRESSOR,
  maxPayloadLength: 16 * 1024 * 1024,
  maxBackpressure: 64 * 1024 * 1024,
  idleTimeout: 0,
  message: (ws, message, isBinary) => {
    ws.send(message, isBinary);
  },
}).listen('127.0.0.1', port, (token) => {
  if (!token) {
    console.error(`uws echo: cannot listen on 127.0.0.1:${port}`);
    process.exit(1);
  }
  console.error(`listening on 127.0.0.1:${uWS.us_socket_local_port(token)}`);
});

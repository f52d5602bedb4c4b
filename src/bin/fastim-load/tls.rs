//! `wss://` targets: a connection's stream is the bare socket or the socket with
//! a rustls client (the `ring` provider), read from and written to the same way.
//!
//! **Test-only certificate check.** The tool measures servers on loopback, most
//! often one with `--tls-self-signed`: [`AnyCertificate`] accepts whatever
//! certificate the server presents (its handshake signatures are still
//! verified, so the TLS work is the real one). Never point it at a server whose
//! identity matters.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

/// Accepts any server certificate; verifies the handshake's signatures.
#[derive(Debug)]
pub struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client configuration of every `wss://` connection of a run (sessions are
/// resumed across its connections, as a browser's would be).
pub fn client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        });
    let mut config = match config {
        Ok(c) => c,
        Err(e) => panic!("rustls' own defaults: {e}"),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A connection's byte stream: plaintext in and out, TLS underneath if any.
#[derive(Debug)]
pub struct Stream {
    socket: TcpStream,
    tls: Option<Box<ClientConnection>>,
}

impl Stream {
    /// A stream over `socket`; with TLS for `server_name` if `tls` is given.
    pub fn new(socket: TcpStream, tls: Option<(&Arc<ClientConfig>, &str)>) -> io::Result<Stream> {
        let tls = match tls {
            None => None,
            Some((config, name)) => {
                let name = ServerName::try_from(name.to_owned())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Some(Box::new(
                    ClientConnection::new(config.clone(), name).map_err(io::Error::other)?,
                ))
            }
        };
        Ok(Stream { socket, tls })
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        &self.socket
    }

    /// Whether encrypted bytes wait for the socket.
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes the TLS records that wait; `Ok(true)` if the socket blocked first.
    pub fn push(&mut self) -> io::Result<bool> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Ok(false);
        };
        push(tls, &mut self.socket)
    }
}

fn push(tls: &mut ClientConnection, socket: &mut TcpStream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(socket) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

impl Read for Stream {
    /// Plaintext; with TLS, reads the socket until `buf` is full or the socket is
    /// empty, so a short read still means "drained" (as it does for a bare socket).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.socket.read(buf);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let mut filled = 0;
        loop {
            match tls.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return Err(e),
            }
            match tls.read_tls(&mut self.socket) {
                Ok(0) => return Ok(filled),
                Ok(_) => {
                    tls.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    push(tls, &mut self.socket)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if filled > 0 { Ok(filled) } else { Err(e) };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Plaintext into rustls (buffered during the handshake), records out.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.socket.write_vectored(bufs);
        };
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        loop {
            let n = tls.writer().write_vectored(bufs)?;
            let blocked = push(tls, &mut self.socket)?;
            if n > 0 {
                return Ok(n);
            }
            if blocked || tls.is_handshaking() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket.deregister(registry)
    }
}

//! TLS (`https://`, `wss://`): a layer between a connection's socket and its
//! machine, with rustls (the `ring` provider) and its unbuffered API.
//!
//! ```text
//!   socket ──read──▶ incoming ──rustls──▶ plaintext ──▶ loop-wide read buffer ──▶ Lifecycle
//!   socket ◀─write── outgoing ◀─rustls── plaintext ◀── Outbound (the connection's queue)
//! ```
//!
//! Nothing above this layer knows about TLS: the driver reads from and writes to a
//! [`Transport`], which is the bare socket or the socket with its [`Tls`]. While
//! the TLS handshake runs no plaintext exists, so the connection's machine stays
//! in its Request state, whose deadline (the handshake timeout) counts from the
//! accept: a client that opens TLS and stalls is dropped then.
//!
//! rustls' [`UnbufferedServerConnection`] keeps the keys and the handshake's
//! state; the bytes are ours. They pass through 64 KiB buffers lent by the loop
//! ([`Spares::take_io`]) for a read or a flush and given back when empty, so an
//! idle connection holds none. What must wait keeps a buffer (moved to one its own
//! size when much smaller than the lent one): received bytes that are not yet a
//! record (at most a record, 16 KiB and its overhead, or during the handshake a
//! message being joined: 64 KiB and a record), encrypted output the socket did not
//! take (at most one encryption, 48 KiB of plaintext: until it leaves, the queue
//! waits in the connection's [`Outbound`], under its budgets), and decrypted input
//! the driver had no room for (a record).
//!
//! A first byte that is not a TLS handshake record (0x16) is a plain-HTTP client on
//! the TLS port: it is answered `400` in plain text, saying to use https, and its
//! input is discarded until it hangs up or the handshake timeout drops it.
//!
//! Resumption: stateless tickets (TLS 1.3 and 1.2) and a bounded session-id cache
//! (TLS 1.2); ALPN `http/1.1`.
//!
//! Certificates: `--tls-cert`/`--tls-key` PEM files (a chain, the server's own
//! certificate first; RSA, ECDSA or Ed25519 keys), checked at start (readable, a
//! key that matches, valid now), or `--tls-self-signed`, made with `rcgen` once
//! and kept in the data directory.

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use log::{info, warn};
use mio::net::TcpStream;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ServerConnectionData, ServerSessionMemoryCache, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus, WriteTraffic,
};
use sha2::{Digest, Sha256};

use super::outbound::{Flushed, Outbound};
use crate::config;
use crate::http::{Refusal, Status};
use crate::ws::Spares;
use crate::ws::spares::IO_BUFFER;

/// TLS 1.2 sessions the server remembers by id, for clients that do not take
/// tickets (rustls' in-memory cache, shared by all connections).
pub const SESSION_CACHE: usize = 4096;

/// Tickets sent after a TLS 1.3 handshake: one is enough to resume once; rustls'
/// default of two doubles the handshake's output for clients that rarely use both.
/// Tickets are stateless (rustls' ring `Ticketer`, keys rotated every 6 hours): a
/// resumable session costs the server nothing while the client is away.
const TLS13_TICKETS: usize = 1;

/// The first byte of a TLS handshake record (a ClientHello starts with it).
const HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain-HTTP client on the TLS port reads.
const PLAIN_HTTP_REFUSAL: &str =
    "this port speaks HTTPS only: use https:// (and wss:// for WebSockets)";

/// The self-signed certificate's file in the data directory.
pub const SELF_SIGNED_CERT: &str = "tls-self-signed.crt";

/// Its private key (mode 0600).
pub const SELF_SIGNED_KEY: &str = "tls-self-signed.key";

/// Years a new self-signed certificate is valid for.
const SELF_SIGNED_YEARS: i32 = 5;

/// The rustls configuration for `setting`, or a sentence naming the file that is
/// wrong. Logs the certificate's fingerprints.
///
/// # Errors
/// A certificate or key that cannot be read or parsed, a key that does not match
/// the certificate, a certificate not valid now; for `--tls-self-signed`, a data
/// directory it cannot be written to.
pub fn server_config(
    setting: &config::Tls,
    data_dir: &Path,
    listen: SocketAddr,
) -> Result<Arc<ServerConfig>, String> {
    let (chain, key, cert_path, key_path) = match setting {
        config::Tls::Files { cert, key } => {
            let chain = read_chain(cert)?;
            let key_der = read_key(key)?;
            (chain, key_der, cert.clone(), key.clone())
        }
        config::Tls::SelfSigned => self_signed(data_dir, listen)?,
    };
    check_validity(&chain, &cert_path, now_unix())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the private key in {} does not match the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
            e => format!(
                "TLS certificate {} with key {}: {e}",
                cert_path.display(),
                key_path.display()
            ),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS: {e}"))?;
    config.send_tls13_tickets = TLS13_TICKETS;
    let prints = Fingerprints::of(&chain[0]);
    info!(
        "TLS certificate {}: SHA-256 fingerprint {}",
        cert_path.display(),
        prints.certificate
    );
    info!(
        "TLS public key SHA-256 (SPKI, base64): {} (for Chromium: --ignore-certificate-errors-spki-list={})",
        prints.spki, prints.spki
    );
    Ok(Arc::new(config))
}

/// A certificate's SHA-256 fingerprints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprints {
    /// Of the certificate's DER, as hex pairs joined by `:` (as `openssl x509
    /// -fingerprint -sha256` prints it).
    pub certificate: String,
    /// Of its SubjectPublicKeyInfo DER, in base64: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub spki: String,
}

impl Fingerprints {
    /// The fingerprints of `cert` (the SPKI's is empty if the DER cannot be read).
    pub fn of(cert: &CertificateDer<'_>) -> Fingerprints {
        let certificate = Sha256::digest(cert.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        let spki = parse_certificate(cert.as_ref())
            .map(|c| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(c.spki)))
            .unwrap_or_default();
        Fingerprints { certificate, spki }
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read TLS {what} {}: {e}", path.display()))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS certificate {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS certificate {}: no certificate in it (a PEM file with BEGIN CERTIFICATE)",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(path, "key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "TLS key {}: no private key in it (a PEM file with BEGIN PRIVATE KEY, \
             BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY)",
            path.display()
        ),
        e => format!("TLS key {}: {e}", path.display()),
    })
}

/// Refuses a chain with a certificate that is expired or not yet valid at `now`.
fn check_validity(chain: &[CertificateDer<'_>], path: &Path, now: i64) -> Result<(), String> {
    for (i, cert) in chain.iter().enumerate() {
        let which = if i == 0 {
            "the certificate".to_owned()
        } else {
            format!("certificate {} of the chain", i + 1)
        };
        let Some(parsed) = parse_certificate(cert.as_ref()) else {
            return Err(format!(
                "TLS certificate {}: {which} is not a readable X.509 certificate",
                path.display()
            ));
        };
        if now > parsed.not_after.unix {
            return Err(format!(
                "TLS certificate {}: {which} expired on {}",
                path.display(),
                parsed.not_after.text
            ));
        }
        if now < parsed.not_before.unix {
            return Err(format!(
                "TLS certificate {}: {which} is not valid before {}",
                path.display(),
                parsed.not_before.text
            ));
        }
    }
    Ok(())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The names a self-signed certificate covers: `localhost`, the loopback addresses
/// and the listen address (unless it is the unspecified address).
fn self_signed_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        Ipv4Addr::LOCALHOST.to_string(),
        Ipv6Addr::LOCALHOST.to_string(),
    ];
    let ip = listen.ip().to_canonical();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    names
}

/// A certificate chain and its key.
type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A chain and key with the files they came from.
type Loaded = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    PathBuf,
    PathBuf,
);

/// The kept self-signed certificate if it is still good for `listen`, or a new
/// one, written to the data directory.
fn self_signed(data_dir: &Path, listen: SocketAddr) -> Result<Loaded, String> {
    let cert_path = data_dir.join(SELF_SIGNED_CERT);
    let key_path = data_dir.join(SELF_SIGNED_KEY);
    let names = self_signed_names(listen);
    if cert_path.exists() && key_path.exists() {
        match reusable(&cert_path, &key_path, &names) {
            Ok((chain, key)) => {
                info!(
                    "TLS: reusing the self-signed certificate {}",
                    cert_path.display()
                );
                return Ok((chain, key, cert_path, key_path));
            }
            Err(why) => warn!("TLS: making a new self-signed certificate: {why}"),
        }
    }
    let key = rcgen::KeyPair::generate().map_err(|e| format!("TLS: cannot make a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(names.clone())
        .map_err(|e| format!("TLS: cannot make a certificate: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fastim self-signed");
    let year = 1970 + i32::try_from(now_unix() / 31_556_952).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + SELF_SIGNED_YEARS, 1, 1);
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("TLS: cannot make a certificate: {e}"))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_private(&cert_path, cert.pem().as_bytes())?;
    info!(
        "TLS: made a self-signed certificate for {} in {}",
        names.join(", "),
        cert_path.display()
    );
    let key_der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| format!("TLS: the key just made: {e}"))?;
    Ok((vec![cert.der().clone()], key_der, cert_path, key_path))
}

/// The kept certificate and key, if they parse, are valid for a while yet and
/// cover every name.
fn reusable(cert_path: &Path, key_path: &Path, names: &[String]) -> Result<Pair, String> {
    let chain = read_chain(cert_path)?;
    let key = read_key(key_path)?;
    // A day's margin, so that a running server does not pass the end.
    check_validity(&chain, cert_path, now_unix() + 86_400)?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    for name in names {
        let server_name = match name.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(name.clone()).map_err(|e| e.to_string())?,
        };
        leaf.verify_is_valid_for_subject_name(&server_name)
            .map_err(|_| format!("{} does not cover {name}", cert_path.display()))?;
    }
    Ok((chain, key))
}

/// Writes `bytes` to `path` readable by the owner only, replacing it whole.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A time of a certificate: seconds since 1970 and as written for people.
#[derive(Debug, PartialEq, Eq)]
struct DerTime {
    unix: i64,
    text: String,
}

/// What the server reads of a certificate.
struct Parsed<'a> {
    not_before: DerTime,
    not_after: DerTime,
    /// The SubjectPublicKeyInfo, tag and length included.
    spki: &'a [u8],
}

/// One DER element.
struct Element<'a> {
    tag: u8,
    /// Its contents.
    content: &'a [u8],
    /// Its whole encoding, tag and length included.
    whole: &'a [u8],
    /// What follows it.
    rest: &'a [u8],
}

/// The DER element at the start of `input`.
fn tlv(input: &[u8]) -> Option<Element<'_>> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for &b in input.get(2..2 + n)? {
            len = (len << 8) | usize::from(b);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some(Element {
        tag,
        content: input.get(header..end)?,
        whole: &input[..end],
        rest: &input[end..],
    })
}

/// The DER element at the start of `input` if it is a SEQUENCE.
fn sequence(input: &[u8]) -> Option<Element<'_>> {
    tlv(input).filter(|e| e.tag == 0x30)
}

/// The validity and the public key of an X.509 certificate (RFC 5280 §4.1).
fn parse_certificate(der: &[u8]) -> Option<Parsed<'_>> {
    let cert = sequence(der)?;
    let tbs = sequence(cert.content)?;
    let mut rest = tbs.content;
    let first = tlv(rest)?;
    if first.tag == 0xa0 {
        rest = first.rest; // [0] version
    }
    for _ in 0..3 {
        rest = tlv(rest)?.rest; // serial number, signature algorithm, issuer
    }
    let validity = sequence(rest)?;
    let before = tlv(validity.content)?;
    let after = tlv(before.rest)?;
    let subject = tlv(validity.rest)?;
    let spki = sequence(subject.rest)?;
    Some(Parsed {
        not_before: der_time(before.tag, before.content)?,
        not_after: der_time(after.tag, after.content)?,
        spki: spki.whole,
    })
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn der_time(tag: u8, content: &[u8]) -> Option<DerTime> {
    let text = std::str::from_utf8(content).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: i64 = digits.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (0x18, 14) => (digits.get(..4)?.parse().ok()?, &digits[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, min, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let unix = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec;
    Some(DerTime {
        unix,
        text: format!("{year:04}-{month:02}-{day:02} {hour:02}:{min:02}:{sec:02} UTC"),
    })
}

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether the first byte has shown the client speaks TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sniff {
    /// Nothing read yet.
    Unknown,
    /// A TLS handshake record.
    Tls,
    /// Something else, answered with the plain-HTTP refusal: input is discarded.
    Refused,
}

/// The largest TLS record on the wire: 16 KiB of plaintext, the 2 KiB of
/// expansion RFC 8446 allows, and the 5-byte header.
const RECORD_MAX: usize = 16_384 + 2_048 + 5;

/// The most received bytes a connection holds: a handshake message being joined
/// (rustls takes up to 64 KiB, joined in place from its records) and a record
/// after it. In traffic, one record cut by the end of a read.
const INCOMING_MAX: usize = 0xffff + 4 + 4 * 5 + RECORD_MAX;

/// Plaintext encrypted at once: three records, whose encryption fits a lent
/// buffer with room to spare.
const ENCRYPT_CHUNK: usize = 3 * 16_384;

/// What a record adds to its plaintext, at most (header, content type, AEAD tag
/// and explicit nonce, for the suites rustls offers), with room to spare.
const RECORD_OVERHEAD: usize = 64;

/// Bytes in a buffer, from `at` to `end`. Empty, it holds no heap memory: the
/// buffer is lent from the loop's pool ([`Spares::take_io`]) while bytes pass
/// through and given back once it is empty; bytes that must wait (a cut record,
/// output the socket did not take) keep it, or a copy their own size.
#[derive(Default)]
struct Window {
    buf: Option<Box<[u8]>>,
    at: usize,
    end: usize,
}

impl Window {
    fn len(&self) -> usize {
        self.end - self.at
    }

    fn is_empty(&self) -> bool {
        self.at == self.end
    }

    fn bytes(&self) -> &[u8] {
        self.buf.as_deref().map_or(&[], |b| &b[self.at..self.end])
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self.buf.as_deref_mut() {
            Some(b) => &mut b[self.at..self.end],
            None => &mut [],
        }
    }

    /// Drops `n` bytes from the front.
    fn consume(&mut self, n: usize) {
        self.at += n;
        debug_assert!(self.at <= self.end);
        if self.at >= self.end {
            self.at = 0;
            self.end = 0;
        }
    }

    /// Room after the bytes for at least `want` more, moving
    /// them to the front or into a larger buffer as needed; the room is returned.
    fn room(&mut self, want: usize, spares: Option<&mut Spares>) -> &mut [u8] {
        let len = self.len();
        let have = self.buf.as_deref().map_or(0, <[u8]>::len);
        if have - self.end < want && self.at > 0 && have - len >= want {
            if let Some(b) = self.buf.as_deref_mut() {
                b.copy_within(self.at..self.end, 0);
            }
            self.end = len;
            self.at = 0;
        }
        let have = self.buf.as_deref().map_or(0, <[u8]>::len);
        if have - self.end < want {
            let size = (len + want).max(IO_BUFFER);
            let mut fresh = match spares {
                Some(s) if size == IO_BUFFER => s.take_io(),
                _ => vec![0; size].into_boxed_slice(),
            };
            fresh[..len].copy_from_slice(self.bytes());
            self.buf = Some(fresh);
            self.at = 0;
            self.end = len;
        }
        match self.buf.as_deref_mut() {
            Some(b) => &mut b[self.end..],
            None => &mut [],
        }
    }

    /// Gives the buffer back to the pool if empty; bytes that wait in a lent
    /// buffer much larger than they need move to one their own size.
    fn settle(&mut self, spares: &mut Spares) {
        let Some(buf) = self.buf.take() else {
            return;
        };
        if self.is_empty() {
            spares.give_io(buf);
            return;
        }
        if buf.len() >= 2 * self.len() {
            self.buf = Some(buf[self.at..self.end].into());
            self.end = self.len();
            self.at = 0;
            spares.give_io(buf);
        } else {
            self.buf = Some(buf);
        }
    }

    /// Heap bytes held.
    fn held(&self) -> usize {
        self.buf.as_deref().map_or(0, <[u8]>::len)
    }
}

/// Where decrypted input goes: the driver's buffer, then what does not fit.
struct Sink<'b> {
    buf: &'b mut [u8],
    filled: usize,
}

impl Sink<'_> {
    fn full(&self) -> bool {
        self.filled == self.buf.len()
    }
}

/// What the connection asks of rustls besides taking input.
enum Send<'s> {
    Nothing,
    Data(&'s [IoSlice<'s>]),
    CloseNotify,
}

/// Where a drive of rustls stopped.
#[derive(Debug, PartialEq, Eq)]
enum Drive {
    /// It needs more input (handshake, or traffic with nothing to send).
    NeedInput,
    /// The sink is full.
    Full,
    /// `n` bytes of plaintext (or close_notify, as 0) were encrypted.
    Wrote(usize),
    /// Both sides sent close_notify.
    Closed,
}

/// One connection's TLS state: rustls' unbuffered connection (keys, handshake
/// state) and the bytes that wait, which are none on an idle connection.
pub struct Tls {
    conn: UnbufferedServerConnection,
    sniff: Sniff,
    /// Received TLS bytes rustls has not taken: a cut record, or a handshake
    /// message being joined.
    incoming: Window,
    /// Encrypted bytes the socket has not taken.
    outgoing: Window,
    /// Decrypted input the driver had no room for (a record larger than its read).
    plain: Window,
    /// close_notify received: reads end.
    peer_closed: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.conn.is_handshaking())
            .field("sniff", &self.sniff)
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .field("plain", &self.plain.len())
            .finish()
    }
}

impl Tls {
    /// TLS for a freshly accepted connection.
    ///
    /// # Errors
    /// rustls' refusal of the configuration (not expected once it was built).
    pub fn new(config: &Arc<ServerConfig>) -> Result<Box<Tls>, rustls::Error> {
        Ok(Box::new(Tls {
            conn: UnbufferedServerConnection::new(config.clone())?,
            sniff: Sniff::Unknown,
            incoming: Window::default(),
            outgoing: Window::default(),
            plain: Window::default(),
            peer_closed: false,
        }))
    }

    /// Whether encrypted bytes (handshake messages, tickets, alerts, records) wait
    /// for the socket.
    pub fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Bytes of buffers held beyond rustls' own state: none when idle.
    pub fn buffered(&self) -> usize {
        self.incoming.held() + self.outgoing.held() + self.plain.held()
    }

    /// Gives empty buffers back to the pool.
    fn settle(&mut self, spares: &mut Spares) {
        self.incoming.settle(spares);
        self.outgoing.settle(spares);
        self.plain.settle(spares);
    }

    fn read(
        &mut self,
        socket: &mut TcpStream,
        buf: &mut [u8],
        spares: &mut Spares,
    ) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.sniff == Sniff::Unknown {
            let mut first = [0u8; 1];
            if socket.peek(&mut first)? == 0 {
                return Ok(0);
            }
            if first[0] == HANDSHAKE_RECORD {
                self.sniff = Sniff::Tls;
            } else {
                self.sniff = Sniff::Refused;
                let response = Refusal::new(Status::BadRequest, PLAIN_HTTP_REFUSAL).to_bytes();
                // A fresh socket's send buffer takes a few hundred bytes.
                let _ = socket.write(&response);
                let _ = socket.shutdown(Shutdown::Write);
            }
        }
        if self.sniff == Sniff::Refused {
            // Discarded, a few reads at a time; the handshake deadline ends it.
            for _ in 0..4 {
                if socket.read(buf)? == 0 {
                    return Ok(0);
                }
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut sink = Sink { buf, filled: 0 };
        // Input decrypted earlier first: it raises no readiness event.
        let n = self.plain.len().min(sink.buf.len());
        sink.buf[..n].copy_from_slice(&self.plain.bytes()[..n]);
        self.plain.consume(n);
        sink.filled = n;
        let result = self.read_records(socket, &mut sink, spares);
        self.settle(spares);
        result
    }

    /// Decrypts into `sink` what the socket has, until it is drained or the sink
    /// is full.
    fn read_records(
        &mut self,
        socket: &mut TcpStream,
        sink: &mut Sink<'_>,
        spares: &mut Spares,
    ) -> io::Result<usize> {
        loop {
            if sink.full() {
                return Ok(sink.filled);
            }
            match self.drive(socket, Send::Nothing, Some(&mut *sink), spares)? {
                Drive::Full => return Ok(sink.filled),
                Drive::Closed => return Ok(sink.filled),
                Drive::NeedInput | Drive::Wrote(_) => {}
            }
            if self.peer_closed {
                // close_notify: what came before it is all there is.
                return Ok(sink.filled);
            }
            if self.incoming.len() >= INCOMING_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS input over the limit without a complete record",
                ));
            }
            let want = (INCOMING_MAX - self.incoming.len()).min(IO_BUFFER);
            let room = self.incoming.room(want, Some(spares));
            match socket.read(room) {
                // The TCP connection ended, with or without close_notify.
                Ok(0) => return Ok(sink.filled),
                Ok(n) => self.incoming.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if sink.filled > 0 {
                        Ok(sink.filled)
                    } else {
                        Err(e)
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs rustls over the received bytes until it needs more input, the sink
    /// is full, or (asked to send) it encrypted: encodes and writes what it sends
    /// (handshake messages, tickets, alerts), puts what it decrypts in `sink` and
    /// what does not fit there in `plain`.
    fn drive(
        &mut self,
        socket: &mut TcpStream,
        send: Send<'_>,
        mut sink: Option<&mut Sink<'_>>,
        spares: &mut Spares,
    ) -> io::Result<Drive> {
        let mut spares = Some(spares);
        // Every turn takes a record or a step of the handshake.
        for _ in 0..10_000 {
            let mut failure: Option<rustls::Error> = None;
            let Tls {
                conn,
                incoming,
                outgoing,
                plain,
                peer_closed,
                ..
            } = self;
            let UnbufferedStatus { discard, state } =
                conn.process_tls_records(incoming.bytes_mut());
            let mut transmit = false;
            let mut extra_discard = 0;
            let outcome: Option<io::Result<Drive>> = match state {
                Err(e) => {
                    failure = Some(e);
                    None
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    let mut out = None;
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(record) => {
                                extra_discard += record.discard;
                                deliver(record.payload, sink.as_deref_mut(), plain);
                            }
                            Err(e) => {
                                out = Some(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                                break;
                            }
                        }
                    }
                    out.or_else(|| {
                        sink.as_deref()
                            .is_some_and(Sink::full)
                            .then_some(Ok(Drive::Full))
                    })
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut data, outgoing, spares.as_deref_mut());
                    None
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    transmit = true;
                    None
                }
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    None
                }
                Ok(ConnectionState::Closed) => Some(Ok(Drive::Closed)),
                Ok(ConnectionState::BlockedHandshake) => Some(Ok(Drive::NeedInput)),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match send {
                    Send::Nothing => Some(Ok(Drive::NeedInput)),
                    Send::CloseNotify => {
                        let room = outgoing.room(256, spares.as_deref_mut());
                        Some(match traffic.queue_close_notify(room) {
                            Ok(n) => {
                                outgoing.end += n;
                                Ok(Drive::Wrote(0))
                            }
                            Err(e) => Err(io::Error::other(e)),
                        })
                    }
                    Send::Data(bufs) => {
                        Some(encrypt(&mut traffic, bufs, outgoing, spares.as_deref_mut()))
                    }
                },
                Ok(_) => Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS: a state this server does not take (early data)",
                ))),
            };
            incoming.consume(discard + extra_discard);
            if let Some(e) = failure {
                // rustls queued the alert that says why, after what the failing
                // step had queued (a ServerHello, say): the next calls give them.
                // Only while some wait: once none do, a call would process the same
                // input again, and fail again.
                for _ in 0..16 {
                    if !conn.wants_write() {
                        break;
                    }
                    let status = conn.process_tls_records(incoming.bytes_mut());
                    let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state else {
                        break;
                    };
                    encode(&mut data, outgoing, spares.as_deref_mut());
                }
                let _ = push_out(outgoing, socket);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if transmit {
                push_out(outgoing, socket)?;
            }
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
        Err(io::Error::other("TLS: rustls made no progress"))
    }
}

/// Encodes a record rustls made (handshake, ticket, alert) after the bytes that
/// wait in `outgoing`, with room made as it asks.
fn encode(
    data: &mut EncodeTlsData<'_, ServerConnectionData>,
    outgoing: &mut Window,
    mut spares: Option<&mut Spares>,
) {
    let mut want = 256;
    loop {
        let room = outgoing.room(want, spares.as_deref_mut());
        match data.encode(room) {
            Ok(n) => {
                outgoing.end += n;
                return;
            }
            Err(EncodeError::InsufficientSize(s)) if s.required_size > want => {
                want = s.required_size;
            }
            Err(_) => return,
        }
    }
}

/// Copies a decrypted record into the sink, and what does not fit into `plain`.
fn deliver(payload: &[u8], sink: Option<&mut Sink<'_>>, plain: &mut Window) {
    let mut rest = payload;
    if let Some(sink) = sink {
        if plain.is_empty() {
            let n = rest.len().min(sink.buf.len() - sink.filled);
            sink.buf[sink.filled..sink.filled + n].copy_from_slice(&rest[..n]);
            sink.filled += n;
            rest = &rest[n..];
        }
    }
    if !rest.is_empty() {
        let room = plain.room(rest.len(), None);
        room[..rest.len()].copy_from_slice(rest);
        plain.end += rest.len();
    }
}

/// Encrypts as much of `bufs` as fits the outgoing buffer (at most
/// [`ENCRYPT_CHUNK`]); returns the plaintext bytes taken.
fn encrypt(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    bufs: &[IoSlice<'_>],
    outgoing: &mut Window,
    spares: Option<&mut Spares>,
) -> io::Result<Drive> {
    let mut taken = 0;
    let room = outgoing.room(IO_BUFFER / 2, spares).len();
    let mut left = room;
    for b in bufs {
        let budget = left
            .saturating_sub((left / 16_384 + 1) * RECORD_OVERHEAD)
            .min(ENCRYPT_CHUNK - taken);
        let take = b.len().min(budget);
        if take == 0 {
            if b.is_empty() {
                continue;
            }
            break;
        }
        let end = outgoing.end;
        let dst = match outgoing.buf.as_deref_mut() {
            Some(d) => &mut d[end..],
            None => &mut [],
        };
        match traffic.encrypt(&b[..take], dst) {
            Ok(n) => {
                outgoing.end += n;
                left -= n;
                taken += take;
            }
            Err(EncryptError::InsufficientSize(_)) => break,
            Err(e) => return Err(io::Error::other(e)),
        }
        if take < b.len() {
            break;
        }
    }
    Ok(Drive::Wrote(taken))
}

/// Writes the encrypted bytes that wait; returns whether the socket blocked with
/// some still waiting.
fn push_out(outgoing: &mut Window, socket: &mut TcpStream) -> io::Result<bool> {
    while !outgoing.is_empty() {
        match socket.write(outgoing.bytes()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => outgoing.consume(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// What the driver reads from and writes to: the socket, through TLS if the
/// connection has it. Reads give plaintext; a read that returns less than asked
/// has drained the socket (more input raises a new readiness event).
pub struct Transport<'a> {
    socket: &'a mut TcpStream,
    tls: Option<&'a mut Tls>,
}

impl<'a> Transport<'a> {
    /// The transport of a connection's socket and TLS state.
    pub fn new(socket: &'a mut TcpStream, tls: Option<&'a mut Tls>) -> Self {
        Transport { socket, tls }
    }

    /// Reads plaintext into `buf`; TLS borrows its record buffers from `spares`
    /// for the call and keeps one only for a record cut by the end of the read.
    ///
    /// # Errors
    /// The socket's; a TLS failure as `InvalidData` (its alert sent if the socket
    /// takes it).
    pub fn read(&mut self, buf: &mut [u8], spares: &mut Spares) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => self.socket.read(buf),
            Some(tls) => tls.read(self.socket, buf, spares),
        }
    }

    /// Writes `out` (all of it, or until the socket is full), then the TLS records
    /// it became: [`Flushed::All`] only when nothing waits in either.
    ///
    /// # Errors
    /// The socket's.
    pub fn flush(
        &mut self,
        out: &mut Outbound,
        spares: &mut Spares,
        keep: bool,
    ) -> io::Result<Flushed> {
        self.flush_observed(out, spares, keep, |_| {})
    }

    /// [`Transport::flush`], showing `observe` every plaintext byte as it is taken
    /// (the frame inspector's view: what the connection sent, before encryption).
    ///
    /// # Errors
    /// The socket's.
    pub fn flush_observed(
        &mut self,
        out: &mut Outbound,
        spares: &mut Spares,
        keep: bool,
        observe: impl FnMut(&[u8]),
    ) -> io::Result<Flushed> {
        if let Some(tls) = self.tls.as_deref_mut() {
            if !out.is_empty() && tls.outgoing.buf.is_none() {
                // Lent for the flush: records are encrypted into it.
                tls.outgoing.buf = Some(spares.take_io());
            }
        }
        let mut observed = Observed {
            transport: self,
            observe,
        };
        let flushed = if keep {
            out.flush_keeping(&mut observed, spares)
        } else {
            out.flush_to(&mut observed, spares)
        };
        let Some(tls) = self.tls.as_deref_mut() else {
            return flushed;
        };
        let flushed = match flushed {
            Ok(Flushed::All) => push_out(&mut tls.outgoing, self.socket).map(|blocked| {
                if blocked {
                    Flushed::Blocked
                } else {
                    Flushed::All
                }
            }),
            other => other,
        };
        tls.settle(spares);
        flushed
    }

    /// Ends the write side once the final bytes are out: with TLS, close_notify
    /// first (as far as the socket takes it).
    pub fn shutdown_write(&mut self, spares: &mut Spares) {
        if let Some(tls) = self.tls.as_deref_mut() {
            if tls.sniff == Sniff::Tls && !tls.conn.is_handshaking() {
                let _ = tls.drive(self.socket, Send::CloseNotify, None, spares);
                let _ = push_out(&mut tls.outgoing, self.socket);
            }
            tls.settle(spares);
        }
        let _ = self.socket.shutdown(Shutdown::Write);
    }
}

/// A transport that shows what it takes to an observer.
struct Observed<'t, 'a, F> {
    transport: &'t mut Transport<'a>,
    observe: F,
}

impl<F: FnMut(&[u8])> Write for Observed<'_, '_, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self.transport.write_vectored(bufs)?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            (self.observe)(&b[..take]);
            left -= take;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Transport<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Plaintext encrypted into the outgoing buffer (up to [`ENCRYPT_CHUNK`] at
    /// once) and out to the socket; blocks (`WouldBlock`) while encrypted bytes
    /// wait that the socket does not take, or the handshake is not done.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.socket.write_vectored(bufs);
        };
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        if push_out(&mut tls.outgoing, self.socket)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // The pool is not at hand here: a buffer that is missing is made, and
        // goes to the pool at the end of the flush.
        let mut none = Spares::default();
        match tls.drive(self.socket, Send::Data(bufs), None, &mut none)? {
            Drive::Wrote(n) if n > 0 => {
                push_out(&mut tls.outgoing, self.socket)?;
                Ok(n)
            }
            Drive::Closed => Err(io::ErrorKind::BrokenPipe.into()),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn made(names: &[&str], from: (i32, u8, u8), to: (i32, u8, u8)) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("params");
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("pem")
    }

    #[test]
    fn validity_is_read_from_the_certificate() {
        let (pem, _) = made(&["localhost"], (2020, 3, 4), (2049, 12, 31));
        let der = &chain(&pem)[0];
        let parsed = parse_certificate(der.as_ref()).expect("parses");
        assert_eq!(parsed.not_before.text, "2020-03-04 00:00:00 UTC");
        assert_eq!(parsed.not_before.unix, 1_583_280_000);
        assert_eq!(parsed.not_after.text, "2049-12-31 00:00:00 UTC");
        // GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5).
        let (pem, _) = made(&["localhost"], (2020, 1, 1), (2051, 1, 1));
        let parsed_der = &chain(&pem)[0];
        let parsed = parse_certificate(parsed_der.as_ref()).expect("parses");
        assert_eq!(parsed.not_after.unix, days_from_civil(2051, 1, 1) * 86_400);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn expired_and_future_certificates_are_refused_naming_the_file() {
        let path = Path::new("/etc/cert.pem");
        let (old, _) = made(&["localhost"], (2020, 1, 1), (2021, 1, 1));
        let err = check_validity(&chain(&old), path, now_unix()).expect_err("expired");
        assert!(
            err.contains("/etc/cert.pem") && err.contains("expired on 2021-01-01"),
            "{err}"
        );
        let (future, _) = made(&["localhost"], (2090, 1, 1), (2091, 1, 1));
        let err = check_validity(&chain(&future), path, now_unix()).expect_err("future");
        assert!(err.contains("not valid before 2090-01-01"), "{err}");
        let (good, _) = made(&["localhost"], (2020, 1, 1), (2090, 1, 1));
        assert!(check_validity(&chain(&good), path, now_unix()).is_ok());
    }

    #[test]
    fn the_spki_fingerprint_is_of_the_public_key() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let prints = Fingerprints::of(cert.der());
        let want = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(
            rcgen::PublicKeyData::subject_public_key_info(&key),
        ));
        assert_eq!(prints.spki, want);
        assert_eq!(prints.certificate.len(), 32 * 3 - 1);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(parse_certificate(b"").is_none());
        assert!(parse_certificate(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(parse_certificate(&[0x30, 0x03, 0x30, 0x01, 0x00]).is_none());
        assert!(der_time(0x17, b"2101011200Z").is_none());
    }

    #[test]
    fn self_signed_names_include_the_listen_address() {
        let names = self_signed_names("127.0.0.1:0".parse().expect("addr"));
        assert_eq!(names, ["localhost", "127.0.0.1", "::1"]);
        let names = self_signed_names("192.0.2.7:443".parse().expect("addr"));
        assert_eq!(names.last().map(String::as_str), Some("192.0.2.7"));
        let names = self_signed_names("0.0.0.0:443".parse().expect("addr"));
        assert_eq!(names.len(), 3);
    }

    /// A server-side [`Tls`] on a real socket and a rustls client on the other
    /// end, both non-blocking, driven turn by turn.
    struct Pair {
        server: TcpStream,
        tls: Box<Tls>,
        spares: Spares,
        /// Plaintext the server read.
        got: Vec<u8>,
        /// The server's read ended (`Ok(0)`).
        server_eof: bool,
        client: rustls::ClientConnection,
        sock: std::net::TcpStream,
        /// Plaintext the client read.
        client_got: Vec<u8>,
        /// The client read close_notify.
        client_closed: bool,
        _dir: TempDir,
    }

    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pair() -> Pair {
        pair_of(rustls::DEFAULT_VERSIONS)
    }

    /// A [`pair`] whose client speaks only `versions`.
    fn pair_of(versions: &[&'static rustls::SupportedProtocolVersion]) -> Pair {
        let mut pair = unconnected(b"http/1.1", versions);
        // The handshake, and the ticket that follows it.
        pair.until("the handshake", |p| {
            !p.client.is_handshaking() && !p.tls.conn.is_handshaking() && !p.tls.wants_write()
        });
        pair
    }

    /// A pair whose client offers ALPN `alpn`, before the handshake.
    fn unconnected(alpn: &[u8], versions: &[&'static rustls::SupportedProtocolVersion]) -> Pair {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fastim-tls-unit-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = server_config(&config::Tls::SelfSigned, &dir, addr).expect("config");
        let sock = std::net::TcpStream::connect(addr).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        for s in [&sock, &server] {
            s.set_nonblocking(true).expect("non-blocking");
            s.set_nodelay(true).expect("nodelay");
        }
        let pem = std::fs::read_to_string(dir.join(SELF_SIGNED_CERT)).expect("cert");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(chain(&pem).remove(0)).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_config.alpn_protocols = vec![alpn.to_vec()];
        let name = ServerName::try_from("localhost").expect("name");
        let client = rustls::ClientConnection::new(Arc::new(client_config), name).expect("client");
        Pair {
            server: TcpStream::from_std(server),
            tls: Tls::new(&config).expect("tls"),
            spares: Spares::default(),
            got: Vec::new(),
            server_eof: false,
            client,
            sock,
            client_got: Vec::new(),
            client_closed: false,
            _dir: TempDir(dir),
        }
    }

    impl Pair {
        fn transport(&mut self) -> Transport<'_> {
            Transport::new(&mut self.server, Some(&mut self.tls))
        }

        /// Reads what the server's socket has, `chunk` bytes at most a read.
        fn server_read(&mut self, chunk: usize) -> io::Result<()> {
            let mut buf = vec![0u8; chunk];
            let mut spares = std::mem::take(&mut self.spares);
            let result = loop {
                match self.transport().read(&mut buf, &mut spares) {
                    Ok(0) => {
                        self.server_eof = true;
                        break Ok(());
                    }
                    Ok(n) => self.got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            self.spares = spares;
            result
        }

        /// Flushes `out` through the server's TLS.
        fn server_flush(&mut self, out: &mut Outbound) -> Flushed {
            let mut spares = std::mem::take(&mut self.spares);
            let flushed = self.transport().flush(out, &mut spares, false);
            self.spares = spares;
            flushed.expect("flush")
        }

        fn server_turn(&mut self) {
            self.server_read(256 * 1024).expect("server read");
            self.server_flush(&mut Outbound::default());
        }

        /// The client's TLS bytes for `plaintext`, each slice its own record(s).
        fn records(&mut self, plaintext: &[&[u8]]) -> Vec<u8> {
            let mut wire = Vec::new();
            for p in plaintext {
                self.client.writer().write_all(p).expect("client write");
                while self.client.wants_write() {
                    self.client.write_tls(&mut wire).expect("write_tls");
                }
            }
            wire
        }

        fn client_turn(&mut self) {
            while self.client.wants_write() {
                match self.client.write_tls(&mut self.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client write: {e}"),
                }
            }
            let mut tmp = vec![0u8; 64 * 1024];
            loop {
                // Plaintext first: rustls takes no more records while it holds some.
                loop {
                    match self.client.reader().read(&mut tmp) {
                        Ok(0) => {
                            self.client_closed = true;
                            break;
                        }
                        Ok(n) => self.client_got.extend_from_slice(&tmp[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("client plaintext: {e}"),
                    }
                }
                match self.client.read_tls(&mut self.sock) {
                    Ok(0) => break,
                    Ok(_) => {
                        self.client.process_new_packets().expect("client TLS");
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client read: {e}"),
                }
            }
        }

        /// Runs both ends until `done`, for 10 s at most.
        fn until(&mut self, what: &str, done: impl Fn(&Pair) -> bool) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !done(self) {
                assert!(std::time::Instant::now() < deadline, "{what}: timed out");
                self.client_turn();
                self.server_turn();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }

        fn send_raw(&mut self, bytes: &[u8]) {
            let mut left = bytes;
            while !left.is_empty() {
                match self.sock.write(left) {
                    Ok(n) => left = &left[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(e) => panic!("raw write: {e}"),
                }
            }
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn an_established_idle_connection_keeps_no_buffers() {
        let mut p = pair();
        assert_eq!(p.tls.buffered(), 0, "{:?}", p.tls);
        // A message each way, then idle again.
        let wire = p.records(&[b"hello"]);
        p.send_raw(&wire);
        p.until("the message", |p| p.got == b"hello");
        let mut out = Outbound::default();
        out.tail().extend_from_slice(b"world");
        assert_eq!(p.server_flush(&mut out), Flushed::All);
        p.until("the reply", |p| p.client_got == b"world");
        assert_eq!(p.tls.buffered(), 0, "{:?}", p.tls);
        // What an idle connection keeps, besides rustls' heap (keys and the state
        // of the finished handshake): rustls' connection (1,088 bytes) and three
        // empty windows. See BENCHMARKS.md, "TLS".
        let size = std::mem::size_of::<Tls>();
        assert!(size <= 1200, "{size}");
    }

    #[test]
    fn tls_1_2_works_the_same() {
        let mut p = pair_of(&[&rustls::version::TLS12]);
        assert_eq!(
            p.client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        assert_eq!(p.tls.buffered(), 0, "{:?}", p.tls);
        let payload = pattern(40_000);
        let wire = p.records(&[&payload]);
        p.send_raw(&wire);
        p.until("the message", |p| p.got.len() == payload.len());
        assert!(p.got == payload);
        let mut out = Outbound::default();
        out.push_owned(payload.clone());
        p.server_flush(&mut out);
        p.until("the reply", |p| p.client_got.len() == payload.len());
        assert!(p.client_got == payload);
        assert_eq!(p.tls.buffered(), 0, "{:?}", p.tls);
        let mut spares = Spares::default();
        p.transport().shutdown_write(&mut spares);
        p.until("close_notify", |p| p.client_closed);
    }

    #[test]
    fn a_record_cut_across_many_reads_is_joined() {
        let mut p = pair();
        let payload = pattern(10_000);
        let wire = p.records(&[&payload]);
        assert!(wire.len() > payload.len(), "one record");
        let mut sent = 0;
        let mut step = 1;
        while sent < wire.len() {
            let end = (sent + step).min(wire.len());
            p.send_raw(&wire[sent..end]);
            sent = end;
            step = step % 7 + 1;
            std::thread::sleep(std::time::Duration::from_micros(200));
            p.server_turn();
            if sent < wire.len() {
                assert!(p.got.is_empty(), "nothing before the record is whole");
                // A cut record waits in a buffer of its own size, not a lent one.
                assert!(p.tls.buffered() <= wire.len(), "{:?}", p.tls);
            }
        }
        p.until("the record", |p| p.got.len() == payload.len());
        assert_eq!(p.got, payload);
        assert_eq!(p.tls.buffered(), 0);
    }

    #[test]
    fn several_records_in_one_read_all_arrive_in_order() {
        for chunk in [256 * 1024, 1000, 1] {
            let mut p = pair();
            let messages: Vec<Vec<u8>> = (0..60).map(|i| pattern(100 + i * 37)).collect();
            let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let wire = p.records(&slices);
            p.send_raw(&wire);
            let want = messages.concat();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while p.got.len() < want.len() {
                assert!(std::time::Instant::now() < deadline, "timed out");
                p.server_read(chunk).expect("read");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(p.got, want, "read {chunk} bytes at a time");
            assert_eq!(p.tls.buffered(), 0, "{:?}", p.tls);
        }
    }

    #[test]
    fn a_large_reply_to_a_client_that_does_not_read_waits_in_the_queue() {
        let mut p = pair();
        let reply = pattern(8 << 20);
        let mut out = Outbound::default();
        out.push_owned(reply.clone());
        // The client reads nothing: the socket fills, then the TLS layer holds
        // at most one encryption's worth and the rest waits in the queue.
        let mut blocked = false;
        for _ in 0..200 {
            if p.server_flush(&mut out) == Flushed::Blocked {
                blocked = true;
                break;
            }
        }
        assert!(blocked, "8 MiB did not fill the socket");
        assert!(p.tls.buffered() <= IO_BUFFER + RECORD_MAX, "{:?}", p.tls);
        assert!(out.len() > 2 << 20, "{} bytes left the queue", out.len());
        // Once the client reads, everything arrives, in order.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while p.client_got.len() < reply.len() {
            assert!(std::time::Instant::now() < deadline, "timed out");
            p.client_turn();
            p.server_flush(&mut out);
            assert!(p.tls.buffered() <= IO_BUFFER + RECORD_MAX);
        }
        assert!(p.client_got == reply, "the reply arrived changed");
        assert!(out.is_empty());
        assert_eq!(p.tls.buffered(), 0);
    }

    #[test]
    fn close_notify_is_sent_and_taken() {
        // The server closes: the client reads a clean end.
        let mut p = pair();
        let mut spares = Spares::default();
        p.transport().shutdown_write(&mut spares);
        p.until("the client sees close_notify", |p| p.client_closed);
        // The client closes: the server's read ends after what came before it.
        let mut p = pair();
        p.client.writer().write_all(b"last words").expect("write");
        p.client.send_close_notify();
        p.until("the server sees close_notify", |p| p.server_eof);
        assert_eq!(p.got, b"last words");
    }

    #[test]
    fn a_client_without_http_1_1_in_alpn_is_refused_with_an_alert() {
        let mut p = unconnected(b"h2", rustls::DEFAULT_VERSIONS);
        while p.client.wants_write() {
            p.client.write_tls(&mut p.sock).expect("client hello");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = loop {
            assert!(std::time::Instant::now() < deadline, "timed out");
            match p.server_read(4096) {
                Err(e) => break e,
                Ok(()) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let alert = loop {
            assert!(std::time::Instant::now() < deadline, "no alert");
            match p.client.read_tls(&mut p.sock) {
                Ok(0) => panic!("closed without an alert"),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
            if let Err(e) = p.client.process_new_packets() {
                break e;
            }
        };
        assert!(
            matches!(
                alert,
                rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
            ),
            "{alert:?}"
        );
    }

    #[test]
    fn a_forged_record_ends_the_connection_with_an_alert() {
        let mut p = pair();
        let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x40];
        forged.extend_from_slice(&[0x55; 0x40]);
        p.send_raw(&forged);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = loop {
            assert!(std::time::Instant::now() < deadline, "timed out");
            match p.server_read(4096) {
                Err(e) => break e,
                Ok(()) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // The client gets the alert that says why.
        let mut wire = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let alert = loop {
            assert!(std::time::Instant::now() < deadline, "no alert");
            let mut tmp = [0u8; 4096];
            match p.sock.read(&mut tmp) {
                Ok(0) => panic!("closed without an alert"),
                Ok(n) => wire.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
            let mut reader = &wire[..];
            let _ = p.client.read_tls(&mut reader);
            if let Err(e) = p.client.process_new_packets() {
                break e;
            }
            wire.clear();
        };
        assert!(
            matches!(
                alert,
                rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
            ),
            "{alert:?}"
        );
    }
}

//! TLS: the real server with `--tls-self-signed` or `--tls-cert/--tls-key`, and
//! rustls clients that verify its certificate (the self-signed one, or a test CA's)
//! against a root store holding it: wss:// echo and chat, the API over https, the
//! plain-HTTP refusal, the handshake deadline, and the certificates refused at start.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Response, Server, fresh_data_dir, read_response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use sha2::{Digest, Sha256};
use tungstenite::{Message, WebSocket};

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Starts the server and returns it with what it logged while starting.
fn start_logged(data_dir: PathBuf, extra: &[&str]) -> (Server, String) {
    let server = Server::start_in(data_dir, extra);
    let log = server.log.text();
    (server, log)
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(path).expect("certificate file");
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// A client that trusts exactly `roots`, with ALPN http/1.1.
fn client_config(roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("a root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client that trusts the self-signed certificate the server keeps.
fn trusting_self_signed(server: &Server) -> Arc<ClientConfig> {
    client_config(&pem_certs(&server.data_dir.join("tls-self-signed.crt")))
}

/// A TLS stream to the server, handshake done.
fn connect(server: &Server, config: &Arc<ClientConfig>, name: &str) -> Tls {
    let tcp = TcpStream::connect(server.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    let conn = ClientConnection::new(config.clone(), name).expect("client");
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .expect("TLS handshake with fastim");
    }
    tls
}

/// One request over `tls`, its response read to the end of its body.
fn https(tls: &mut Tls, method: &str, path: &str, headers: &str, body: &str) -> Response {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).expect("send request");
    tls.flush().expect("flush");
    common::read_response(tls)
}

fn wss(server: &Server, config: &Arc<ClientConfig>, path: &str) -> WebSocket<Tls> {
    let tls = connect(server, config, "localhost");
    let url = format!("wss://localhost:{}{path}", server.addr.port());
    let (ws, response) = tungstenite::client(url, tls).expect("WebSocket upgrade over TLS");
    assert_eq!(response.status(), 101);
    ws
}

#[test]
fn echo_over_wss_returns_every_size() {
    let server = Server::start(&["--tls-self-signed"]);
    let config = trusting_self_signed(&server);
    let mut ws = wss(&server, &config, "/echo");
    for size in [0usize, 125, 64 * 1024, 8 * 1024 * 1024] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(payload.clone())).expect("send");
        match ws.read().expect("echo") {
            Message::Binary(echo) => assert!(echo[..] == payload[..], "{size} bytes"),
            other => panic!("{size} bytes: {other:?}"),
        }
        let text = "é".repeat(size / 2);
        ws.send(Message::text(text.clone())).expect("send");
        match ws.read().expect("echo") {
            Message::Text(echo) => assert_eq!(echo.as_str(), text, "{size} bytes of text"),
            other => panic!("{size} bytes of text: {other:?}"),
        }
    }
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "".into(),
    }))
    .expect("close");
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
            }
            Ok(other) => panic!("after close: {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("closing: {e}"),
        }
    }
    // ALPN and resumption: a second connection with the same client resumes.
    let tls = connect(&server, &config, "127.0.0.1");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut resumed = false;
    for _ in 0..3 {
        // The ticket arrives after the handshake: read a response first.
        let mut tls = connect(&server, &config, "localhost");
        assert_eq!(https(&mut tls, "GET", "/healthz", "", "").status, 200);
        if tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            resumed = true;
            break;
        }
    }
    assert!(resumed, "no session was resumed");
}

#[test]
fn chat_over_https_and_wss() {
    let server = Server::start(&["--tls-self-signed"]);
    let config = trusting_self_signed(&server);
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for (mobile, name) in [("13800000001", "ann"), ("13800000002", "bob")] {
        let mut tls = connect(&server, &config, "localhost");
        let body = format!("mobile={mobile}&passwd=a-good-secret&nickname={name}");
        let r = https(
            &mut tls,
            "POST",
            "/user/register",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            &body,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let cookie = r.header("set-cookie").expect("a session cookie");
        assert!(cookie.contains("; Secure"), "{cookie}");
        let data = &r.json()["data"];
        tokens.push(data["token"].as_str().expect("token").to_owned());
        ids.push(data["id"].as_i64().expect("id"));
    }
    let mut tls = connect(&server, &config, "localhost");
    let auth = format!("Authorization: Bearer {}\r\n", tokens[0]);
    let r = https(
        &mut tls,
        "POST",
        "/contact/addfriend",
        &format!("{auth}Content-Type: application/x-www-form-urlencoded\r\n"),
        &format!("dstid={}", ids[1]),
    );
    assert_eq!(r.json()["data"]["status"], "requested", "{:?}", r.json());
    let mut bob_tls = connect(&server, &config, "localhost");
    let r = https(
        &mut bob_tls,
        "POST",
        "/contact/accept",
        &format!(
            "Authorization: Bearer {}\r\nContent-Type: application/x-www-form-urlencoded\r\n",
            tokens[1]
        ),
        &format!("dstid={}", ids[0]),
    );
    assert_eq!(r.json()["code"], 0, "{:?}", r.json());
    // Keep-alive over the same TLS connection.
    let me = https(&mut tls, "GET", "/user/me", &auth, "");
    assert_eq!(me.json()["data"]["nickname"], "ann");

    let mut ann = wss(&server, &config, &format!("/chat?token={}", tokens[0]));
    let mut bob = wss(&server, &config, &format!("/chat?token={}", tokens[1]));
    let hello = serde_json::json!({"cmd": 10, "dstid": ids[1], "media": 1, "content": "hi over TLS", "ref": "t1"});
    ann.send(Message::text(hello.to_string())).expect("send");
    let next_json = |ws: &mut WebSocket<Tls>| loop {
        match ws.read().expect("read") {
            Message::Text(t) => {
                break serde_json::from_str::<serde_json::Value>(t.as_str()).expect("JSON");
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("{other:?}"),
        }
    };
    let ack = next_json(&mut ann);
    assert_eq!(ack["cmd"], 21, "{ack}");
    assert_eq!(ack["ref"], "t1");
    let delivery = next_json(&mut bob);
    assert_eq!(delivery["content"], "hi over TLS");
    assert_eq!(delivery["userid"], ids[0]);
    assert_eq!(delivery["id"], ack["id"]);
}

#[test]
fn plain_http_on_the_tls_port_is_told_to_use_https() {
    let server = Server::start(&["--tls-self-signed"]);
    let mut tcp = TcpStream::connect(server.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let r = read_response(&mut tcp);
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("close"));
    let msg = r.json()["msg"].as_str().expect("msg").to_owned();
    assert!(msg.contains("https://"), "{msg}");
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).expect("then the end");
    assert!(rest.is_empty());
    // The server still serves TLS clients.
    let mut tls = connect(&server, &trusting_self_signed(&server), "localhost");
    assert_eq!(https(&mut tls, "GET", "/healthz", "", "").status, 200);
}

/// Sends the client's pending TLS bytes `piece` bytes at a time, pausing between
/// pieces so that the server reads each on its own.
fn dribble(tls: &mut Tls, piece: usize) {
    let mut wire = Vec::new();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut wire).expect("write_tls");
    }
    for chunk in wire.chunks(piece) {
        tls.sock.write_all(chunk).expect("send");
        std::thread::sleep(Duration::from_micros(300));
    }
}

#[test]
fn records_cut_into_pieces_or_sent_many_at_once_are_read() {
    let server = Server::start(&["--tls-self-signed"]);
    let config = trusting_self_signed(&server);
    // The whole handshake and a request, a few bytes at a time.
    let tcp = TcpStream::connect(server.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    tcp.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from("localhost").expect("name");
    let conn = ClientConnection::new(config.clone(), name).expect("client");
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        dribble(&mut tls, 7);
        if tls.conn.is_handshaking() {
            tls.conn.read_tls(&mut tls.sock).expect("read_tls");
            tls.conn.process_new_packets().expect("handshake");
        }
    }
    dribble(&mut tls, 7);
    tls.conn
        .writer()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("request");
    dribble(&mut tls, 3);
    let r = common::read_response(&mut tls);
    assert_eq!(r.status, 200, "{}", r.head);
    // A request in records of two bytes each, all in one write; it asks the
    // server to close, which it does with close_notify.
    let request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    for piece in request.chunks(2) {
        tls.conn.writer().write_all(piece).expect("record");
    }
    dribble(&mut tls, usize::MAX);
    let r = common::read_response(&mut tls);
    assert_eq!(r.status, 200, "{}", r.head);
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .expect("a clean end (close_notify), not a cut");
    assert!(rest.is_empty());
}

#[test]
fn a_stalled_tls_handshake_is_dropped_at_the_handshake_timeout() {
    let server = Server::start(&["--tls-self-signed", "--handshake-timeout", "1"]);
    // The first bytes of a ClientHello record, and then nothing.
    let mut half = TcpStream::connect(server.addr).expect("connect");
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .expect("send");
    // A client that says nothing at all.
    let mut silent = TcpStream::connect(server.addr).expect("connect");
    let started = Instant::now();
    for s in [&mut half, &mut silent] {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let n = match s.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("still open after {:?}: {e}", started.elapsed()),
        };
        assert_eq!(n, 0, "{:?}", &buf[..n]);
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[test]
fn the_self_signed_certificate_is_kept_and_its_fingerprints_printed() {
    let dir = fresh_data_dir();
    let (mut server, log) = start_logged(dir.clone(), &["--tls-self-signed"]);
    let cert_file = dir.join("tls-self-signed.crt");
    let cert = pem_certs(&cert_file).remove(0);
    let hex: Vec<String> = Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert!(log.contains(&hex.join(":")), "{log}");
    // The SPKI's, as Chromium wants it: base64 of the SHA-256 of the public key's DER.
    let spki = spki_fingerprint(&log);
    let leaf = webpki::EndEntityCert::try_from(&cert).expect("parses");
    let want = base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(leaf.subject_public_key_info().as_ref()));
    assert_eq!(spki, want, "{log}");
    assert!(log.contains("made a self-signed certificate"), "{log}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("tls-self-signed.key"))
            .expect("key kept")
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the key is the owner's only: {mode:o}");
    server.keep_data = true;
    assert!(server.terminate().is_some());
    drop(server);

    let (server, again) = start_logged(dir.clone(), &["--tls-self-signed"]);
    assert!(
        again.contains("reusing the self-signed certificate"),
        "{again}"
    );
    assert!(again.contains(&hex.join(":")), "{again}");
    assert_eq!(spki_fingerprint(&again), spki);
    assert_eq!(pem_certs(&cert_file)[0], cert);
    let mut tls = connect(&server, &trusting_self_signed(&server), "127.0.0.1");
    assert_eq!(https(&mut tls, "GET", "/healthz", "", "").status, 200);
}

/// The base64 SPKI fingerprint in the server's log.
fn spki_fingerprint(log: &str) -> String {
    log.split("--ignore-certificate-errors-spki-list=")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the SPKI fingerprint is printed")
        .to_owned()
}

/// A CA and a leaf it signed for 127.0.0.1 and localhost, with `leaf_alg`'s key,
/// written as `chain.pem` (leaf, then CA) and `key.pem` in `dir`.
fn ca_and_leaf(
    dir: &Path,
    leaf_key: rcgen::KeyPair,
    not_after: (i32, u8, u8),
) -> (CertificateDer<'static>, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("dir");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fastim test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let leaf = params.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let chain = dir.join("chain.pem");
    let key = dir.join("key.pem");
    std::fs::write(&chain, format!("{}{}", leaf.pem(), ca.pem())).expect("write chain");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write key");
    (ca.der().clone(), chain, key)
}

#[test]
fn a_certificate_chain_with_ecdsa_or_ed25519_keys_serves_https() {
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let dir = fresh_data_dir();
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let (ca, chain, key) = ca_and_leaf(&dir.join("certs"), key, (2090, 1, 1));
        let args = [
            "--tls-cert",
            chain.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ];
        let server = Server::start_in(dir, &args);
        let mut tls = connect(&server, &client_config(&[ca]), "127.0.0.1");
        let r = https(&mut tls, "GET", "/healthz", "", "");
        assert_eq!(r.status, 200, "{alg:?}");
    }
}

/// An RSA key: ring signs with RSA keys but does not make them, so the test key is a
/// file (made once with `openssl genpkey -algorithm RSA`, used by this test only),
/// in PKCS#8 for rcgen and in PKCS#1 ("BEGIN RSA PRIVATE KEY", as older tools write
/// keys) for the server.
#[test]
fn an_rsa_key_in_pkcs1_serves_https() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let pkcs8 = std::fs::read_to_string(fixtures.join("rsa-test-key.pk8.pem")).expect("fixture");
    let pkcs1 = fixtures.join("rsa-test-key.pkcs1.pem");
    assert!(
        std::fs::read_to_string(&pkcs1)
            .expect("fixture")
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
    let key = rcgen::KeyPair::from_pem(&pkcs8).expect("an RSA key rcgen signs with");
    assert!(key.is_compatible(&rcgen::PKCS_RSA_SHA256));
    let dir = fresh_data_dir();
    let (ca, chain, _) = ca_and_leaf(&dir.join("certs"), key, (2090, 1, 1));
    let args = [
        "--tls-cert",
        chain.to_str().expect("utf-8"),
        "--tls-key",
        pkcs1.to_str().expect("utf-8"),
    ];
    let server = Server::start_in(dir, &args);
    let mut tls = connect(&server, &client_config(&[ca]), "localhost");
    assert_eq!(https(&mut tls, "GET", "/healthz", "", "").status, 200);
}

#[test]
fn bad_certificates_are_refused_at_start_naming_the_file() {
    let dir = fresh_data_dir();
    let certs = dir.join("certs");
    let key = rcgen::KeyPair::generate().expect("key");
    let (_, expired_chain, expired_key) = ca_and_leaf(&certs.join("old"), key, (2021, 6, 1));
    let key = rcgen::KeyPair::generate().expect("key");
    let (_, good_chain, _) = ca_and_leaf(&certs.join("good"), key, (2090, 1, 1));
    let other_key = certs.join("other.key");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().expect("key").serialize_pem(),
    )
    .expect("write");
    let not_pem = certs.join("not.pem");
    std::fs::write(&not_pem, "hello\n").expect("write");
    let s = |p: &Path| p.to_str().expect("utf-8").to_owned();
    let cases: [(&str, [String; 2], &[&str]); 5] = [
        (
            "expired",
            [s(&expired_chain), s(&expired_key)],
            &["expired on 2021-06-01"],
        ),
        (
            "mismatched",
            [s(&good_chain), s(&other_key)],
            &["does not match", "other.key", "good/chain.pem"],
        ),
        (
            "missing",
            [s(&certs.join("nowhere.pem")), s(&other_key)],
            &["nowhere.pem"],
        ),
        (
            "no certificate",
            [s(&not_pem), s(&other_key)],
            &["not.pem", "no certificate"],
        ),
        (
            "no key",
            [s(&good_chain), s(&not_pem)],
            &["not.pem", "no private key"],
        ),
    ];
    for (case, [cert, key], words) in cases {
        let run = Server::try_start_in(
            &[],
            dir.join(case.replace(' ', "-")),
            &["--tls-cert", &cert, "--tls-key", &key],
        );
        let err = match run {
            Ok(_) => panic!("{case}: the server started"),
            Err(err) => err,
        };
        for word in words {
            assert!(err.contains(word), "{case}: {word:?} not in {err}");
        }
        assert!(err.contains("exit status: 1"), "{case}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! What an HTTP request on a fresh connection turns into: a WebSocket upgrade,
//! a token check before one, or a final response.
//!
//! Who sent it is decided here too, from data alone (the TCP peer and the trusted
//! proxies of `--trust-proxy`): see [`client`].

use std::net::IpAddr;
use std::path::PathBuf;

use super::conn::Endpoint;
use crate::api::{self, SESSION_COOKIE};
use crate::config::{self, Config};
use crate::files::{self, Caching};
use crate::http::{self, FramingError, Refusal, RequestHead, Status};
use crate::resource;
use crate::ws::deflate::Agreement;
use crate::ws::handshake;

/// The decision for one request head.
#[derive(Debug)]
pub enum Routed {
    /// Upgrade at once (no authentication needed).
    Upgrade {
        /// The endpoint.
        endpoint: Endpoint,
        /// `Sec-WebSocket-Accept`.
        accept: String,
        /// The permessage-deflate offer accepted, if any.
        deflate: Option<Agreement>,
    },
    /// Check the token on a worker, then upgrade to `/chat` or refuse.
    Authenticate {
        /// `Sec-WebSocket-Accept`.
        accept: String,
        /// The token the client presented.
        token: String,
        /// The user id the client claims (`?id=`).
        claimed_user: Option<i64>,
        /// The permessage-deflate offer accepted, if any.
        deflate: Option<Agreement>,
    },
    /// An API call: read `content_length` bytes of body, then hand it to a worker.
    Api {
        /// Everything but the body and the time.
        request: api::ApiRequest,
        /// The client's address for the login and registration throttles: the TCP
        /// peer, or the client a trusted proxy names (see [`client`]).
        client: IpAddr,
        /// Body length from `Content-Length`.
        content_length: usize,
        /// Whether the connection stays open after the reply.
        keep_alive: bool,
    },
    /// An upload: read the body as it arrives, then store it on a worker.
    Upload {
        /// The session token (checked before the body is read, and by the worker);
        /// `None` for an upload without a session, which the throttle limits.
        token: Option<String>,
        /// The client's address, for the anonymous upload throttle (see [`client`]).
        client: IpAddr,
        /// `Content-Type`, with the multipart boundary.
        content_type: String,
        /// Body length from `Content-Length`.
        content_length: usize,
        /// Whether the connection stays open after the reply.
        keep_alive: bool,
    },
    /// A file to read from disk on a worker.
    ReadFile(FileRequest),
    /// A health check, run on a worker.
    Health {
        /// `HEAD` rather than `GET`.
        head_only: bool,
        /// Whether the connection stays open.
        keep_alive: bool,
    },
    /// Answer (a file built into the binary), then read the next request or close.
    Reply {
        /// The whole response.
        response: Vec<u8>,
        /// Whether the connection stays open.
        keep_alive: bool,
    },
    /// Refuse: the connection's machine writes it, the one place refusals become bytes.
    Refuse(Refusal),
}

/// A file to serve from disk.
#[derive(Debug)]
pub struct FileRequest {
    /// Where it is.
    pub path: PathBuf,
    /// Its validator, when the name already is one (uploads).
    pub etag: Option<String>,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Cache policy.
    pub caching: Caching,
    /// `HEAD` rather than `GET`.
    pub head_only: bool,
    /// The client's `If-None-Match`.
    pub if_none_match: Option<String>,
    /// Whether the connection stays open.
    pub keep_alive: bool,
}

/// Who sent a request, as far as the server can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the TCP peer, or the one a trusted proxy names.
    pub addr: IpAddr,
    /// Whether the client used HTTPS: a trusted proxy says so (from [`client`]),
    /// or the connection itself is TLS (set by [`route`]).
    pub https: bool,
}

/// Who sent a request that arrived from `peer`. `X-Forwarded-For` and
/// `X-Forwarded-Proto` are believed only when `peer` is one of the `trusted`
/// proxies; from anyone else both are ignored (a client could name any address
/// and escape its throttle).
///
/// The address is found as nginx's `real_ip_recursive` finds it: the values of every
/// `X-Forwarded-For` header, in order, are one list, and it is read from the right,
/// each proxy having appended the address it was connected from. Entries that are
/// themselves trusted proxies are passed over; the first that is not is the client.
/// If every entry is trusted, the left-most is. An entry that is not an IP address
/// (optionally with a port, `[v6]:port` for IPv6) ends the search: the last trusted
/// hop before it is taken as the client, since nothing further left can be believed.
///
/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry, here and in
/// `trusted`.
pub fn client(head: &RequestHead<'_>, peer: IpAddr, trusted: &[IpAddr]) -> Client {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.to_canonical() == ip);
    if !is_trusted(peer) {
        return Client {
            addr: peer,
            https: false,
        };
    }
    let mut addr = peer;
    let entries = head
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"))
        .flat_map(|(_, value)| value.split(|&b| b == b','));
    // Headers are read in order, so the list is reversed as a whole: collect the
    // entries (a request head is at most `MAX_REQUEST_HEAD` bytes).
    let entries: Vec<&[u8]> = entries.collect();
    for entry in entries.into_iter().rev() {
        let Some(ip) = forwarded_ip(entry) else {
            break;
        };
        addr = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Client {
        addr,
        https: forwarded_https(head),
    }
}

/// One `X-Forwarded-For` entry as an address: `a.b.c.d`, `a.b.c.d:port`, an IPv6
/// address, or `[v6]:port`.
fn forwarded_ip(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<std::net::SocketAddr>().map(|s| s.ip()))
        .ok()?;
    Some(ip.to_canonical())
}

/// Routes a request head that arrived from `peer`.
pub fn route(head: &RequestHead<'_>, config: &Config, peer: IpAddr) -> Routed {
    // Framing first, for every route (RFC 9112 §6.3): when the body's length is in
    // doubt, so is where the next request starts, so the only safe answer is a
    // refusal and the end of the connection.
    let body_len = match http::body_framing(head) {
        Ok(n) => n,
        Err(e) => return framing_refusal(e),
    };
    let path = head.path();
    if let Some(route) = api::Route::from_path(path) {
        let mut client = client(head, peer, &config.trusted_proxies);
        // Over the server's own TLS the cookie is Secure too.
        client.https |= config.tls.is_some();
        return route_api(head, route, body_len, client, config.instant_friends);
    }
    if path == "/healthz" {
        return route_health(head, body_len);
    }
    if path == "/inspector" || path.starts_with("/inspector/") {
        return route_inspector(head, config, body_len);
    }
    let endpoint_needs_auth = match path {
        "/echo" if config.echo => false,
        "/chat" => true,
        "/attach/upload" => {
            let client = client(head, peer, &config.trusted_proxies).addr;
            return route_upload(head, config, body_len, client);
        }
        // A WebSocket handshake for a path without an endpoint ends the connection.
        _ if handshake::is_upgrade(head) => {
            return Routed::Refuse(Refusal::new(Status::NotFound, "no WebSocket endpoint here"));
        }
        _ => return route_file(head, config, body_len),
    };
    // What follows an upgrade request's head is WebSocket frames: a declared body
    // would be read as frames here but skipped as a body by anyone honouring the
    // length (RFC 9112 §6.3), so it is refused and the connection closed.
    if body_len > 0 {
        return Routed::Refuse(no_body());
    }
    let accept = match handshake::validate(head) {
        Ok(accept) => accept,
        Err(e) => return Routed::Refuse(handshake::rejection(e)),
    };
    let deflate = if config.deflate && !inspector_declines_deflate(head, config) {
        handshake::negotiate_deflate(head)
    } else {
        None
    };
    if !endpoint_needs_auth {
        return Routed::Upgrade {
            endpoint: Endpoint::Echo,
            accept,
            deflate,
        };
    }
    if !origin_allowed(head, &config.allowed_origins) {
        return Routed::Refuse(Refusal::new(
            Status::Forbidden,
            "this page's origin may not open a chat connection",
        ));
    }
    let query = head.query().unwrap_or("");
    let Some(token) = bearer_token(head)
        .or_else(|| cookie(head, SESSION_COOKIE))
        .or_else(|| query_param(query, "token"))
        .filter(|t| !t.is_empty())
    else {
        return Routed::Refuse(Refusal::new(
            Status::Unauthorized,
            "log in first: no session token",
        ));
    };
    let claimed_user = match query_param(query, "id").filter(|v| !v.is_empty()) {
        None => None,
        Some(id) => match id.parse() {
            Ok(id) => Some(id),
            Err(_) => {
                return Routed::Refuse(Refusal::new(Status::BadRequest, "id must be a number"));
            }
        },
    };
    Routed::Authenticate {
        accept,
        token: token.to_owned(),
        claimed_user,
        deflate,
    }
}

/// The frame inspector's routes (`--inspector`): the page under `/inspector/` and
/// its feed, `/inspector/feed`. Without the flag they are unknown, like any
/// other path.
fn route_inspector(head: &RequestHead<'_>, config: &Config, body_len: usize) -> Routed {
    let path = head.path();
    if !config.inspector {
        if handshake::is_upgrade(head) {
            return Routed::Refuse(Refusal::new(Status::NotFound, "no WebSocket endpoint here"));
        }
        return match read_only(head, body_len) {
            Ok(head_only) => Routed::Refuse(
                Refusal::new(Status::NotFound, "not found")
                    .keep_alive(keep_alive(head))
                    .for_head(head_only),
            ),
            Err(refusal) => Routed::Refuse(refusal),
        };
    }
    if path == "/inspector" {
        return Routed::Refuse(
            Refusal::new(Status::NotFound, "the frame inspector is at /inspector/")
                .keep_alive(keep_alive(head)),
        );
    }
    if path != "/inspector/feed" {
        return route_file(head, config, body_len);
    }
    if !handshake::is_upgrade(head) {
        return Routed::Refuse(Refusal::new(
            Status::BadRequest,
            "the inspector feed is a WebSocket: open ws://…/inspector/feed",
        ));
    }
    if body_len > 0 {
        return Routed::Refuse(no_body());
    }
    let accept = match handshake::validate(head) {
        Ok(accept) => accept,
        Err(e) => return Routed::Refuse(handshake::rejection(e)),
    };
    if !origin_allowed(head, &config.allowed_origins) {
        return Routed::Refuse(Refusal::new(
            Status::Forbidden,
            "this page's origin may not open the inspector feed",
        ));
    }
    Routed::Upgrade {
        endpoint: Endpoint::Inspector,
        accept,
        // The feed's records are short JSON texts.
        deflate: None,
    }
}

/// A traced `/echo` (`?trace=`, with `--inspector`) takes permessage-deflate only
/// when the page asks for it with `deflate=1`: a browser compresses every
/// message it sends, and a learner should first see the bytes they typed.
fn inspector_declines_deflate(head: &RequestHead<'_>, config: &Config) -> bool {
    config.inspector
        && head.query().is_some_and(|q| {
            query_param(q, "trace").is_some() && query_param(q, "deflate") != Some("1")
        })
}

fn route_api(
    head: &RequestHead<'_>,
    route: api::Route,
    body_len: usize,
    client: Client,
    instant_friends: bool,
) -> Routed {
    if !route.allows(head.method) {
        return method_not_allowed(if route.allows("GET") {
            "GET, POST"
        } else {
            "POST"
        });
    }
    let content_length = match within_limit(body_len, config::MAX_API_BODY, "64 KiB") {
        Ok(n) => n,
        Err(refusal) => return Routed::Refuse(refusal),
    };
    let keep_alive = keep_alive(head);
    Routed::Api {
        request: api::ApiRequest {
            route,
            content_type: header_text(head, "content-type").map(str::to_owned),
            body: Vec::new(),
            query: head.query().map(str::to_owned),
            token: bearer_token(head)
                .or_else(|| cookie(head, SESSION_COOKIE))
                .map(str::to_owned),
            now_ms: 0,
            secure: client.https,
            instant_friends,
        },
        client: client.addr,
        content_length,
        keep_alive,
    }
}

fn route_upload(
    head: &RequestHead<'_>,
    config: &Config,
    body_len: usize,
    client: IpAddr,
) -> Routed {
    if head.method != "POST" {
        return method_not_allowed("POST");
    }
    // No token (or an empty one): an upload without a session, as fastIM's register
    // page makes for the avatar of an account not made yet.
    let token = bearer_token(head)
        .or_else(|| cookie(head, SESSION_COOKIE))
        .filter(|t| !t.is_empty());
    let content_type = header_text(head, "content-type").unwrap_or("");
    if http::multipart::boundary(content_type).is_err() {
        return Routed::Refuse(Refusal::new(
            Status::BadRequest,
            "upload the file as multipart/form-data in a field named file",
        ));
    }
    let content_length = if token.is_some() {
        let limit = config.max_upload + config::UPLOAD_FRAMING;
        match within_limit(body_len, limit, "the upload limit") {
            Ok(n) => n,
            Err(refusal) => return Routed::Refuse(refusal),
        }
    } else {
        let max = anonymous_upload_max(config);
        if body_len > max + config::UPLOAD_FRAMING {
            return Routed::Refuse(Refusal::new(
                Status::PayloadTooLarge,
                format!(
                    "without a session a picture may be at most {}; log in to upload up to {}",
                    api::mib(max),
                    api::mib(config.max_upload),
                ),
            ));
        }
        body_len
    };
    Routed::Upload {
        token: token.map(str::to_owned),
        client,
        content_type: content_type.to_owned(),
        content_length,
        keep_alive: keep_alive(head),
    }
}

/// The largest picture an upload without a session may carry: 1 MiB, or less if the
/// server's own limit is lower.
pub fn anonymous_upload_max(config: &Config) -> usize {
    api::ANONYMOUS_UPLOAD_MAX.min(config.max_upload)
}

/// A `GET` or `HEAD` without a body (files, health): whether it is `HEAD`, or the
/// refusal. Such routes take no body, but a declared one still frames the message
/// (RFC 9112 §6.3): reading it as the next request is the smuggling shape, and
/// skipping it would bet that every parser in front counted it the same. Refuse
/// and close.
fn read_only(head: &RequestHead<'_>, body_len: usize) -> Result<bool, Refusal> {
    let head_only = match head.method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(not_allowed("GET, HEAD")),
    };
    if body_len > 0 {
        return Err(no_body());
    }
    Ok(head_only)
}

/// `GET /healthz` for load balancers: answered by a worker, so a 200 says the loop
/// and the workers run and the database takes writes.
fn route_health(head: &RequestHead<'_>, body_len: usize) -> Routed {
    let head_only = match read_only(head, body_len) {
        Ok(head_only) => head_only,
        Err(refusal) => return Routed::Refuse(refusal),
    };
    Routed::Health {
        head_only,
        keep_alive: keep_alive(head),
    }
}

/// Web client files and uploaded images, for `GET` and `HEAD`.
fn route_file(head: &RequestHead<'_>, config: &Config, body_len: usize) -> Routed {
    let head_only = match read_only(head, body_len) {
        Ok(head_only) => head_only,
        Err(refusal) => return Routed::Refuse(refusal),
    };
    let keep_alive = keep_alive(head);
    let if_none_match = header_text(head, "if-none-match").map(str::to_owned);
    let Some(path) = files::safe_path(head.path()) else {
        return Routed::Refuse(Refusal::new(Status::BadRequest, "invalid path"));
    };
    if let Ok(name) = path.strip_prefix("resource") {
        let name = name.to_str().unwrap_or("");
        let Some(kind) = resource::parse_name(name) else {
            return Routed::Refuse(
                Refusal::new(Status::NotFound, "no such image")
                    .keep_alive(keep_alive)
                    .for_head(head_only),
            );
        };
        return Routed::ReadFile(FileRequest {
            path: config.resource_dir.join(name),
            etag: Some(format!("\"{}\"", &name[..32])),
            content_type: kind.content_type(),
            caching: Caching::Immutable,
            head_only,
            if_none_match,
            keep_alive,
        });
    }
    if let Some(file) = files::generated(&path, config.change_windows()) {
        return Routed::Reply {
            response: files::response(&file, head_only, if_none_match.as_deref(), keep_alive),
            keep_alive,
        };
    }
    if let Some(dir) = &config.static_dir {
        return Routed::ReadFile(FileRequest {
            content_type: files::content_type(&path),
            path: dir.join(path),
            etag: None,
            caching: Caching::Revalidate,
            head_only,
            if_none_match,
            keep_alive,
        });
    }
    match files::embedded(&path) {
        Some(file) => Routed::Reply {
            response: files::response(&file, head_only, if_none_match.as_deref(), keep_alive),
            keep_alive,
        },
        None => Routed::Refuse(
            Refusal::new(Status::NotFound, "not found")
                .keep_alive(keep_alive)
                .for_head(head_only),
        ),
    }
}

/// The refusal of a request whose body framing is in doubt: answer, then close
/// (RFC 9112 §6.3 items 3 and 5).
fn framing_refusal(e: FramingError) -> Routed {
    let (status, msg) = match e {
        FramingError::TransferEncoding => (
            Status::LengthRequired,
            "send the body with a Content-Length",
        ),
        FramingError::InvalidLength => (Status::BadRequest, "invalid Content-Length"),
        FramingError::DuplicateLength => (Status::BadRequest, "conflicting Content-Length values"),
    };
    Routed::Refuse(Refusal::new(status, msg))
}

/// The refusal of a body sent to a route that takes none.
fn no_body() -> Refusal {
    Refusal::new(Status::BadRequest, "this route takes no request body")
}

/// The body length, or 413 when it is over `limit` (before any of the body is read).
fn within_limit(length: usize, limit: usize, limit_name: &str) -> Result<usize, Refusal> {
    if length > limit {
        return Err(Refusal::new(
            Status::PayloadTooLarge,
            format!("the request body is larger than {limit_name}"),
        ));
    }
    Ok(length)
}

/// HTTP/1.1 keeps the connection unless told `Connection: close`.
fn keep_alive(head: &RequestHead<'_>) -> bool {
    head.minor_version == 1
        && !head.header("connection").is_some_and(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        })
}

fn header_text<'b>(head: &RequestHead<'b>, name: &str) -> Option<&'b str> {
    head.header(name).and_then(|v| std::str::from_utf8(v).ok())
}

fn method_not_allowed(allow: &'static str) -> Routed {
    Routed::Refuse(not_allowed(allow))
}

fn not_allowed(allow: &'static str) -> Refusal {
    Refusal::new(Status::MethodNotAllowed, format!("use {allow}")).with_header("Allow", allow)
}

/// A browser always sends `Origin` on a WebSocket upgrade; it must be this server
/// (same host as `Host`) or one of the allowed origins, so another site cannot open
/// a socket with a visitor's cookie. Clients that send no `Origin` are not browsers
/// and present their token themselves.
fn origin_allowed(head: &RequestHead<'_>, allowed: &[String]) -> bool {
    let Some(origin) = head
        .header("origin")
        .and_then(|o| std::str::from_utf8(o).ok())
    else {
        return true;
    };
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    head.header("host")
        .and_then(|h| std::str::from_utf8(h).ok())
        .is_some_and(|host| host.eq_ignore_ascii_case(origin_host))
}

/// Whether a TLS-terminating proxy in front says the client used HTTPS: the first value
/// of the (first) `X-Forwarded-Proto` header is `https`, in any case. Asked only of a
/// request from a trusted proxy ([`client`]), which must set the header itself rather
/// than pass on the client's.
fn forwarded_https(head: &RequestHead<'_>) -> bool {
    header_text(head, "x-forwarded-proto").is_some_and(|v| {
        v.split(',')
            .next()
            .is_some_and(|first| first.trim().eq_ignore_ascii_case("https"))
    })
}

fn bearer_token<'b>(head: &RequestHead<'b>) -> Option<&'b str> {
    let value = std::str::from_utf8(head.header("authorization")?).ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name` in the `Cookie` header.
pub fn cookie<'b>(head: &RequestHead<'b>, name: &str) -> Option<&'b str> {
    let header = std::str::from_utf8(head.header("cookie")?).ok()?;
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The raw value of `name` in a query string (tokens and ids need no decoding).
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn routed(extra_headers: &str, target: &str) -> Routed {
        let req = format!(
            "GET {target} HTTP/1.1\r\nHost: chat.example:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
        );
        let head = parse_head(req.as_bytes(), 8192)
            .expect("valid")
            .expect("complete");
        route(&head, &Config::default(), PEER)
    }

    fn status(r: &Routed) -> Option<String> {
        match r {
            Routed::Refuse(r) => Some(r.status.code().to_string()),
            _ => None,
        }
    }

    /// `secure` and the throttles' address of a login with `extra_headers` from
    /// `peer`, with 127.0.0.1 and 10.0.0.1 trusted.
    fn api_client(extra_headers: &str, peer: IpAddr) -> (bool, IpAddr) {
        let req = format!(
            "POST /user/login HTTP/1.1\r\nHost: chat.example\r\nContent-Length: 0\r\n{extra_headers}\r\n"
        );
        let head = parse_head(req.as_bytes(), 8192)
            .expect("valid")
            .expect("complete");
        let config = Config {
            trusted_proxies: vec![PEER, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
            ..Config::default()
        };
        match route(&head, &config, peer) {
            Routed::Api {
                request, client, ..
            } => (request.secure, client),
            other => panic!("{extra_headers}: {other:?}"),
        }
    }

    #[test]
    fn api_requests_know_whether_a_trusted_proxy_saw_https() {
        let secure = |extra_headers: &str| api_client(extra_headers, PEER).0;
        for yes in [
            "X-Forwarded-Proto: https\r\n",
            "x-forwarded-proto: HTTPS\r\n",
            "X-Forwarded-Proto:  https , http\r\n",
            "X-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n",
        ] {
            assert!(secure(yes), "{yes}");
        }
        for no in [
            "",
            "X-Forwarded-Proto: http\r\n",
            "X-Forwarded-Proto: http, https\r\n",
            "X-Forwarded-Proto: httpsx\r\n",
            "X-Forwarded-Proto:\r\n",
            "Forwarded: proto=https\r\n",
        ] {
            assert!(!secure(no), "{no}");
        }
        // From a peer that is not a trusted proxy, the header is the client's own word.
        let stranger = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert!(!api_client("X-Forwarded-Proto: https\r\n", stranger).0);
        // Nor with an empty trusted set: the default.
        let req =
            "POST /user/login HTTP/1.1\r\nContent-Length: 0\r\nX-Forwarded-Proto: https\r\n\r\n";
        let head = parse_head(req.as_bytes(), 8192)
            .expect("valid")
            .expect("complete");
        assert_eq!(
            client(&head, PEER, &[]),
            Client {
                addr: PEER,
                https: false
            }
        );
    }

    #[test]
    fn the_client_is_the_right_most_forwarded_address_not_a_trusted_proxy() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        let stranger = ip("192.0.2.7");
        // (headers, peer, the address the throttles count)
        #[rustfmt::skip]
        let cases = [
            ("", PEER, "127.0.0.1"),
            ("X-Forwarded-For: 203.0.113.5\r\n", PEER, "203.0.113.5"),
            // What the client wrote itself is to the left of what the proxy appended.
            ("X-Forwarded-For: 198.51.100.1, 203.0.113.5\r\n", PEER, "203.0.113.5"),
            // Trusted hops are passed over; several headers are one list, in order.
            ("X-Forwarded-For: 198.51.100.1, 203.0.113.5, 10.0.0.1\r\n", PEER, "203.0.113.5"),
            ("X-Forwarded-For: 198.51.100.1\r\nx-forwarded-for: 203.0.113.5,10.0.0.1\r\n", PEER, "203.0.113.5"),
            // All trusted: the left-most.
            ("X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n", PEER, "10.0.0.1"),
            // Ports and brackets; IPv6; IPv4-mapped IPv6 as IPv4.
            ("X-Forwarded-For: 203.0.113.5:4711\r\n", PEER, "203.0.113.5"),
            ("X-Forwarded-For: [2001:db8::1]:443\r\n", PEER, "2001:db8::1"),
            ("X-Forwarded-For: 2001:db8::2\r\n", PEER, "2001:db8::2"),
            ("X-Forwarded-For: ::ffff:203.0.113.9\r\n", PEER, "203.0.113.9"),
            // Not an address: the search ends at the last trusted hop.
            ("X-Forwarded-For: 203.0.113.5, unknown\r\n", PEER, "127.0.0.1"),
            ("X-Forwarded-For: 203.0.113.5, garbage, 10.0.0.1\r\n", PEER, "10.0.0.1"),
            ("X-Forwarded-For: 203.0.113.5,\r\n", PEER, "127.0.0.1"),
            ("X-Forwarded-For:\r\n", PEER, "127.0.0.1"),
            // From a peer that is not trusted, the header is ignored.
            ("X-Forwarded-For: 203.0.113.5\r\n", stranger, "192.0.2.7"),
        ];
        for (headers, peer, want) in cases {
            assert_eq!(
                api_client(headers, peer).1,
                ip(want),
                "{headers} from {peer}"
            );
        }
        // A trusted proxy connected over a dual-stack socket.
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert_eq!(
            api_client("X-Forwarded-For: 203.0.113.5\r\n", mapped).1,
            ip("203.0.113.5")
        );
        assert_eq!(
            api_client("", IpAddr::V6(Ipv6Addr::LOCALHOST)).1,
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
    }

    #[test]
    fn chat_tokens_from_header_cookie_or_query() {
        for (headers, target) in [
            ("Authorization: Bearer abc\r\n", "/chat"),
            ("Cookie: theme=dark; fastim_token=abc\r\n", "/chat"),
            ("", "/chat?id=7&token=abc"),
        ] {
            match routed(headers, target) {
                Routed::Authenticate { token, .. } => assert_eq!(token, "abc"),
                other => panic!("{headers}{target}: {other:?}"),
            }
        }
        assert!(matches!(
            routed("", "/chat?id=7&token=abc"),
            Routed::Authenticate {
                claimed_user: Some(7),
                ..
            }
        ));
        assert_eq!(status(&routed("", "/chat")).as_deref(), Some("401"));
        assert_eq!(
            status(&routed("", "/chat?id=7&token=")).as_deref(),
            Some("401")
        );
        assert_eq!(
            status(&routed("", "/chat?id=x&token=abc")).as_deref(),
            Some("400")
        );
    }

    #[test]
    fn foreign_origins_are_refused() {
        let token = "Cookie: fastim_token=abc\r\n";
        let same = format!("{token}Origin: http://chat.example:8080\r\n");
        assert!(matches!(
            routed(&same, "/chat"),
            Routed::Authenticate { .. }
        ));
        let foreign = format!("{token}Origin: http://evil.example\r\n");
        assert_eq!(status(&routed(&foreign, "/chat")).as_deref(), Some("403"));
        assert_eq!(status(&routed("", "/nowhere")).as_deref(), Some("404"));
        assert!(matches!(
            routed("Origin: http://evil.example\r\n", "/echo"),
            Routed::Upgrade { .. }
        ));
    }

    fn routed_raw(req: &str) -> Routed {
        let head = parse_head(req.as_bytes(), 8192)
            .expect("valid")
            .expect("complete");
        route(&head, &Config::default(), PEER)
    }

    /// Status and `msg` of a refusal that closes the connection.
    fn refusal(r: &Routed) -> Option<(u16, String)> {
        let Routed::Refuse(r) = r else {
            return None;
        };
        let bytes = r.to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).expect("a JSON envelope");
        let code = json["code"].as_u64().expect("code") as u16;
        assert_eq!(head[9..12].parse::<u16>().ok(), Some(code), "{text}");
        Some((code, json["msg"].as_str().expect("msg").to_owned()))
    }

    const UPGRADE: &str = "Host: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    const FORM: &str = "Content-Type: application/x-www-form-urlencoded\r\n";
    const MULTIPART: &str =
        "Cookie: fastim_token=abc\r\nContent-Type: multipart/form-data; boundary=b\r\n";

    #[test]
    fn framing_is_refused_on_every_route() {
        const TE: &str = "send the body with a Content-Length";
        const INVALID: &str = "invalid Content-Length";
        const CONFLICT: &str = "conflicting Content-Length values";
        const NO_BODY: &str = "this route takes no request body";
        const CHUNKED: &str = "Transfer-Encoding: chunked";
        // (request line, headers, last headers, status, msg); one row a line.
        #[rustfmt::skip]
        let cases = [
            // Transfer-Encoding, on any route, before any route's own checks.
            ("GET /", "", CHUNKED, 411, TE),
            ("HEAD /resource/x.png", "", CHUNKED, 411, TE),
            ("GET /echo", UPGRADE, CHUNKED, 411, TE),
            ("GET /chat?token=abc", UPGRADE, CHUNKED, 411, TE),
            ("POST /user/login", FORM, CHUNKED, 411, TE),
            ("POST /user/login", FORM, "Content-Length: 5\r\nTransfer-Encoding: chunked", 411, TE),
            ("PUT /user/login", "", CHUNKED, 411, TE),
            ("POST /attach/upload", MULTIPART, CHUNKED, 411, TE),
            // Content-Length values that are not one number.
            ("POST /user/login", FORM, "Content-Length: +2", 400, INVALID),
            ("POST /user/login", FORM, "Content-Length: 1 2", 400, INVALID),
            ("POST /user/login", FORM, "Content-Length: 5, 6", 400, CONFLICT),
            ("POST /user/login", FORM, "Content-Length: 5\r\nContent-Length: 6", 400, CONFLICT),
            ("POST /attach/upload", MULTIPART, "Content-Length: 5\r\nContent-Length: 50", 400, CONFLICT),
            ("GET /", "", "Content-Length: -1", 400, INVALID),
            // A body to a route that takes none.
            ("GET /", "Host: a\r\n", "Content-Length: 20", 400, NO_BODY),
            ("HEAD /index.html", "", "Content-Length: 1", 400, NO_BODY),
            ("GET /nowhere", "", "Content-Length: 5", 400, NO_BODY),
            ("GET /resource/x.png", "", "Content-Length: 5", 400, NO_BODY),
            ("GET /echo", UPGRADE, "Content-Length: 5", 400, NO_BODY),
            ("GET /chat?token=abc", UPGRADE, "Content-Length: 5", 400, NO_BODY),
            // What was refused before still is, for the same reason.
            ("POST /index.html", "", "Content-Length: 5", 405, "use GET, HEAD"),
            ("POST /user/login", FORM, "Content-Length: 100000", 413, "the request body is larger than 64 KiB"),
        ];
        for (line, headers, last, code, msg) in cases {
            let req = format!("{line} HTTP/1.1\r\n{headers}{last}\r\n\r\n");
            assert_eq!(
                refusal(&routed_raw(&req)),
                Some((code, msg.to_owned())),
                "{req}"
            );
        }
    }

    #[test]
    fn an_upload_without_a_token_is_anonymous_with_the_small_limit_and_its_client() {
        let upload = |headers: &str, length: usize, peer: IpAddr| {
            let req = format!(
                "POST /attach/upload HTTP/1.1\r\nHost: a\r\n\
                 Content-Type: multipart/form-data; boundary=b\r\n{headers}Content-Length: {length}\r\n\r\n"
            );
            let head = parse_head(req.as_bytes(), 8192)
                .expect("valid")
                .expect("complete");
            let config = Config {
                trusted_proxies: vec![PEER],
                ..Config::default()
            };
            route(&head, &config, peer)
        };
        let small = 1000;
        let limit = api::ANONYMOUS_UPLOAD_MAX + config::UPLOAD_FRAMING;
        for headers in [
            "",
            "Cookie: fastim_token=\r\n",
            "Authorization: Bearer \r\n",
        ] {
            match upload(headers, limit, PEER) {
                Routed::Upload {
                    token: None,
                    content_length,
                    ..
                } => assert_eq!(content_length, limit),
                other => panic!("{headers:?}: {other:?}"),
            }
            assert_eq!(
                refusal(&upload(headers, limit + 1, PEER)).map(|(code, _)| code),
                Some(413),
                "{headers:?}"
            );
        }
        // With a token, the server's limit.
        assert!(matches!(
            upload("Cookie: fastim_token=abc\r\n", limit + 1, PEER),
            Routed::Upload { token: Some(t), .. } if t == "abc"
        ));
        // The throttle's address: the peer, or the client a trusted proxy names.
        let stranger = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        for (headers, peer, want) in [
            ("", stranger, stranger),
            ("X-Forwarded-For: 192.0.2.9\r\n", stranger, stranger),
            (
                "X-Forwarded-For: 192.0.2.9\r\n",
                PEER,
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
            ),
        ] {
            match upload(headers, small, peer) {
                Routed::Upload { client, .. } => assert_eq!(client, want, "{headers}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn consistent_framing_is_routed_as_before() {
        for lengths in [
            "Content-Length: 5\r\n",
            "Content-Length: 5, 5\r\nContent-Length: 5\r\n",
        ] {
            let req = format!("POST /user/login HTTP/1.1\r\n{FORM}{lengths}\r\n");
            assert!(
                matches!(
                    routed_raw(&req),
                    Routed::Api {
                        content_length: 5,
                        ..
                    }
                ),
                "{req}"
            );
        }
        // No body, declared or not, on files and upgrades.
        for req in [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".to_owned(),
            "GET /nowhere HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_owned(),
        ] {
            assert!(
                matches!(
                    routed_raw(&req),
                    Routed::Reply {
                        keep_alive: true,
                        ..
                    } | Routed::Refuse(Refusal {
                        keep_alive: true,
                        ..
                    })
                ),
                "{req}"
            );
        }
        let req = format!("GET /echo HTTP/1.1\r\n{UPGRADE}Content-Length: 0\r\n\r\n");
        assert!(matches!(routed_raw(&req), Routed::Upgrade { .. }), "{req}");
    }
}

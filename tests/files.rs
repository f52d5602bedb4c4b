//! The web client's files and uploaded pictures, without a browser: path escapes,
//! HEAD, conditional requests, upload limits, type sniffing, dedup, uploads without a
//! session (fastIM's register page) and their removal a day later unless adopted.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{Http, Server, read_response};

/// A valid 1 x 1 PNG (uploads are decoded: a picture must be whole, CRCs and all).
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\xdac\xf8\xcf\xc0\xf0\x1f\0\x05\0\x01\xffV\xc7/\r\0\0\0\0IEND\xaeB`\x82";

fn logged_in(server: &Server) -> Http {
    let mut http = Http::new(server.addr);
    let r = http
        .form(
            "/user/register",
            "mobile=13900000001&passwd=secret-1&nickname=up",
        )
        .json();
    assert_eq!(r["code"], 0, "{r}");
    http
}

fn multipart(file_name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----fastimTestBoundary7MA4YWxk";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"userid\"\r\n\r\n1\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn upload(http: &mut Http, file_name: &str, bytes: &[u8]) -> common::Response {
    let (content_type, body) = multipart(file_name, bytes);
    http.request(
        "POST",
        "/attach/upload",
        &[("Content-Type", &content_type)],
        &body,
    )
}

fn resource_files(server: &Server) -> Vec<String> {
    let dir = server.data_dir.join("resource");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn start() -> Server {
    let dir = common::fresh_data_dir();
    let resources = dir.join("resource");
    let resources = resources.to_str().expect("utf-8 path").to_owned();
    Server::start_in(
        dir,
        &["--resource-dir", &resources, "--max-upload-mib", "1"],
    )
}

#[test]
fn uploads_are_checked_stored_once_and_served_safely() {
    let server = start();
    let mut http = logged_in(&server);

    let first = upload(&mut http, "../../evil/../photo.png", PNG);
    assert_eq!(first.status, 200);
    let url = first.json()["data"].as_str().expect("url").to_owned();
    assert!(
        url.starts_with("/resource/")
            && url.ends_with(".png")
            && url.len() == "/resource/".len() + 64 + 4,
        "{url}"
    );
    // The same picture again, under another name: one file, one URL.
    let again = upload(&mut http, "copy.jpg", PNG).json();
    assert_eq!(again["data"].as_str(), Some(url.as_str()));
    assert_eq!(
        resource_files(&server),
        [url.trim_start_matches("/resource/")]
    );

    // Served with its type, nosniff, long caching, HEAD and 304.
    let r = http.request("GET", &url, &[], b"");
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("image/png"))
    );
    assert_eq!(r.body, PNG);
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(
        r.header("cache-control")
            .is_some_and(|c| c.contains("immutable"))
    );
    let etag = r.header("etag").expect("etag").to_owned();
    let head = http.request("HEAD", &url, &[], b"");
    assert_eq!((head.status, head.body.len()), (200, 0));
    let not_modified = http.request("GET", &url, &[("If-None-Match", &etag)], b"");
    assert_eq!(not_modified.status, 304);

    // Not an image, whatever its name says.
    let html = upload(
        &mut http,
        "cat.png",
        b"<html><script>alert(1)</script></html>",
    );
    assert_eq!(
        (html.status, html.json()["code"].as_i64()),
        (415, Some(415))
    );
    let svg = upload(
        &mut http,
        "cat.svg",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    );
    assert_eq!(svg.status, 415);
    // Over the limit (1 MiB here): refused by the worker, or by the loop from the header alone.
    let mut big = PNG.to_vec();
    big.resize((1 << 20) + 1, 0);
    let r = upload(&mut http, "big.png", &big);
    assert_eq!((r.status, r.json()["code"].as_i64()), (413, Some(413)));
    let mut raw = TcpStream::connect(server.addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let cookie = http.cookie.clone().expect("cookie");
    raw.write_all(format!("POST /attach/upload HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 50000000\r\n\r\n").as_bytes()).expect("send");
    assert_eq!(read_response(&mut raw).status, 413);
    assert_eq!(resource_files(&server).len(), 1, "nothing else was stored");

    // A session that is not valid, no upload (without one it is an anonymous upload,
    // below); not multipart, no upload.
    let (content_type, body) = multipart("a.png", PNG);
    let r = Http::new(server.addr).request(
        "POST",
        "/attach/upload",
        &[
            ("Content-Type", &content_type),
            ("Authorization", "Bearer not-a-session"),
        ],
        &body,
    );
    assert_eq!(r.status, 401);
    let r = http.request(
        "POST",
        "/attach/upload",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 400);
    let r = http.request("GET", "/attach/upload", &[], b"");
    assert_eq!(r.status, 405);
}

#[test]
fn paths_cannot_escape_and_the_client_is_served() {
    let server = start();
    let mut http = Http::new(server.addr);
    for path in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/%2E%2E%2FCargo.toml",
        "/resource/../Cargo.toml",
        "/resource/%2e%2e%2fCargo.toml",
        "//etc/passwd",
        "/index.html%00.png",
        "/..%5cCargo.toml",
    ] {
        let r = http.request("GET", path, &[], b"");
        assert!(matches!(r.status, 400 | 404), "{path}: {}", r.status);
        assert!(
            !String::from_utf8_lossy(&r.body).contains("[package]"),
            "{path} leaked a file"
        );
    }
    assert_eq!(
        http.request("GET", "/resource/0000.png", &[], b"").status,
        404
    );
    let missing = format!("/resource/{}.png", "0".repeat(64));
    assert_eq!(http.request("GET", &missing, &[], b"").status, 404);

    let index = http.request("GET", "/", &[], b"");
    assert_eq!(
        (index.status, index.header("content-type")),
        (200, Some("text/html; charset=utf-8"))
    );
    assert!(
        String::from_utf8_lossy(&index.body).contains("<html"),
        "the web client's page"
    );
    let etag = index.header("etag").expect("etag").to_owned();
    assert_eq!(
        http.request("GET", "/", &[("If-None-Match", &etag)], b"")
            .status,
        304
    );
    // No other site may frame the client (clickjacking); the rest of the policy stays.
    assert_eq!(
        index.header("x-frame-options"),
        Some("DENY"),
        "{}",
        index.head
    );
    let csp = index
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("a CSP header: {}", index.head));
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for d in [
        "frame-ancestors 'none'",
        "default-src 'self'",
        "script-src 'self'",
        "worker-src 'self'",
        "object-src 'none'",
    ] {
        assert!(directives.contains(&d), "{d} in {csp}");
    }
    // The service worker: JavaScript (browsers register nothing else), revalidated on each
    // load so that a new version of the client replaces it.
    let sw = http.request("GET", "/sw.js", &[], b"");
    assert_eq!(sw.status, 200);
    assert_eq!(
        sw.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(sw.header("cache-control"), Some("no-cache"), "{}", sw.head);
    let script = http.request("GET", "/app.js", &[], b"");
    assert_eq!(script.status, 200);
    assert_eq!(script.header("x-frame-options"), None, "only pages need it");
    let head = http.request("HEAD", "/index.html", &[], b"");
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(
        head.header("content-length").map(str::to_owned),
        Some(index.body.len().to_string())
    );
    assert_eq!(http.request("POST", "/index.html", &[], b"").status, 405);
}

/// Pages read from `--static-dir` (on a worker, not from the binary) get the same
/// anti-framing headers as the embedded ones.
#[test]
fn pages_from_a_static_dir_cannot_be_framed_either() {
    let dir = common::fresh_data_dir();
    let site = dir.join("site");
    std::fs::create_dir_all(&site).expect("site dir");
    std::fs::write(site.join("index.html"), "<!doctype html><p>local</p>").expect("page");
    std::fs::write(site.join("a.txt"), "text").expect("text");
    let site = site.to_str().expect("utf-8 path").to_owned();
    let server = Server::start_in(dir, &["--static-dir", &site]);
    let mut http = Http::new(server.addr);
    let page = http.request("GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("local"));
    assert_eq!(
        page.header("x-frame-options"),
        Some("DENY"),
        "{}",
        page.head
    );
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.ends_with("; frame-ancestors 'none'")),
        "{}",
        page.head
    );
    let text = http.request("GET", "/a.txt", &[], b"");
    assert_eq!(text.status, 200);
    assert_eq!(text.header("x-frame-options"), None);
}

/// A `HEAD` that is refused gets the same head as a `GET`, without the body: on a
/// kept-alive connection the next answer must not be read out of a stray body.
#[test]
fn a_refused_head_has_no_body_and_the_connection_goes_on() {
    let server = start();
    let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    for path in ["/resource/nope.png", "/no-such-file.js"] {
        let req = format!(
            "HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /emoji.js HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        std::io::Write::write_all(&mut stream, req.as_bytes()).expect("send");
        let head = common::read_response_to(&mut stream, true);
        assert_eq!(head.status, 404, "{path}");
        assert!(head.header("content-length").is_some_and(|n| n != "0"));
        let next = common::read_response(&mut stream);
        assert_eq!(next.status, 200, "the answer after HEAD {path}");
        assert!(!next.body.is_empty(), "the file itself");
    }
}

/// A valid PNG of `width` x `height` in one colour: over 320 px a side it gets a
/// thumbnail file of its own.
fn png(width: u32, height: u32, shade: u8) -> Vec<u8> {
    let picture = image::RgbImage::from_pixel(width, height, image::Rgb([shade, 90, 200]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(picture)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encode");
    out
}

/// The file name a `/resource/…` URL names.
fn name(url: &str) -> String {
    url.trim_start_matches("/resource/").to_owned()
}

#[test]
fn uploads_without_a_session_are_small_pictures_at_a_limited_rate() {
    let server = Server::start(&[]);
    let mut anon = Http::new(server.addr);

    // Stored and served, with the reply of any upload.
    let r = upload(&mut anon, "avatar.png", PNG);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let reply = r.json();
    assert_eq!(
        (reply["code"].as_i64(), reply["msg"].as_str()),
        (Some(0), Some(""))
    );
    let url = reply["data"].as_str().expect("url").to_owned();
    assert!(
        url.starts_with("/resource/") && url.ends_with(".png"),
        "{url}"
    );
    assert_eq!(
        reply["thumb"].as_str(),
        Some(url.as_str()),
        "a 1 x 1 picture is its own thumbnail"
    );
    assert_eq!(
        (reply["thumbwidth"].as_u64(), reply["thumbheight"].as_u64()),
        (Some(1), Some(1))
    );
    let served = anon.request("GET", &url, &[], b"");
    assert_eq!((served.status, served.body.as_slice()), (200, PNG));

    // A declared body over 1 MiB (plus the multipart framing) is refused from the head
    // alone: nothing of the body is sent here, and the answer comes.
    let mut raw = TcpStream::connect(server.addr).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let length = (1 << 20) + 64 * 1024 + 1;
    raw.write_all(format!("POST /attach/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n\r\n").as_bytes()).expect("send");
    let r = read_response(&mut raw);
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json()["msg"],
        "without a session a picture may be at most 1 MiB; log in to upload up to 10 MiB"
    );
    // A picture over 1 MiB in a body within the framing: refused by the worker.
    let mut big = PNG.to_vec();
    big.resize((1 << 20) + 1, 0);
    let r = upload(&mut anon, "big.png", &big);
    assert_eq!((r.status, r.json()["code"].as_i64()), (413, Some(413)));
    assert!(
        r.json()["msg"]
            .as_str()
            .is_some_and(|m| m.contains("1 MiB") && m.contains("log in")),
        "{}",
        r.json()
    );
    // Pictures only, as for every upload.
    let r = upload(
        &mut anon,
        "x.png",
        b"<html><script>alert(1)</script></html>",
    );
    assert_eq!((r.status, r.json()["code"].as_i64()), (415, Some(415)));
    assert_eq!(
        resource_files(&server),
        [name(&url)],
        "nothing else was stored"
    );

    // 5 at once from one address (the head refused above cost nothing): two more pass,
    // the next waits for the sustained rate of 20 an hour.
    for shade in [1, 2] {
        assert_eq!(upload(&mut anon, "a.png", &png(2, 2, shade)).status, 200);
    }
    let r = upload(&mut anon, "a.png", &png(2, 2, 3));
    assert_eq!((r.status, r.json()["code"].as_i64()), (429, Some(429)));
    let wait: u64 = r
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((170..=180).contains(&wait), "{wait}");
    assert_eq!(
        resource_files(&server).len(),
        3,
        "the refused one was not stored"
    );
    // The limit is on uploads without a session: an account uploads on.
    let mut user = logged_in(&server);
    assert_eq!(upload(&mut user, "a.png", &png(2, 2, 3)).status, 200);
}

/// Counts the anonymous upload rows in the server's database (stopped), and makes
/// those of `names` a day and an hour older.
fn age_anonymous_uploads(data_dir: &std::path::Path, names: &[&str]) -> i64 {
    let db = rusqlite::Connection::open(data_dir.join("fastim.db")).expect("open the database");
    for name in names {
        let n = db
            .execute(
                "UPDATE anonymous_uploads SET uploaded_at = uploaded_at - 25 * 3600 * 1000 WHERE name = ?1",
                [name],
            )
            .expect("age a row");
        assert_eq!(n, 1, "{name} is recorded");
    }
    db.query_row("SELECT count(*) FROM anonymous_uploads", [], |r| r.get(0))
        .expect("count")
}

#[test]
fn anonymous_uploads_an_account_takes_stay_and_the_others_go_after_a_day() {
    let dir = common::fresh_data_dir();
    // Six uploads without a session from one address: the limit is off (as it is for
    // registrations with it).
    let unlimited = ["--register-per-hour", "0"];
    let mut server = Server::start_in(dir.clone(), &unlimited);
    let mut anon = Http::new(server.addr);
    let up = |http: &mut Http, shade: u8| {
        let r = upload(http, "p.png", &png(400, 300, shade)).json();
        assert_eq!(r["code"], 0, "{r}");
        let (data, thumb) = (
            r["data"].as_str().expect("data"),
            r["thumb"].as_str().expect("thumb"),
        );
        assert_ne!(data, thumb, "a 400 x 300 picture has a thumbnail file");
        (name(data), name(thumb))
    };
    // fastIM's register page: the avatar first, then the account with its URL.
    let avatar = up(&mut anon, 10);
    let r = anon
        .form(
            "/user/register",
            &format!(
                "mobile=13900000011&passwd=secret-1&nickname=a&avatar=/resource/{}",
                avatar.0
            ),
        )
        .json();
    assert_eq!(r["code"], 0, "{r}");
    // An account that sets an anonymous upload as its avatar later.
    let later = up(&mut Http::new(server.addr), 20);
    let mut user = logged_in(&server);
    let r = user
        .form("/user/update", &format!("avatar=/resource/{}", later.0))
        .json();
    assert_eq!(r["code"], 0, "{r}");
    // The same picture uploaded anonymously and with a session, in both orders.
    let shared = up(&mut Http::new(server.addr), 30);
    assert_eq!(up(&mut user, 30), shared);
    let owned = up(&mut user, 40);
    assert_eq!(up(&mut Http::new(server.addr), 40), owned);
    // Taken by nobody: one a day old, one recent.
    let orphan = up(&mut Http::new(server.addr), 50);
    let recent = up(&mut Http::new(server.addr), 60);
    let all = [&avatar, &later, &shared, &owned, &orphan, &recent];
    let files = |server: &Server| resource_files(server);
    for pair in all {
        assert!(files(&server).contains(&pair.0) && files(&server).contains(&pair.1));
    }

    // Stopped, the orphan's rows are aged by a day; only it and the recent one have rows.
    server.keep_data = true;
    assert!(server.terminate().is_some_and(|s| s.success()));
    drop(server);
    let rows = age_anonymous_uploads(&dir, &[&orphan.0, &orphan.1]);
    assert_eq!(
        rows, 4,
        "the orphan's and the recent one's picture and thumbnail"
    );

    // The sweep runs at start, off the loop, and logs what it removed.
    let server = Server::start_in(dir, &[]);
    server
        .log
        .wait_for("removed 2 files uploaded without a session");
    let left = files(&server);
    for pair in [&avatar, &later, &shared, &owned, &recent] {
        assert!(
            left.contains(&pair.0) && left.contains(&pair.1),
            "{pair:?} stays: {left:?}"
        );
    }
    assert!(
        !left.contains(&orphan.0) && !left.contains(&orphan.1),
        "{left:?}"
    );
    let mut http = Http::new(server.addr);
    let gone = http.request("GET", &format!("/resource/{}", orphan.0), &[], b"");
    assert_eq!(gone.status, 404);
    let kept = http.request("GET", &format!("/resource/{}", avatar.0), &[], b"");
    assert_eq!(kept.status, 200);
    // The account's avatar is the file kept.
    let mut again = Http::new(server.addr);
    let me = again
        .form("/user/login", "mobile=13900000011&passwd=secret-1")
        .json();
    assert_eq!(me["data"]["avatar"], format!("/resource/{}", avatar.0));
}

//! Serving files: the web client (`static/`, embedded in the binary) and uploaded
//! images. Path checking, content types, validators and the response bytes live
//! here; reading from disk happens on worker threads.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};

use crate::http::{Status, form::percent_decode, write_response, write_response_head};

/// The web client, compiled into the binary so `fastim` runs from any directory.
#[derive(RustEmbed)]
#[folder = "static/"]
struct Embedded;

/// How long a response may be cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caching {
    /// The web client: revalidate every time (the `ETag` makes that cheap).
    Revalidate,
    /// Content-addressed uploads: the name is the hash, so it never changes.
    Immutable,
}

/// A file ready to be sent.
#[derive(Debug)]
pub struct File<'a> {
    /// The bytes.
    pub body: Cow<'a, [u8]>,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Strong validator, quoted.
    pub etag: String,
    /// Cache policy.
    pub caching: Caching,
}

/// Turns a request path into a relative path below a served directory, or `None`
/// for anything that could escape it: `..` (also `%2e%2e`), absolute paths, NUL,
/// backslashes, invalid UTF-8. `/` serves `index.html`.
pub fn safe_path(raw_path: &str) -> Option<PathBuf> {
    let decoded = String::from_utf8(percent_decode(raw_path.as_bytes())).ok()?;
    if decoded.contains(['\0', '\\']) || !decoded.starts_with('/') {
        return None;
    }
    let rel = &decoded[1..];
    let rel = if rel.is_empty() || rel.ends_with('/') {
        format!("{rel}index.html")
    } else {
        rel.to_owned()
    };
    let path = PathBuf::from(rel);
    path.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(path)
}

/// An embedded web-client file.
pub fn embedded(path: &Path) -> Option<File<'static>> {
    let name = path.to_str()?;
    let file = Embedded::get(name)?;
    let etag = quoted_hex(&file.metadata.sha256_hash()[..16]);
    Some(File {
        body: file.data,
        content_type: content_type(path),
        etag,
        caching: Caching::Revalidate,
    })
}

/// A web-client file the server makes rather than embeds: `commands.js`, the chat
/// command numbers from the server's own table (`im::cmd::commands_js`), so that the
/// client and the server cannot disagree on them (also with `--static-dir`), with
/// the recall and edit windows this server was started with.
pub fn generated(path: &Path, windows: crate::store::Windows) -> Option<File<'static>> {
    if path != Path::new("commands.js") {
        return None;
    }
    let body = crate::im::cmd::commands_js(windows).into_bytes();
    Some(File {
        etag: etag_of(&body),
        body: Cow::Owned(body),
        content_type: content_type(path),
        caching: Caching::Revalidate,
    })
}

/// A file's validator from its bytes.
pub fn etag_of(bytes: &[u8]) -> String {
    quoted_hex(&Sha256::digest(bytes)[..16])
}

/// The `Content-Type` for a file name.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The `Content-Security-Policy` header of the web client's HTML pages: the policy of
/// `index.html`'s `<meta>` tag plus `frame-ancestors 'none'`, which only a header can carry
/// (browsers ignore it in a `<meta>`). With `X-Frame-Options: DENY` for older browsers, no
/// other site can frame the client to trick clicks out of a logged-in user. `worker-src
/// 'self'` is the service worker (`/sw.js`, which keeps the client's files for offline
/// starts); it is named although `script-src` would cover it, so that the policy says so.
pub const HTML_CSP: &str = "default-src 'self'; img-src 'self' blob:; connect-src 'self'; \
     script-src 'self'; worker-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The complete response for `file`: 304 if the client's `If-None-Match` matches,
/// headers only for `HEAD`. HTML pages also get [`HTML_CSP`] and `X-Frame-Options: DENY`.
pub fn response(
    file: &File<'_>,
    head_only: bool,
    if_none_match: Option<&str>,
    keep_alive: bool,
) -> Vec<u8> {
    let cache = match file.caching {
        Caching::Revalidate => "no-cache",
        Caching::Immutable => "public, max-age=31536000, immutable",
    };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut headers = vec![
        ("Content-Type", file.content_type),
        ("ETag", file.etag.as_str()),
        ("Cache-Control", cache),
        ("X-Content-Type-Options", "nosniff"),
    ];
    if is_html(file.content_type) {
        headers.push(("Content-Security-Policy", HTML_CSP));
        headers.push(("X-Frame-Options", "DENY"));
    }
    headers.push(("Connection", connection));
    let mut out = Vec::new();
    let matches = if_none_match.is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim() == file.etag || t.trim() == "*")
    });
    if matches {
        write_response_head(&mut out, Status::NotModified, &headers, None);
    } else if head_only {
        write_response_head(&mut out, Status::Ok, &headers, Some(file.body.len()));
    } else {
        write_response(&mut out, Status::Ok, &headers, &file.body);
    }
    out
}

/// Whether a `Content-Type` is an HTML document.
fn is_html(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/html"))
}

fn quoted_hex(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape() {
        assert_eq!(safe_path("/"), Some(PathBuf::from("index.html")));
        assert_eq!(safe_path("/app.js"), Some(PathBuf::from("app.js")));
        assert_eq!(
            safe_path("/views/chat.js"),
            Some(PathBuf::from("views/chat.js"))
        );
        assert_eq!(safe_path("/a%20b.png"), Some(PathBuf::from("a b.png")));
        for bad in [
            "/../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "/%2E%2E%2fsecret",
            "/a/../../b",
            "/./x",
            "//etc/passwd",
            "/x%00.html",
            "/..\\x",
            "relative",
            "/%ff",
        ] {
            assert_eq!(safe_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn conditional_and_head_responses() {
        let file = File {
            body: Cow::Borrowed(b"hello"),
            content_type: "text/plain; charset=utf-8",
            etag: etag_of(b"hello"),
            caching: Caching::Immutable,
        };
        let full = String::from_utf8(response(&file, false, None, true)).expect("ascii");
        assert!(
            full.starts_with("HTTP/1.1 200 OK\r\n") && full.ends_with("\r\n\r\nhello"),
            "{full}"
        );
        assert!(full.contains("X-Content-Type-Options: nosniff\r\n") && full.contains("immutable"));
        let head = String::from_utf8(response(&file, true, None, true)).expect("ascii");
        assert!(
            head.contains("Content-Length: 5\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let etag = file.etag.clone();
        let not_modified =
            String::from_utf8(response(&file, false, Some(&etag), true)).expect("ascii");
        assert!(
            not_modified.starts_with("HTTP/1.1 304 Not Modified\r\n")
                && not_modified.ends_with("\r\n\r\n"),
            "{not_modified}"
        );
        assert!(!not_modified.contains("Content-Length"));
        assert!(
            !full.contains("X-Frame-Options") && !full.contains("Content-Security-Policy"),
            "only HTML pages need them: {full}"
        );
    }

    #[test]
    fn html_pages_cannot_be_framed() {
        let file = embedded(Path::new("index.html")).expect("index.html is embedded");
        for (head_only, if_none_match) in [(false, None), (true, None), (false, Some(&file.etag))] {
            let r = String::from_utf8(response(
                &file,
                head_only,
                if_none_match.map(String::as_str),
                true,
            ))
            .expect("utf-8");
            assert!(r.contains("\r\nX-Frame-Options: DENY\r\n"), "{r}");
            assert!(
                r.contains(&format!("\r\nContent-Security-Policy: {HTML_CSP}\r\n")),
                "{r}"
            );
        }
        assert!(HTML_CSP.ends_with("; frame-ancestors 'none'"));
        assert!(is_html("Text/HTML"));
        assert!(!is_html("text/html-sandboxed"));
    }

    /// The service worker is served as JavaScript (browsers refuse any other type) and
    /// revalidated on every load (`no-cache`, never `immutable`), so a new client version
    /// replaces the worker, which then refreshes the files it keeps.
    #[test]
    fn the_service_worker_is_javascript_that_can_update() {
        let file = embedded(Path::new("sw.js")).expect("sw.js is embedded");
        assert_eq!(file.content_type, "text/javascript; charset=utf-8");
        assert_eq!(file.caching, Caching::Revalidate);
        let r = String::from_utf8(response(&file, true, None, true)).expect("utf-8");
        assert!(r.contains("\r\nCache-Control: no-cache\r\n"), "{r}");
        assert!(HTML_CSP.contains("worker-src 'self'"));
        // Every file it keeps for offline starts exists (a missing one fails its install).
        let sw = String::from_utf8(file.body.into_owned()).expect("utf-8");
        let list = sw
            .split("const SHELL = [")
            .nth(1)
            .and_then(|rest| rest.split("];").next())
            .expect("sw.js has a SHELL list");
        for path in list.split(',').map(|p| p.trim().trim_matches('\'')) {
            if path.is_empty() {
                continue;
            }
            let rel = safe_path(path).expect("a plain path");
            let windows = crate::store::Windows {
                recall_ms: 120_000,
                edit_ms: 900_000,
            };
            assert!(
                embedded(&rel).is_some() || generated(&rel, windows).is_some(),
                "sw.js keeps {path}, which is not served"
            );
        }
        // And it keeps every module of the client: one missing fails the offline start
        // (its import does), whatever else is kept.
        let kept: Vec<&str> = list
            .split(',')
            .map(|p| p.trim().trim_matches('\''))
            .collect();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        for dir in ["", "views"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("static/") {
                let name = entry.expect("entry").file_name();
                let name = name.to_string_lossy();
                if !name.ends_with(".js") || name == "sw.js" {
                    continue;
                }
                let path = if dir.is_empty() {
                    format!("/{name}")
                } else {
                    format!("/{dir}/{name}")
                };
                assert!(kept.contains(&path.as_str()), "sw.js does not keep {path}");
            }
        }
    }

    /// The header repeats the page's `<meta>` policy, so the two never disagree (a browser
    /// enforces both); only `frame-ancestors` is the header's own.
    #[test]
    fn the_header_policy_is_the_pages_policy_plus_frame_ancestors() {
        let file = embedded(Path::new("index.html")).expect("index.html is embedded");
        let page = String::from_utf8(file.body.into_owned()).expect("utf-8");
        let meta = page
            .split("http-equiv=\"Content-Security-Policy\"")
            .nth(1)
            .and_then(|rest| rest.split("content=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .expect("index.html has a CSP meta tag");
        assert_eq!(format!("{meta}; frame-ancestors 'none'"), HTML_CSP);
    }
}

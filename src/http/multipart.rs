//! Finding one field in a `multipart/form-data` body (RFC 7578), in memory.
//!
//! Browsers send an upload as parts separated by `--boundary` lines, each part with
//! its own headers. Only what an upload needs is read: the part's `name`, and its
//! bytes; the client's file name is never used.

/// Why a multipart body is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultipartError {
    /// `Content-Type` is not `multipart/form-data` with a boundary.
    NotMultipart,
    /// The body does not follow the boundary structure.
    Malformed,
}

/// The boundary of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Result<&str, MultipartError> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(MultipartError::NotMultipart);
    }
    params
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or(MultipartError::NotMultipart)
}

/// The bytes of the first part named `name`, or `None` if there is none.
pub fn find_part<'a>(
    body: &'a [u8],
    boundary: &str,
    name: &str,
) -> Result<Option<&'a [u8]>, MultipartError> {
    let delimiter = [b"--", boundary.as_bytes()].concat();
    let mut rest = match find(body, &delimiter) {
        Some(i) => &body[i + delimiter.len()..],
        None => return Err(MultipartError::Malformed),
    };
    // Each part follows "\r\n" after a delimiter; "--" after one ends the body.
    let next_delimiter = [b"\r\n--", boundary.as_bytes()].concat();
    loop {
        if rest.starts_with(b"--") {
            return Ok(None);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or(MultipartError::Malformed)?;
        let head_end = find(rest, b"\r\n\r\n").ok_or(MultipartError::Malformed)?;
        let headers = &rest[..head_end];
        let content = &rest[head_end + 4..];
        let end = find(content, &next_delimiter).ok_or(MultipartError::Malformed)?;
        if part_name(headers).as_deref() == Some(name) {
            return Ok(Some(&content[..end]));
        }
        rest = &content[end + next_delimiter.len()..];
    }
}

/// The `name` parameter of a part's `Content-Disposition: form-data` header.
fn part_name(headers: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(headers);
    let disposition = text.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then(|| v.to_owned())
    })?;
    disposition.split(';').find_map(|param| {
        let (k, v) = param.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("name")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW";

    fn body(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let b = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
        let mut out = Vec::new();
        for (name, data) in parts {
            out.extend_from_slice(format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"../../etc/passwd\"\r\nContent-Type: image/png\r\n\r\n").as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        out
    }

    #[test]
    fn finds_the_named_part_with_binary_content() {
        let b = boundary(CT).expect("boundary");
        let data = b"\x89PNG\r\n\x1a\n\r\n--not-the-boundary\r\n";
        let body = body(&[("userid", b"7"), ("file", data)]);
        assert_eq!(find_part(&body, b, "file"), Ok(Some(&data[..])));
        assert_eq!(find_part(&body, b, "userid"), Ok(Some(&b"7"[..])));
        assert_eq!(find_part(&body, b, "missing"), Ok(None));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            boundary("application/json"),
            Err(MultipartError::NotMultipart)
        );
        assert_eq!(
            boundary("multipart/form-data"),
            Err(MultipartError::NotMultipart)
        );
        assert_eq!(boundary("Multipart/Form-Data; boundary=\"abc\""), Ok("abc"));
        assert_eq!(
            find_part(b"garbage", "abc", "file"),
            Err(MultipartError::Malformed)
        );
        let truncated = &body(&[("file", b"data")])[..60];
        assert_eq!(
            find_part(truncated, "----WebKitFormBoundary7MA4YWxkTrZu0gW", "file"),
            Err(MultipartError::Malformed)
        );
    }
}

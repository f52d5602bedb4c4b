//! Uploaded images, stored by content: `resource/<sha256>.<ext>`.
//!
//! The name is the SHA-256 of the bytes, so the same picture uploaded twice is stored
//! once and gets the same URL, and a URL can be cached forever. The type comes from
//! the file's first bytes, never from the client's file name or declared type
//! (fastIM stored whatever extension the client named, FASTIM.md §1.9 item 8).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// The image types accepted for upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// GIF (87a or 89a).
    Gif,
    /// WebP.
    Webp,
}

impl ImageKind {
    /// Recognises an image by its magic bytes.
    pub fn sniff(bytes: &[u8]) -> Option<ImageKind> {
        match bytes {
            [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, ..] => Some(ImageKind::Png),
            [0xff, 0xd8, 0xff, ..] => Some(ImageKind::Jpeg),
            [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => Some(ImageKind::Gif),
            [
                b'R',
                b'I',
                b'F',
                b'F',
                _,
                _,
                _,
                _,
                b'W',
                b'E',
                b'B',
                b'P',
                ..,
            ] => Some(ImageKind::Webp),
            _ => None,
        }
    }

    /// The file extension.
    pub fn ext(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
            ImageKind::Gif => "gif",
            ImageKind::Webp => "webp",
        }
    }

    /// The `Content-Type` to serve it with.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Gif => "image/gif",
            ImageKind::Webp => "image/webp",
        }
    }

    fn from_ext(ext: &str) -> Option<ImageKind> {
        [
            ImageKind::Png,
            ImageKind::Jpeg,
            ImageKind::Gif,
            ImageKind::Webp,
        ]
        .into_iter()
        .find(|k| k.ext() == ext)
    }
}

/// Checks a resource file name: 64 lowercase hex digits, a dot, a known extension.
/// Anything else (`..`, slashes, NUL, other names) is not a resource.
pub fn parse_name(name: &str) -> Option<ImageKind> {
    let (hash, ext) = name.split_once('.')?;
    let hex = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex { ImageKind::from_ext(ext) } else { None }
}

/// The directory of uploaded images.
#[derive(Clone, Debug)]
pub struct ResourceDir {
    dir: PathBuf,
}

impl ResourceDir {
    /// The store in `dir`, created if missing.
    pub fn open(dir: &Path) -> io::Result<ResourceDir> {
        fs::create_dir_all(dir)?;
        Ok(ResourceDir {
            dir: dir.to_owned(),
        })
    }

    /// Where a (checked) resource name lives.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        parse_name(name).map(|_| self.dir.join(name))
    }

    /// Stores an image and returns its file name; an identical image already there
    /// is reused. Writes to a temporary file first and renames it, so a reader never
    /// sees half a file.
    pub fn save(&self, kind: ImageKind, bytes: &[u8]) -> io::Result<String> {
        let name = name_of(kind, bytes);
        self.save_as(&name, bytes)?;
        Ok(name)
    }

    /// [`save`](Self::save) under `name`, which the caller got from [`name_of`] for
    /// these bytes.
    pub fn save_as(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.dir.join(name);
        if path.exists() {
            return Ok(());
        }
        let hash = name.split_once('.').map_or(name, |(hash, _)| hash);
        // Unique per save, not only per process: two workers storing the same picture at
        // once must not write into, or clean up, each other's temporary file.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{hash}.{}.{}.tmp",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        write_then_rename(&tmp, &path, bytes)
    }

    /// Whether a file of this (checked) name is stored.
    pub fn exists(&self, name: &str) -> bool {
        self.path(name).is_some_and(|p| p.exists())
    }

    /// Removes a stored file; one that is not there is no error.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let Some(path) = self.path(name) else {
            return Ok(());
        };
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The name an image is stored under: the SHA-256 of its bytes, in hex, and the
/// extension of its kind.
pub fn name_of(kind: ImageKind, bytes: &[u8]) -> String {
    let hash: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hash}.{}", kind.ext())
}

/// The resource name an avatar or picture URL points to on this server:
/// `/resource/<name>`, or the same path after `http(s)://host`.
pub fn name_in_url(url: &str) -> Option<&str> {
    let path = match url.split_once("://") {
        Some((scheme, rest)) if scheme == "http" || scheme == "https" => &rest[rest.find('/')?..],
        Some(_) => return None,
        None => url,
    };
    let name = path.strip_prefix("/resource/")?;
    parse_name(name).map(|_| name)
}

/// Writes `bytes` to `tmp`, flushes them to disk and renames `tmp` to `dest`. On any
/// error the temporary file is removed, so a failed upload leaves nothing behind.
fn write_then_rename(tmp: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(tmp)?;
    let guard = RemoveOnDrop(Some(tmp));
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, dest)?;
    guard.disarm();
    Ok(())
}

/// Removes a file when dropped (on every early return), unless disarmed.
struct RemoveOnDrop<'p>(Option<&'p Path>);

impl RemoveOnDrop<'_> {
    /// The file is where it belongs now: leave it.
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            if let Err(e) = fs::remove_file(path) {
                log::warn!("cannot remove {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_by_magic_bytes() {
        assert_eq!(
            ImageKind::sniff(b"\x89PNG\r\n\x1a\n...."),
            Some(ImageKind::Png)
        );
        assert_eq!(ImageKind::sniff(b"\xff\xd8\xff\xe0"), Some(ImageKind::Jpeg));
        assert_eq!(ImageKind::sniff(b"GIF89a.."), Some(ImageKind::Gif));
        assert_eq!(
            ImageKind::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageKind::Webp)
        );
        assert_eq!(ImageKind::sniff(b"<svg xmlns="), None);
        assert_eq!(ImageKind::sniff(b"<html>"), None);
        assert_eq!(ImageKind::sniff(b""), None);
    }

    #[test]
    fn names_are_hashes_only() {
        let hash = "a".repeat(64);
        assert_eq!(parse_name(&format!("{hash}.png")), Some(ImageKind::Png));
        for bad in [
            format!("{hash}.html"),
            format!("{}.png", "A".repeat(64)),
            "../etc/passwd".to_owned(),
            format!("../{hash}.png"),
            format!("{hash}.png\0"),
            "x.png".to_owned(),
        ] {
            assert_eq!(parse_name(&bad), None, "{bad}");
        }
    }

    #[test]
    fn urls_name_a_resource_only_in_its_exact_form() {
        let name = format!("{}.png", "b".repeat(64));
        for url in [
            format!("/resource/{name}"),
            format!("http://chat.example:8080/resource/{name}"),
            format!("https://chat.example/resource/{name}"),
        ] {
            assert_eq!(name_in_url(&url), Some(name.as_str()), "{url}");
        }
        for url in [
            format!("./resource/{name}"),
            format!("/resource/{name}?x=1"),
            format!("/resource/../resource/{name}"),
            format!("ftp://h/resource/{name}"),
            "http://h".to_owned(),
            "/resource/x.png".to_owned(),
            String::new(),
        ] {
            assert_eq!(name_in_url(&url), None, "{url}");
        }
    }

    #[test]
    fn exists_and_remove() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ResourceDir::open(dir.path()).expect("open");
        let png = b"\x89PNG\r\n\x1a\nmore";
        let name = store.save(ImageKind::Png, png).expect("save");
        assert_eq!(name, name_of(ImageKind::Png, png));
        assert!(store.exists(&name));
        store.remove(&name).expect("remove");
        assert!(!store.exists(&name));
        store
            .remove(&name)
            .expect("removing a missing file is fine");
        // Names that are not resources are never touched.
        assert!(!store.exists("../x"));
        store.remove("../x").expect("nothing to do");
    }

    #[test]
    fn same_bytes_one_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ResourceDir::open(dir.path()).expect("open");
        let png = b"\x89PNG\r\n\x1a\nrest";
        let a = store.save(ImageKind::Png, png).expect("save");
        let b = store.save(ImageKind::Png, png).expect("save again");
        assert_eq!(a, b);
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 1);
        assert_eq!(fs::read(store.path(&a).expect("path")).expect("read"), png);
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The final name is taken by a non-empty directory: rename(2) refuses to replace
        // it with a file (EISDIR), as root too.
        let dest = dir.path().join("taken.png");
        fs::create_dir(&dest).expect("dir");
        fs::write(dest.join("inside"), b"x").expect("file in dir");
        let tmp = dir.path().join(".taken.1.0.tmp");
        let err =
            write_then_rename(&tmp, &dest, b"\x89PNG\r\n\x1a\nrest").expect_err("the rename fails");
        assert_ne!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert_eq!(names_in(dir.path()), ["taken.png"], "no .tmp left");
        assert_eq!(names_in(&dest), ["inside"], "the directory is untouched");
    }

    #[cfg(unix)]
    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        // /dev/full takes the open and refuses every write (ENOSPC), as root too; the
        // temporary name is a link to it, as a full disk would behave.
        let full = Path::new("/dev/full");
        if !full.exists() {
            eprintln!("skipped: no /dev/full");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let tmp = dir.path().join(".x.1.0.tmp");
        std::os::unix::fs::symlink(full, &tmp).expect("symlink");
        let dest = dir.path().join("x.png");
        let err =
            write_then_rename(&tmp, &dest, b"\x89PNG\r\n\x1a\nrest").expect_err("the write fails");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        assert_eq!(names_in(dir.path()), Vec::<String>::new(), "nothing left");
        assert!(full.exists(), "only the link was removed");
    }

    #[test]
    fn saves_leave_no_temporary_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ResourceDir::open(dir.path()).expect("open");
        let a = store.save(ImageKind::Gif, b"GIF89a one").expect("save");
        let b = store.save(ImageKind::Gif, b"GIF89a two").expect("save");
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(names_in(dir.path()), expected);
    }
}

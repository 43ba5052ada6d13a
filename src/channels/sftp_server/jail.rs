//! The path jail: every path a partner sends is resolved here, against the
//! partner's own virtual root, into one of five locations — or refused.
//!
//! This is a pure function of two strings. It never touches the file system,
//! so no client path can reach a real directory, follow a symlink, or name
//! another partner's files: the caller maps a [`Location`] to real paths
//! (or deliveries) itself, and only for the names this function has checked.
//!
//! ```text
//! /                 Root         (list)
//! /inbox            InboxDir     (list, upload into)
//! /inbox/<name>     InboxFile    (upload)
//! /receipts         ReceiptsDir  (list)
//! /receipts/<name>  ReceiptFile  (read)
//! /outbox           OutboxDir    (list)
//! /outbox/<name>    OutboxFile   (read: collect a delivery)
//! ```
//!
//! `..` never climbs above `/` (as in a chroot: `/..` is `/`); `.` and empty
//! components (`//`) are ignored. Anything else is not found.

/// Longest accepted path, in bytes (PATH_MAX on Linux).
pub const MAX_PATH: usize = 4096;
/// Longest accepted file name, in bytes (NAME_MAX on Linux).
pub const MAX_NAME: usize = 255;

/// Where a client path leads inside a partner's virtual root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Root,
    InboxDir,
    InboxFile(String),
    ReceiptsDir,
    ReceiptFile(String),
    OutboxDir,
    OutboxFile(String),
}

impl Location {
    /// The canonical virtual path (what `realpath` answers).
    pub fn path(&self) -> String {
        match self {
            Location::Root => "/".into(),
            Location::InboxDir => "/inbox".into(),
            Location::InboxFile(n) => format!("/inbox/{n}"),
            Location::ReceiptsDir => "/receipts".into(),
            Location::ReceiptFile(n) => format!("/receipts/{n}"),
            Location::OutboxDir => "/outbox".into(),
            Location::OutboxFile(n) => format!("/outbox/{n}"),
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(
            self,
            Location::Root | Location::InboxDir | Location::ReceiptsDir | Location::OutboxDir
        )
    }
}

/// Why a path was refused. The `Display` text is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JailError {
    #[error("path contains a NUL byte")]
    Nul,
    /// russh-sftp decodes names lossily: a U+FFFD means the client sent bytes
    /// that are not UTF-8, and the name it meant cannot be stored faithfully.
    #[error("path is not valid UTF-8 (use UTF-8 file names)")]
    NotUtf8,
    #[error("path is longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("file name is longer than {MAX_NAME} bytes")]
    NameTooLong,
    #[error("file name {0:?} is not allowed (no leading '.', no control characters)")]
    BadName(String),
    #[error("no such file or directory: {0}")]
    NotFound(String),
}

/// Resolve `path` (absolute, or relative to the virtual directory `cwd`)
/// into a location inside the virtual root.
pub fn resolve(cwd: &str, path: &str) -> Result<Location, JailError> {
    for p in [cwd, path] {
        if p.contains('\0') {
            return Err(JailError::Nul);
        }
        if p.contains('\u{FFFD}') {
            return Err(JailError::NotUtf8);
        }
        if p.len() > MAX_PATH {
            return Err(JailError::TooLong);
        }
    }
    let mut parts: Vec<&str> = Vec::new();
    let joined = if path.starts_with('/') {
        [path, ""]
    } else {
        [cwd, path]
    };
    for c in joined.iter().flat_map(|s| s.split('/')) {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => {
                if name.len() > MAX_NAME {
                    return Err(JailError::NameTooLong);
                }
                parts.push(name);
            }
        }
    }
    let not_found = || JailError::NotFound(format!("/{}", parts.join("/")));
    match parts.as_slice() {
        [] => Ok(Location::Root),
        ["inbox"] => Ok(Location::InboxDir),
        ["receipts"] => Ok(Location::ReceiptsDir),
        ["outbox"] => Ok(Location::OutboxDir),
        ["inbox", name] => Ok(Location::InboxFile(check_inbox_name(name)?)),
        ["receipts", name] => Ok(Location::ReceiptFile(check_name(name)?)),
        ["outbox", name] => Ok(Location::OutboxFile(check_name(name)?)),
        _ => Err(not_found()),
    }
}

/// lftp's temporary upload names: `.in.<name>` (renamed to `<name>`).
pub const LFTP_TEMP_PREFIX: &str = ".in.";

/// A name in `/inbox`: a file name, or lftp's temporary `.in.<name>` of one.
pub fn check_inbox_name(name: &str) -> Result<String, JailError> {
    match name.strip_prefix(LFTP_TEMP_PREFIX) {
        Some(rest) if !rest.is_empty() => {
            check_name(rest).map_err(|_| JailError::BadName(name.to_string()))?;
            Ok(name.to_string())
        }
        _ => check_name(name),
    }
}

/// A file name a partner may use: no leading dot (hidden and temporary
/// files of the gateway itself), no control characters, no backslash.
pub fn check_name(name: &str) -> Result<String, JailError> {
    if name.starts_with('.') || name.chars().any(|c| c.is_control() || c == '\\') {
        return Err(JailError::BadName(name.to_string()));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Location::*;

    fn file(dir: &str, n: &str) -> Location {
        match dir {
            "inbox" => InboxFile(n.into()),
            "outbox" => OutboxFile(n.into()),
            _ => ReceiptFile(n.into()),
        }
    }

    #[test]
    fn table() {
        let long = "a".repeat(256);
        let long_ok = "a".repeat(255);
        let very_long = format!("/inbox/{}", "x/".repeat(2100));
        let long_path = format!("/inbox/{long}");
        let long_ok_path = format!("inbox/{long_ok}");
        let cases: Vec<(&str, &str, Result<Location, JailError>)> = vec![
            ("/", "", Ok(Root)),
            ("/", ".", Ok(Root)),
            ("/", "/", Ok(Root)),
            ("/", "//", Ok(Root)),
            ("/", "..", Ok(Root)),
            ("/", "../../..", Ok(Root)),
            ("/", "/..", Ok(Root)),
            ("/", "inbox", Ok(InboxDir)),
            ("/", "/inbox/", Ok(InboxDir)),
            ("/", "//inbox//", Ok(InboxDir)),
            ("/", "./inbox/.", Ok(InboxDir)),
            ("/", "receipts", Ok(ReceiptsDir)),
            ("/", "/outbox/", Ok(OutboxDir)),
            ("/outbox", "P.dat", Ok(file("outbox", "P.dat"))),
            ("/outbox", "../inbox/a", Ok(file("inbox", "a"))),
            (
                "/",
                "/outbox/../../payco/outbox/x",
                Err(JailError::NotFound("/payco/outbox/x".into())),
            ),
            (
                "/",
                "/outbox/.part",
                Err(JailError::BadName(".part".into())),
            ),
            ("/inbox", ".", Ok(InboxDir)),
            ("/inbox", "..", Ok(Root)),
            ("/inbox", "a.dat", Ok(file("inbox", "a.dat"))),
            (
                "/inbox",
                "../receipts/a.dat.verdict",
                Ok(file("receipts", "a.dat.verdict")),
            ),
            (
                "/",
                "inbox/CSTL_031_20261121_0001.dat",
                Ok(file("inbox", "CSTL_031_20261121_0001.dat")),
            ),
            (
                "/",
                "/receipts/x.verdict",
                Ok(file("receipts", "x.verdict")),
            ),
            ("/", "inbox/../inbox/a", Ok(file("inbox", "a"))),
            ("/", "/inbox/../../../inbox/a", Ok(file("inbox", "a"))),
            ("/", "inbox/한글.dat", Ok(file("inbox", "한글.dat"))),
            ("/", "inbox/a b.dat", Ok(file("inbox", "a b.dat"))),
            ("/", &long_ok_path, Ok(file("inbox", &long_ok))),
            // Escapes and other partners' files are simply not there.
            (
                "/",
                "/etc/passwd",
                Err(JailError::NotFound("/etc/passwd".into())),
            ),
            (
                "/",
                "../../etc/passwd",
                Err(JailError::NotFound("/etc/passwd".into())),
            ),
            (
                "/inbox",
                "../../../etc/passwd",
                Err(JailError::NotFound("/etc/passwd".into())),
            ),
            (
                "/",
                "/inbox/../../bankco/inbox/x",
                Err(JailError::NotFound("/bankco/inbox/x".into())),
            ),
            ("/", "inboxes", Err(JailError::NotFound("/inboxes".into()))),
            (
                "/",
                "/inbox/a/b",
                Err(JailError::NotFound("/inbox/a/b".into())),
            ),
            (
                "/",
                "/receipts/a/../../../../root",
                Err(JailError::NotFound("/root".into())),
            ),
            ("/", "store", Err(JailError::NotFound("/store".into()))),
            // Names that are refused.
            (
                "/",
                "/inbox/.hidden",
                Err(JailError::BadName(".hidden".into())),
            ),
            (
                "/",
                "/inbox/.upload-1",
                Err(JailError::BadName(".upload-1".into())),
            ),
            (
                "/",
                "/receipts/.receipt-x.tmp",
                Err(JailError::BadName(".receipt-x.tmp".into())),
            ),
            ("/", "/inbox/a\nb", Err(JailError::BadName("a\nb".into()))),
            // lftp's temporary names.
            ("/", "/inbox/.in.a.dat", Ok(file("inbox", ".in.a.dat"))),
            ("/", "/inbox/.in.", Err(JailError::BadName(".in.".into()))),
            (
                "/",
                "/inbox/.in..hidden",
                Err(JailError::BadName(".in..hidden".into())),
            ),
            (
                "/",
                "/receipts/.in.a.dat",
                Err(JailError::BadName(".in.a.dat".into())),
            ),
            ("/", "/inbox/a\\b", Err(JailError::BadName("a\\b".into()))),
            ("/", "/inbox/a\0b", Err(JailError::Nul)),
            ("/", "/inbox/a\u{FFFD}.dat", Err(JailError::NotUtf8)),
            ("/\0", "x", Err(JailError::Nul)),
            ("/", &long_path, Err(JailError::NameTooLong)),
            ("/", &very_long, Err(JailError::TooLong)),
        ];
        for (cwd, path, want) in cases {
            assert_eq!(resolve(cwd, path), want, "resolve({cwd:?}, {path:?})");
        }
    }

    #[test]
    fn canonical_paths_resolve_to_themselves() {
        for l in [
            Root,
            InboxDir,
            ReceiptsDir,
            OutboxDir,
            InboxFile("a.dat".into()),
            ReceiptFile("a.dat.verdict".into()),
            OutboxFile("P.dat".into()),
        ] {
            assert_eq!(resolve("/", &l.path()), Ok(l.clone()));
            assert_eq!(resolve("/inbox", &l.path()), Ok(l));
        }
    }
}

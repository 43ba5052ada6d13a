//! Claims: a complete file leaves its inbox by a rename into a claim
//! directory of the process taking it, so a file dropped under the same name
//! meanwhile is never mistaken for it, and two processes watching one inbox
//! never take the same file.
//!
//! ```text
//! <inbox>/.taking/<owner>.lock          locked (flock) while its process lives
//! <inbox>/.taking/<owner>/<n>.<name>    claim n: the data file …
//! <inbox>/.taking/<owner>/<n>.<name>.ctl  … and its control file, if any
//! <inbox>/.taking/<owner>/<n>/<name>    claim n of a name too long for the
//!                                       prefix (and of earlier versions)
//! ```
//!
//! The claims of one owner sit side by side, their names prefixed with their
//! number, so a claim costs two renames and no directory of its own: on a
//! burst of thousands of files, a directory made, synced and removed per
//! file cost a good part of the time.
//!
//! A claim's key, `<scope>/<owner>/<n>` (the scope names the folder: its
//! partner and direction), is recorded with the arrival (unique in the
//! ledger), so a claim found again after a crash is finished from its row,
//! never recorded twice. Only a dead owner's claims are taken over: its lock
//! can be taken. Blocking file-system work: run it on a blocking thread.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// The claim directory inside an inbox (a leading dot: never taken itself).
pub const CLAIMED: &str = ".taking";

/// A claimed file (and its control file) waiting in its claim directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// `<scope>/<owner>/<n>`: recorded with the arrival.
    pub key: String,
    pub dir: PathBuf,
    /// What the claimed files' names start with in `dir`: `<n>.` beside the
    /// owner's other claims, nothing in a claim directory of its own.
    pub prefix: String,
    pub data: String,
    pub control: Option<String>,
}

impl Claimed {
    pub fn data_path(&self) -> PathBuf {
        self.path_of(&self.data)
    }

    pub fn control_path(&self) -> Option<PathBuf> {
        self.control.as_ref().map(|c| self.path_of(c))
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}{name}", self.prefix))
    }

    /// Whether the claim has a directory of its own (removed when done).
    fn has_own_dir(&self) -> bool {
        self.prefix.is_empty()
    }
}

/// The longest file name (bytes) the file systems in use take.
const NAME_MAX: usize = 255;

/// Whether `name` can sit beside the owner's other claims as `<n>.<name>`.
fn prefix_fits(n: u64, name: &str) -> bool {
    n.to_string().len() + 1 + name.len() <= NAME_MAX
}

/// A claim number as this module writes it (no sign, no leading zero), so
/// that the number names the very entry it was read from.
fn claim_number(text: &str) -> Option<u64> {
    let canonical =
        text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// The claim number and the inbox name of a prefixed claimed file.
fn unprefixed(entry: &str) -> Option<(u64, &str)> {
    let (n, name) = entry.split_once('.')?;
    (!name.is_empty()).then_some((claim_number(n)?, name))
}

/// An owner directory of a dead process, taken over with its lock held.
struct Adopted {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

/// This process's claims in one inbox.
pub struct Owner {
    inbox: PathBuf,
    /// What the folder is (partner and direction): claim keys are unique
    /// across every folder, not only within one.
    scope: String,
    id: String,
    /// The lock file, locked, while this process has claims here.
    lock: Option<File>,
    next: u64,
    adopted: Vec<Adopted>,
}

/// How claimed names pair up: (data, control) pairs, and data files whose
/// control file is not among the names.
pub type PairFn<'a> = &'a dyn Fn(&[String]) -> (Vec<(String, Option<String>)>, Vec<String>);

impl Owner {
    /// This process's owner for `inbox` (its id is the process's: host,
    /// pid, start time). Nothing is created until the first claim.
    pub fn new(inbox: &Path, scope: &str) -> Owner {
        Owner::with_id(inbox, scope, crate::intake::process_owner())
    }

    /// An owner with a given id (tests stand for several processes in one).
    pub fn with_id(inbox: &Path, scope: &str, id: &str) -> Owner {
        Owner {
            inbox: inbox.to_path_buf(),
            scope: scope.to_string(),
            id: id.to_string(),
            lock: None,
            next: 0,
            adopted: Vec::new(),
        }
    }

    fn claimed_dir(&self) -> PathBuf {
        self.inbox.join(CLAIMED)
    }

    fn own_dir(&self) -> PathBuf {
        self.claimed_dir().join(&self.id)
    }

    fn lock_path(&self, owner: &str) -> PathBuf {
        self.claimed_dir().join(format!("{owner}.lock"))
    }

    /// `.taking/` as a directory (anything else of that name, say a file a
    /// partner dropped, is moved aside and named in the log), the lock file
    /// locked, then the owner directory: a directory without its lock is
    /// never mistaken for a dead owner's.
    fn ensure(&mut self) -> io::Result<()> {
        if self.lock.is_some() {
            return Ok(());
        }
        // Another process may remove `.taking` the moment it is empty (its
        // own release): then it is made again.
        let mut last = None;
        for _ in 0..8 {
            self.claimed_dir_exists()?;
            match self.own_lock() {
                Ok(lock) => {
                    std::fs::create_dir_all(self.own_dir())?;
                    sync_dir(&self.claimed_dir())?;
                    self.lock = Some(lock);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("cannot make the claim directory")))
    }

    fn claimed_dir_exists(&self) -> io::Result<()> {
        let claimed = self.claimed_dir();
        match std::fs::symlink_metadata(&claimed) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => {
                let aside = self.inbox.join(format!(
                    "{CLAIMED}.not-a-directory.{}",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S%.f")
                ));
                std::fs::rename(&claimed, &aside)?;
                tracing::warn!(inbox = %self.inbox.display(), moved_to = %aside.display(), "an entry named .taking (the claim directory's name) was in the inbox; moved aside");
                std::fs::create_dir(&claimed)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => match std::fs::create_dir(&claimed) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            },
            Err(e) => Err(e),
        }
    }

    /// The own lock file, created and locked. Another process may clear a
    /// lock file it finds unlocked without a directory, between our create
    /// and our lock: then the locked inode is no longer the file by that
    /// name, and it is made again.
    fn own_lock(&self) -> io::Result<File> {
        let path = self.lock_path(&self.id);
        for _ in 0..8 {
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            lock.try_lock().map_err(|e| match e {
                TryLockError::WouldBlock => io::Error::other("own claim lock is held elsewhere"),
                TryLockError::Error(e) => e,
            })?;
            if same_file(&lock, &path) {
                return Ok(lock);
            }
        }
        Err(io::Error::other(format!(
            "cannot hold the claim lock {}",
            path.display()
        )))
    }

    /// Claim `data` (and its control file) by renaming it into a new claim
    /// directory, durably. `None`: it is gone (another process took it).
    pub fn claim(&mut self, data: &str, control: Option<&str>) -> io::Result<Option<Claimed>> {
        let files = [(data.to_string(), control.map(String::from))];
        self.claim_all(&files)?
            .pop()
            .unwrap_or_else(|| Err(io::Error::other("no claim made")))
    }

    /// Claim several files (each with its control file) as [`Owner::claim`]
    /// does, one result per file, in order; the directories their renames
    /// touched are synced once for all of them before any is returned. An
    /// error syncing them fails the whole batch.
    pub fn claim_all(
        &mut self,
        files: &[(String, Option<String>)],
    ) -> io::Result<Vec<io::Result<Option<Claimed>>>> {
        self.ensure()?;
        let results: Vec<io::Result<Option<Claimed>>> = files
            .iter()
            .map(|(data, control)| self.claim_unsynced(data, control.as_deref()))
            .collect();
        // The renames survive a crash before an arrival is recorded with its
        // claim's key: otherwise a file could be back in the inbox and
        // claimed (and recorded) again under another key.
        let own = self.own_dir();
        let dirs: std::collections::BTreeSet<&Path> = results
            .iter()
            .flatten()
            .flatten()
            .map(|c| c.dir.as_path())
            .chain([own.as_path(), self.inbox.as_path()])
            .collect();
        for dir in dirs {
            sync_dir(dir)?;
        }
        Ok(results)
    }

    fn claim_unsynced(&mut self, data: &str, control: Option<&str>) -> io::Result<Option<Claimed>> {
        self.next += 1;
        let n = self.next;
        let key = format!("{}/{}/{n}", self.scope, self.id);
        let fits = std::iter::once(data)
            .chain(control)
            .all(|name| prefix_fits(n, name));
        let mut claimed = Claimed {
            key,
            dir: self.own_dir(),
            prefix: format!("{n}."),
            data: data.to_string(),
            control: control.map(String::from),
        };
        let own_dir = |c: &mut Claimed| {
            c.dir = c.dir.join(n.to_string());
            c.prefix.clear();
            std::fs::create_dir(&c.dir)
        };
        if !fits {
            own_dir(&mut claimed)?;
        }
        let gone = |c: &Claimed| {
            if c.has_own_dir() {
                let _ = std::fs::remove_dir(&c.dir);
            }
        };
        // The data file first: a process that loses the race for it touches
        // nothing else.
        let mut taken = std::fs::rename(self.inbox.join(data), claimed.data_path());
        if let Err(e) = &taken
            && e.kind() == io::ErrorKind::InvalidFilename
            && !claimed.has_own_dir()
        {
            // A file system with shorter names than NAME_MAX.
            own_dir(&mut claimed)?;
            taken = std::fs::rename(self.inbox.join(data), claimed.data_path());
        }
        if let Err(e) = taken {
            gone(&claimed);
            return if e.kind() == io::ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if let (Some(c), Some(to)) = (control, claimed.control_path())
            && let Err(e) = std::fs::rename(self.inbox.join(c), to)
        {
            // Give the data file back: it waits for its control file again.
            put_back(&claimed.data_path(), &self.inbox.join(data))?;
            gone(&claimed);
            return if e.kind() == io::ErrorKind::NotFound {
                Ok(None)
            } else {
                Err(e)
            };
        }
        Ok(Some(claimed))
    }

    /// A claim is done (recorded, judged, answered): remove its files.
    pub fn done(&mut self, c: &Claimed) -> io::Result<()> {
        for p in std::iter::once(c.data_path()).chain(c.control_path()) {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if !c.has_own_dir() {
            return sync_dir(&c.dir);
        }
        match std::fs::remove_dir(&c.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = c.dir.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// No claims left in hand: give the owner directories back (its own and
    /// those taken over), so an idle inbox ends empty.
    pub fn release(&mut self) {
        for a in self.adopted.drain(..) {
            if std::fs::remove_dir(&a.dir).is_ok() {
                let _ = std::fs::remove_file(&a.lock_path);
            }
        }
        if self.lock.is_some() && std::fs::remove_dir(self.own_dir()).is_ok() {
            let _ = std::fs::remove_file(self.lock_path(&self.id));
            self.lock = None;
        }
        // Fails harmlessly while another process has claims here.
        let _ = std::fs::remove_dir(self.claimed_dir());
    }

    /// Claims of dead processes, taken over: every owner directory whose
    /// lock can be taken, and files an older layout left directly in
    /// `.taking/` (claimed again here). A data file whose control file is
    /// missing from its claim goes back to the inbox to wait for it.
    pub fn adopt_dead(&mut self, pair: PairFn<'_>) -> io::Result<Vec<Claimed>> {
        let claimed = self.claimed_dir();
        let entries = match std::fs::read_dir(&claimed) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut loose = Vec::new();
        let mut owners = Vec::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if name != self.id && !self.adopted.iter().any(|a| a.dir == entry.path()) {
                    owners.push(name);
                }
            } else if kind.is_file() && !name.ends_with(".lock") {
                loose.push(name);
            } else if kind.is_file() && name.ends_with(".lock") {
                // A lock whose directory is gone: a process stopped between
                // the two removals. Cleared once nobody holds it.
                let owner = name.trim_end_matches(".lock");
                if !claimed.join(owner).exists()
                    && let Ok(f) = File::open(entry.path())
                    && f.try_lock().is_ok()
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let mut out = Vec::new();
        for owner in owners {
            let lock_path = self.lock_path(&owner);
            let Ok(lock) = File::options().write(true).open(&lock_path) else {
                // No lock file: a directory being set up right now.
                continue;
            };
            match lock.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => return Err(e),
            }
            // The lock taken must be the one the name stands for now: a
            // live owner that went idle and came back has a new lock file
            // under the same name, and the old one proves nothing.
            if !same_file(&lock, &lock_path) {
                continue;
            }
            let dir = claimed.join(&owner);
            // Claim n: a directory `<n>` or files `<n>.<name>`.
            let mut claims: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
            let mut own_dirs = std::collections::BTreeSet::new();
            for e in std::fs::read_dir(&dir)?.flatten() {
                let Ok(entry) = e.file_name().into_string() else {
                    continue;
                };
                if let Some(n) = claim_number(&entry) {
                    own_dirs.insert(n);
                } else if let Some((n, name)) = unprefixed(&entry) {
                    claims.entry(n).or_default().push(name.to_string());
                }
            }
            let numbers: std::collections::BTreeSet<u64> = claims
                .keys()
                .copied()
                .chain(own_dirs.iter().copied())
                .collect();
            for n in numbers {
                let key = format!("{}/{owner}/{n}", self.scope);
                if own_dirs.contains(&n) {
                    out.extend(self.take_over(&key, &dir.join(n.to_string()), "", None, pair)?);
                }
                if let Some(names) = claims.remove(&n) {
                    out.extend(self.take_over(&key, &dir, &format!("{n}."), Some(names), pair)?);
                }
            }
            self.adopted.push(Adopted {
                dir,
                lock_path,
                _lock: lock,
            });
        }
        if !loose.is_empty() {
            loose.sort();
            let (pairs, _) = pair(&loose);
            for (data, control) in pairs {
                if let Some(c) = self.claim_loose(&data, control.as_deref())? {
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// One claim of a dead owner, as it was left: the files `<prefix><name>`
    /// in `dir` (`names`, or when `None` every file of `dir`, a claim
    /// directory of its own).
    fn take_over(
        &self,
        key: &str,
        dir: &Path,
        prefix: &str,
        names: Option<Vec<String>>,
        pair: PairFn<'_>,
    ) -> io::Result<Option<Claimed>> {
        let mut names = match names {
            Some(names) => names,
            None => std::fs::read_dir(dir)?
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
        };
        names.sort();
        let (pairs, waiting) = pair(&names);
        if let Some((data, control)) = pairs.into_iter().next() {
            return Ok(Some(Claimed {
                key: key.to_string(),
                dir: dir.to_path_buf(),
                prefix: prefix.to_string(),
                data,
                control,
            }));
        }
        // Nothing to take as it stands: the owner died between claiming the
        // data file and its control file. Give the files back to the inbox.
        for n in waiting.iter().chain(names.iter()) {
            let from = dir.join(format!("{prefix}{n}"));
            if from.exists() {
                put_back(&from, &self.inbox.join(n))?;
            }
        }
        if prefix.is_empty() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(None)
    }

    /// A file left directly in `.taking/` by an older layout: claimed anew.
    fn claim_loose(&mut self, data: &str, control: Option<&str>) -> io::Result<Option<Claimed>> {
        self.ensure()?;
        self.next += 1;
        let dir = self.own_dir().join(self.next.to_string());
        std::fs::create_dir(&dir)?;
        let claimed = self.claimed_dir();
        for n in std::iter::once(data).chain(control) {
            std::fs::rename(claimed.join(n), dir.join(n))?;
        }
        sync_dir(&dir)?;
        sync_dir(&claimed)?;
        Ok(Some(Claimed {
            key: format!("{}/{}/{}", self.scope, self.id, self.next),
            dir,
            prefix: String::new(),
            data: data.to_string(),
            control: control.map(String::from),
        }))
    }
}

/// Move a claimed file back into the inbox without replacing a new file of
/// the same name (a link fails if the name exists); if one is there, the
/// claimed copy stays aside under a suffixed name.
fn put_back(from: &Path, to: &Path) -> io::Result<()> {
    let mut target = to.to_path_buf();
    for i in 1..100 {
        match std::fs::hard_link(from, &target) {
            Ok(()) => return std::fs::remove_file(from),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let name = to.file_name().and_then(|n| n.to_str()).unwrap_or("file");
                target = to.with_file_name(format!("{name}.returned-{i}"));
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "cannot put {} back into the inbox",
        from.display()
    )))
}

/// Whether `path` names the very file `f` is open on.
fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_control(names: &[String]) -> (Vec<(String, Option<String>)>, Vec<String>) {
        (
            names.iter().map(|n| (n.clone(), None)).collect(),
            Vec::new(),
        )
    }

    /// Finish every claim, let the owner go, and see the inbox end empty.
    fn finish_all(o: &mut Owner, claims: &[Claimed], inbox: &Path) {
        for c in claims {
            o.done(c).unwrap();
        }
        o.release();
        assert!(!inbox.join(CLAIMED).exists(), "an idle inbox ends empty");
    }

    #[test]
    fn a_claim_moves_the_file_and_is_not_taken_twice() {
        let inbox = tempfile::tempdir().unwrap();
        std::fs::write(inbox.path().join("a.dat"), b"x").unwrap();
        let mut one = Owner::with_id(inbox.path(), "in:t", "one-1-1");
        let mut two = Owner::with_id(inbox.path(), "in:t", "two-2-2");
        let c = one.claim("a.dat", None).unwrap().expect("claimed");
        assert!(c.data_path().exists());
        assert!(!inbox.path().join("a.dat").exists());
        // The other process finds it gone and touches nothing.
        assert_eq!(two.claim("a.dat", None).unwrap(), None);
        // The owner is alive: its claims are not taken over.
        assert!(two.adopt_dead(&no_control).unwrap().is_empty());
        one.done(&c).unwrap();
        one.release();
        two.release();
        assert!(
            !inbox.path().join(CLAIMED).exists(),
            "an idle inbox ends empty"
        );
    }

    #[test]
    fn a_dead_owners_claims_are_taken_over_with_their_keys() {
        let inbox = tempfile::tempdir().unwrap();
        std::fs::write(inbox.path().join("a.dat"), b"x").unwrap();
        std::fs::write(inbox.path().join("b.dat"), b"y").unwrap();
        let (ka, kb) = {
            let mut dead = Owner::with_id(inbox.path(), "in:t", "dead-3-3");
            let a = dead.claim("a.dat", None).unwrap().unwrap();
            let b = dead.claim("b.dat", None).unwrap().unwrap();
            (a.key, b.key)
            // dropped: its lock is released, as when a process dies
        };
        let mut next = Owner::with_id(inbox.path(), "in:t", "next-4-4");
        let taken = next.adopt_dead(&no_control).unwrap();
        let keys: Vec<&str> = taken.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, [ka.as_str(), kb.as_str()]);
        // Held now: a third process leaves them alone.
        let mut third = Owner::with_id(inbox.path(), "in:t", "third-5-5");
        assert!(third.adopt_dead(&no_control).unwrap().is_empty());
        finish_all(&mut next, &taken, inbox.path());
    }

    #[test]
    fn a_file_named_like_the_claim_directory_is_moved_aside() {
        let inbox = tempfile::tempdir().unwrap();
        std::fs::write(inbox.path().join(CLAIMED), b"junk").unwrap();
        std::fs::write(inbox.path().join("a.dat"), b"x").unwrap();
        let mut o = Owner::new(inbox.path(), "in:t");
        assert!(o.claim("a.dat", None).unwrap().is_some());
        let aside: Vec<String> = std::fs::read_dir(inbox.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".taking.not-a-directory"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
    }

    #[test]
    fn a_claim_without_its_control_file_goes_back_to_the_inbox() {
        let inbox = tempfile::tempdir().unwrap();
        let pair = |names: &[String]| {
            let data: Vec<&String> = names.iter().filter(|n| n.ends_with(".csv")).collect();
            let mut pairs = Vec::new();
            let mut waiting = Vec::new();
            for d in data {
                let ctl = d.replace(".csv", ".ctl");
                if names.contains(&ctl) {
                    pairs.push((d.clone(), Some(ctl)));
                } else {
                    waiting.push(d.clone());
                }
            }
            (pairs, waiting)
        };
        // A dead owner that claimed the data file and died before its control file.
        let owner = "dead-1-1";
        let dir = inbox.path().join(CLAIMED).join(owner).join("1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.csv"), b"data").unwrap();
        std::fs::write(
            inbox.path().join(CLAIMED).join(format!("{owner}.lock")),
            b"",
        )
        .unwrap();
        // A new file of the same name meanwhile.
        std::fs::write(inbox.path().join("x.csv"), b"newer").unwrap();
        let mut o = Owner::new(inbox.path(), "in:t");
        assert!(o.adopt_dead(&pair).unwrap().is_empty());
        assert_eq!(std::fs::read(inbox.path().join("x.csv")).unwrap(), b"newer");
        assert_eq!(
            std::fs::read(inbox.path().join("x.csv.returned-1")).unwrap(),
            b"data"
        );
    }

    #[test]
    fn claims_sit_side_by_side_and_a_name_too_long_gets_a_directory() {
        let inbox = tempfile::tempdir().unwrap();
        let long = format!("{}.dat", "L".repeat(NAME_MAX - 4));
        let names = ["a.dat", "7.dat", long.as_str(), "12"];
        for n in names {
            std::fs::write(inbox.path().join(n), n.as_bytes()).unwrap();
        }
        let mut o = Owner::with_id(inbox.path(), "in:t", "one-1-1");
        let files = names.map(|n| (n.to_string(), None));
        let claims: Vec<Claimed> = o
            .claim_all(&files)
            .unwrap()
            .into_iter()
            .map(|c| c.unwrap().unwrap())
            .collect();
        let own = inbox.path().join(CLAIMED).join("one-1-1");
        assert_eq!(claims[0].data_path(), own.join("1.a.dat"));
        assert_eq!(claims[1].data_path(), own.join("2.7.dat"));
        assert_eq!(claims[2].data_path(), own.join("3").join(&long));
        assert_eq!(claims[3].data_path(), own.join("4.12"));
        for c in &claims {
            assert_eq!(std::fs::read(c.data_path()).unwrap(), c.data.as_bytes());
        }
        finish_all(&mut o, &claims, inbox.path());
    }

    /// A dead owner's directory as `files` (paths under it) describe it, with
    /// its lock file.
    fn dead_owner(inbox: &Path, owner: &str, files: &[&str]) {
        let dir = inbox.join(CLAIMED).join(owner);
        for f in files {
            let path = dir.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, f.as_bytes()).unwrap();
        }
        std::fs::write(inbox.join(CLAIMED).join(format!("{owner}.lock")), b"").unwrap();
    }

    #[test]
    fn a_dead_owners_claims_of_either_layout_are_taken_over_in_order() {
        let inbox = tempfile::tempdir().unwrap();
        // Claim 1 and 10 side by side, claim 2 in its own directory (an
        // earlier version's layout), and a name holding dots and digits.
        dead_owner(
            inbox.path(),
            "dead-1-1",
            &["1.a.dat", "2/b.dat", "10.3.4.dat"],
        );
        let mut o = Owner::with_id(inbox.path(), "in:t", "next-2-2");
        let taken = o.adopt_dead(&no_control).unwrap();
        let found: Vec<(&str, &str, Vec<u8>)> = taken
            .iter()
            .map(|c| {
                (
                    c.key.as_str(),
                    c.data.as_str(),
                    std::fs::read(c.data_path()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("in:t/dead-1-1/1", "a.dat", b"1.a.dat".to_vec()),
                ("in:t/dead-1-1/2", "b.dat", b"2/b.dat".to_vec()),
                ("in:t/dead-1-1/10", "3.4.dat", b"10.3.4.dat".to_vec()),
            ]
        );
        finish_all(&mut o, &taken, inbox.path());
    }

    #[test]
    fn a_claim_side_by_side_without_its_control_file_goes_back_to_the_inbox() {
        let inbox = tempfile::tempdir().unwrap();
        let pair = |names: &[String]| {
            let ctl = |d: &String| d.replace(".csv", ".ctl");
            let (pairs, waiting): (Vec<&String>, Vec<&String>) = names
                .iter()
                .filter(|n| n.ends_with(".csv"))
                .partition(|d| names.contains(&ctl(d)));
            (
                pairs
                    .into_iter()
                    .map(|d| (d.clone(), Some(ctl(d))))
                    .collect(),
                waiting.into_iter().cloned().collect(),
            )
        };
        dead_owner(inbox.path(), "dead-1-1", &["4.x.csv", "5.y.csv", "5.y.ctl"]);
        let mut o = Owner::with_id(inbox.path(), "in:t", "next-2-2");
        let taken = o.adopt_dead(&pair).unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(
            (
                taken[0].key.as_str(),
                taken[0].data.as_str(),
                taken[0].control.as_deref()
            ),
            ("in:t/dead-1-1/5", "y.csv", Some("y.ctl"))
        );
        assert_eq!(
            std::fs::read(inbox.path().join("x.csv")).unwrap(),
            b"4.x.csv"
        );
    }

    #[test]
    fn only_names_with_a_claim_number_are_claims() {
        assert_eq!(unprefixed("12.a.dat"), Some((12, "a.dat")));
        assert_eq!(unprefixed("0.7"), Some((0, "7")));
        for odd in [
            "a.dat",
            ".dat",
            "12.",
            "12",
            "-1.a",
            "+1.a",
            "01.a",
            "1x.a",
            "",
            "99999999999999999999.a",
        ] {
            assert_eq!(unprefixed(odd), None, "{odd}");
        }
        assert_eq!(claim_number("0"), Some(0));
        for odd in ["05", "+5", "", "5 ", "99999999999999999999"] {
            assert_eq!(claim_number(odd), None, "{odd}");
        }
    }

    #[test]
    fn a_stray_entry_in_a_dead_owners_directory_is_left_alone() {
        let inbox = tempfile::tempdir().unwrap();
        // `05` and `+5` are no claim this module wrote: were they read as
        // claim 5, the owner's directory would be looked for under `5`.
        dead_owner(
            inbox.path(),
            "dead-1-1",
            &["05/x.dat", "+5/y.dat", "01.z.dat", "6.12"],
        );
        let mut o = Owner::with_id(inbox.path(), "in:t", "next-2-2");
        let taken = o.adopt_dead(&no_control).unwrap();
        let found: Vec<(&str, &str)> = taken
            .iter()
            .map(|c| (c.key.as_str(), c.data.as_str()))
            .collect();
        assert_eq!(found, [("in:t/dead-1-1/6", "12")]);
        assert_eq!(std::fs::read(taken[0].data_path()).unwrap(), b"6.12");
    }
}

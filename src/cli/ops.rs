//! Commands for running the gateway: check, hash-password, host-key,
//! keygen, reload, migrate.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::{self, HashAlg, LineEnding, PrivateKey};
use serde_json::json;

use super::CliError;
use super::render::shown;
use crate::check::{self, EndpointCheck, Overrides};
use crate::config::ConfigError;
use crate::ledger::{Ledger, MigrationStatus};
use crate::model::Exit;

pub fn problem_json(p: &ConfigError) -> serde_json::Value {
    json!({
        "file": p.file().map(|f| f.display().to_string()),
        "key": p.key(),
        "partner": p.partner(),
        "message": p.message(),
    })
}

fn endpoint_json(c: &EndpointCheck) -> serde_json::Value {
    json!({
        "partner": c.partner,
        "endpoint": c.endpoint,
        "addr": c.addr,
        "ok": c.ok(),
        "steps": c.steps.iter().map(|s| json!({
            "check": s.what,
            "path": s.path,
            "ok": s.result.is_ok(),
            "result": match &s.result { Ok(m) | Err(m) => m },
        })).collect::<Vec<_>>(),
    })
}

/// `settlegate check [--connect] [--json]`.
pub fn check(
    config_path: Option<&Path>,
    overrides: &Overrides,
    connect: bool,
    json: bool,
) -> Result<Exit, CliError> {
    let checked = check::check_config(config_path, overrides);
    let checked = match checked {
        Ok(c) => c,
        Err(problems) => {
            if json {
                println!(
                    "{}",
                    json!({
                        "ok": false,
                        "problems": problems.iter().map(problem_json).collect::<Vec<_>>(),
                        "endpoints": [],
                    })
                );
            } else {
                println!("{} problem(s) in the configuration:", problems.len());
                for p in &problems {
                    println!("  {}", shown(&p.to_string()));
                }
            }
            return Ok(Exit::Usage);
        }
    };
    let endpoints = if connect {
        super::runtime(Some(2))?.block_on(check::connect_all(&checked.config))
    } else {
        Vec::new()
    };
    let all_ok = endpoints.iter().all(EndpointCheck::ok);
    if json {
        println!(
            "{}",
            json!({
                "ok": all_ok,
                "problems": [],
                "config": checked.config.source.as_ref().map(|p| p.display().to_string()),
                "partners": checked.config.partners.len(),
                "formats": checked.formats.ids(),
                "endpoints": endpoints.iter().map(endpoint_json).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "configuration ok: {} ({} partners, formats: {})",
            checked
                .config
                .source
                .as_ref()
                .map_or_else(|| "(defaults)".to_string(), |p| p.display().to_string()),
            checked.config.partners.len(),
            checked.formats.ids().join(", ")
        );
        for c in &endpoints {
            println!(
                "{}/{} ({}): {}",
                c.partner,
                c.endpoint,
                c.addr,
                if c.ok() { "ok" } else { "FAILED" }
            );
            for s in &c.steps {
                let (mark, text) = match &s.result {
                    Ok(m) => ("ok", m),
                    Err(m) => ("FAILED", m),
                };
                match &s.path {
                    Some(p) => println!("  {} {}: {mark}: {}", s.what, shown(p), shown(text)),
                    None => println!("  {}: {mark}: {}", s.what, shown(text)),
                }
            }
        }
    }
    Ok(if all_ok { Exit::Ok } else { Exit::Endpoint })
}

/// The password: from the terminal without echo (asked twice), or the first
/// line of standard input.
fn read_password() -> Result<String, CliError> {
    let io = |source| CliError::Io {
        context: "cannot read the password".into(),
        source,
    };
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(io)?;
        let again = rpassword::prompt_password("Again: ").map_err(io)?;
        if first != again {
            return Err(CliError::Usage("the two passwords differ".into()));
        }
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(io)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }
}

/// `settlegate hash-password`: an argon2id PHC string for `password_hash`.
pub fn hash_password() -> Result<Exit, CliError> {
    use argon2::{Argon2, PasswordHasher};
    let password = read_password()?;
    if password.is_empty() {
        return Err(CliError::Usage("the password is empty".into()));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| CliError::Usage(format!("no randomness for the salt: {e}")))?;
    let hash = Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| CliError::Usage(format!("cannot hash the password: {e}")))?;
    println!("{hash}");
    Ok(Exit::Ok)
}

/// `settlegate host-key [--host NAME]`: the SFTP server's host key
/// fingerprint and the `known_hosts` line a partner adds.
pub fn host_key(
    settings: Option<&crate::channels::SftpServerConfig>,
    data_dir: &Path,
    host: Option<&str>,
) -> Result<Exit, CliError> {
    let Some(settings) = settings else {
        return Err(CliError::Usage(
            "no [sftp_server] section in the configuration: there is no SFTP server".into(),
        ));
    };
    let path = settings.host_key_path(data_dir);
    let existed = path.exists();
    let key = crate::channels::sftp_server::load_or_create_host_key(&path)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if !existed {
        eprintln!(
            "generated the host key {} (serve uses it)",
            shown(&path.display().to_string())
        );
    }
    let host = match host {
        Some(h) => h.to_string(),
        None if settings.listen.ip().is_unspecified() => {
            return Err(CliError::Usage(format!(
                "the server listens on {} (every address): give the name partners connect to with --host",
                settings.listen
            )));
        }
        None => settings.listen.ip().to_string(),
    };
    let port = settings.listen.port();
    let name = if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    };
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    // known_hosts takes "host keytype base64", without the comment.
    let mut parts = public.split_whitespace();
    let (alg, b64) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    println!("{}", key.public_key().fingerprint(HashAlg::Sha256));
    println!("{name} {alg} {b64}");
    Ok(Exit::Ok)
}

/// `settlegate keygen PATH`: a new ed25519 key pair (PATH mode 0600 and
/// PATH.pub); prints the public line for the partner's authorized_keys.
pub fn keygen(path: &Path, comment: Option<&str>) -> Result<Exit, CliError> {
    let io = |what: &str, p: &Path| {
        let context = format!("cannot {what} {}", p.display());
        move |source| CliError::Io { context, source }
    };
    let public_path = PathBuf::from(format!("{}.pub", path.display()));
    for p in [path, public_path.as_path()] {
        if p.exists() {
            return Err(CliError::Usage(format!(
                "{} exists; keygen never replaces a key",
                p.display()
            )));
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| CliError::Usage(format!("no randomness: {e}")))?;
    let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let comment = comment.map_or_else(|| "settlegate".to_string(), str::to_string);
    let key = PrivateKey::new(
        ssh_key::private::KeypairData::Ed25519(pair),
        comment.as_str(),
    )
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    write_new(path, private.as_bytes(), 0o600).map_err(io("write", path))?;
    write_new(&public_path, format!("{public}\n").as_bytes(), 0o644)
        .map_err(io("write", &public_path))?;
    eprintln!(
        "wrote {} and {} ({})",
        path.display(),
        public_path.display(),
        key.public_key().fingerprint(HashAlg::Sha256)
    );
    println!("{public}");
    Ok(Exit::Ok)
}

/// Create a file that must not exist, with its mode, synced.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// `settlegate reload`: signal the running `serve` (its pid file in the data
/// dir) to re-read its configuration.
pub fn reload(data_dir: &Path) -> Result<Exit, CliError> {
    // No serve to signal is a failure (1), not a usage error.
    let pid = crate::serve::running_pid(data_dir).map_err(|m| CliError::Io {
        context: "reload".into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, m),
    })?;
    crate::serve::signal_reload(pid).map_err(|source| CliError::Io {
        context: format!("cannot signal serve (pid {pid})"),
        source,
    })?;
    println!(
        "asked serve (pid {pid}) to reload; its log says whether the new configuration was taken"
    );
    Ok(Exit::Ok)
}

/// `settlegate migrate [--check] [--json]`.
pub async fn migrate(
    url: Option<&str>,
    data_dir: &Path,
    check_only: bool,
    json: bool,
) -> Result<Exit, CliError> {
    let status = Ledger::migration_status(url, data_dir).await?;
    let print = |s: &MigrationStatus| {
        if json {
            println!(
                "{}",
                json!({
                    "ledger": s.url,
                    "state": s.state(),
                    "applied": s.applied,
                    "known": s.known,
                    "pending": s.pending,
                    "unknown": s.unknown,
                })
            );
        } else {
            println!("{}", s.describe());
        }
    };
    if check_only || !status.unknown.is_empty() || status.pending.is_empty() {
        print(&status);
        return Ok(match status.state() {
            "current" => Exit::Ok,
            "ahead" => Exit::LedgerAhead,
            _ => Exit::LedgerBehind,
        });
    }
    let ledger = Ledger::open(url, data_dir).await?;
    ledger.close().await;
    print(&Ledger::migration_status(url, data_dir).await?);
    Ok(Exit::Ok)
}

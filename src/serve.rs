//! `settlegate serve`: every configured channel in one process, until a
//! shutdown signal. In-flight intakes finish (a feed is one transaction, so
//! an interrupted one is rolled back, never half-applied); files staged but
//! not judged by an earlier run are judged at start.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::channels::watch::{Direction, Inbox, run_inbox};
use crate::channels::{ChannelSettings, SftpServerConfig, WatchSettings};
use crate::check::{Checked, Overrides, check_config};
use crate::config::Config;
use crate::intake::{Gateway, GatewayOpenError, IntakeError, SystemClock, gateway_actor, receipt};
use crate::ledger::redact_url;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Open(#[from] GatewayOpenError),
    #[error(transparent)]
    Intake(#[from] IntakeError),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("cannot watch the inboxes: {0}")]
    Notify(#[from] notify::Error),
    #[error(transparent)]
    SftpServer(#[from] crate::channels::sftp_server::SftpServerError),
    #[error("console: cannot listen on {addr}: {source}")]
    Console {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: cannot listen on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Where a reload reads the configuration from.
#[derive(Debug, Clone, Default)]
pub struct ReloadSource {
    /// The config file (`None`: `./settlegate.toml` when present).
    pub path: Option<PathBuf>,
    /// The command line's overrides, applied again on each reload.
    pub overrides: Overrides,
}

/// Run until `shutdown` completes. SIGHUP reloads from `./settlegate.toml`.
pub async fn serve(
    config: Config,
    channels: ChannelSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let source = ReloadSource {
        path: config.source.clone(),
        overrides: Overrides {
            data_dir: Some(config.data_dir.clone()),
            ledger: config.ledger.clone(),
        },
    };
    serve_reloading(config, channels, source, shutdown).await
}

/// The channels that follow the configuration: watched inboxes and
/// outboxes, scheduled pickups and uploads. A reload stops them (each
/// finishes what it has in hand) and starts them again on the new gateway.
struct Generation {
    stop_tx: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    watcher: notify::RecommendedWatcher,
}

impl Generation {
    fn start(gw: &Arc<Gateway>, settings: WatchSettings) -> Result<Generation, ServeError> {
        let cfg = &gw.config;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut senders = Vec::new();
        let mut folders_seen: Vec<(PathBuf, String)> = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for p in &cfg.partners {
            let folders = [
                Inbox {
                    partner: p.id.clone(),
                    dir: cfg.inbox_dir(&p.id),
                    receipts: receipt::dir(&cfg.data_dir, &p.id),
                    direction: Direction::Inbound,
                },
                Inbox {
                    partner: p.id.clone(),
                    dir: cfg.outbox_dir(&p.id),
                    receipts: crate::outbound::receipt::dir(&cfg.data_dir, &p.id),
                    direction: Direction::Outbound,
                },
            ];
            for folder in folders {
                for dir in [&folder.dir, &folder.receipts] {
                    std::fs::create_dir_all(dir).map_err(|source| ServeError::Dir {
                        path: dir.clone(),
                        source,
                    })?;
                }
                match folder.direction {
                    Direction::Inbound => {
                        tracing::info!(partner = %p.id, inbox = %folder.dir.display(), receipts = %folder.receipts.display(), "channel watch")
                    }
                    Direction::Outbound => {
                        tracing::info!(partner = %p.id, outbox = %folder.dir.display(), receipts = %folder.receipts.display(), "outbox")
                    }
                }
                let (tx, rx) = mpsc::channel(1);
                // Events carry absolute paths: route by the canonical directory.
                let canonical =
                    std::fs::canonicalize(&folder.dir).map_err(|source| ServeError::Dir {
                        path: folder.dir.clone(),
                        source,
                    })?;
                // One folder, one way in or out: two partners (or an inbox and
                // an outbox) sharing a directory would take each other's files.
                if let Some((_, other)) = folders_seen.iter().find(|(d, _)| *d == canonical) {
                    return Err(ServeError::Config(format!(
                        "{} and {} are the same directory ({}); give each partner its own inbox and outbox",
                        other,
                        folder.scope(),
                        canonical.display()
                    )));
                }
                folders_seen.push((canonical.clone(), folder.scope()));
                senders.push((canonical, tx));
                let name = match folder.direction {
                    Direction::Inbound => format!("watch {}", p.id),
                    Direction::Outbound => format!("outbox {}", p.id),
                };
                tasks.spawn(gw.telemetry.track(
                    name,
                    run_inbox(gw.clone(), folder, settings, rx, stop_rx.clone()),
                ));
            }
        }

        // File-system events only wake the scanner of the inbox they concern.
        let routes = senders.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event {
                    for path in &event.paths {
                        for (dir, tx) in &routes {
                            if path.parent() == Some(dir.as_path()) {
                                let _ = tx.try_send(());
                            }
                        }
                    }
                }
            })?;
        for (dir, _) in &senders {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        for p in &cfg.partners {
            for ep in &p.endpoints {
                if let Some(up) = &ep.upload {
                    tracing::info!(partner = %p.id, endpoint = %ep.name, host = %ep.host, port = ep.port, upload_dir = %up.dir, schedule = up.schedule.as_ref().map(|s| s.text.as_str()).unwrap_or("as soon as recorded"), "delivery to sftp endpoint");
                    tasks.spawn(gw.telemetry.track(
                        format!("delivery {}/{}", p.id, ep.name),
                        crate::outbound::worker::run_endpoint(
                            gw.clone(),
                            p.id.clone(),
                            ep.name.clone(),
                            stop_rx.clone(),
                        ),
                    ));
                }
                if !ep.pickup {
                    continue;
                }
                match &ep.schedule {
                    Some(s) => {
                        tracing::info!(partner = %p.id, endpoint = %ep.name, host = %ep.host, port = ep.port, schedule = %s.text, drill_site = ep.drill_site, "channel sftp-pull");
                        tasks.spawn(gw.telemetry.track(
                            format!("sftp-pull {}/{}", p.id, ep.name),
                            crate::channels::sftp_pull::run_schedule(
                                gw.clone(),
                                p.id.clone(),
                                ep.name.clone(),
                                stop_rx.clone(),
                            ),
                        ));
                    }
                    None => {
                        tracing::info!(partner = %p.id, endpoint = %ep.name, "sftp-pull endpoint has no schedule (settlegate pull only)")
                    }
                }
            }
        }
        // Files another node recorded and left unjudged (it died) are
        // judged by whichever node claims them first.
        tasks.spawn(
            gw.telemetry
                .track("recovery".into(), sweep(gw.clone(), stop_rx.clone())),
        );
        Ok(Generation {
            stop_tx,
            tasks,
            watcher,
        })
    }

    /// Stop, letting each task finish what it has in hand. Its tasks are
    /// no longer watched by `/healthz`: the next generation starts its own.
    async fn stop(mut self, gw: &Gateway) {
        let _ = self.stop_tx.send(true);
        while self.tasks.join_next().await.is_some() {}
        drop(self.watcher);
        gw.telemetry.forget_stopped();
    }
}

/// [`serve`], reloading from `source` on SIGHUP.
pub async fn serve_reloading(
    config: Config,
    channels: ChannelSettings,
    source: ReloadSource,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut settings = channels.watch;
    let mut gw = Arc::new(Gateway::open(config, Arc::new(SystemClock)).await?);
    let cfg = &gw.config;
    tracing::info!(
        ledger = %cfg.ledger.as_deref().map(redact_url).unwrap_or_else(|| format!("sqlite {}", cfg.data_dir.join("ledger.db").display())),
        data_dir = %cfg.data_dir.display(),
        formats = %gw.formats.ids().join(", "),
        partners = %cfg.partners.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", "),
        "settlegate starting"
    );
    let recovered = gw.recover(&gateway_actor()).await?;
    if !recovered.outcomes.is_empty() || !recovered.failures.is_empty() {
        tracing::warn!(
            judged = recovered.outcomes.len(),
            failed = recovered.failures.len(),
            "files an earlier run left unjudged"
        );
    }
    let (server_stop_tx, server_stop_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(crate::cluster::heartbeat(
        gw.ledger.clone(),
        gw.config.lease,
        server_stop_rx.clone(),
    ));
    tracing::info!(node = %crate::cluster::node_name(), lease_seconds = gw.config.lease.as_secs(), store = %if gw.store.in_database() { "postgres".to_string() } else { "directory".to_string() }, "node");
    let mut generation = Generation::start(&gw, settings)?;
    let mut sftp_settings = channels.sftp_server.clone();
    let mut sftp = None;
    let mut server_task = None;
    if let Some(settings) = channels.sftp_server {
        let server = crate::channels::sftp_server::SftpServer::bind(gw.clone(), settings).await?;
        tracing::info!(
            listen = %server.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            host_key = %server.fingerprint,
            "channel sftp-push (sftp server)"
        );
        sftp = Some(server.handle());
        server_task = Some(tokio::spawn(
            gw.telemetry
                .track("sftp-server".into(), server.run(server_stop_rx.clone())),
        ));
    }
    // `/metrics` and `/healthz` answer for the gateway of the moment (a
    // reload replaces it).
    let (current_tx, current_rx) = watch::channel(gw.clone());
    let mut http_task = None;
    if let Some(m) = &gw.config.metrics {
        let listener = tokio::net::TcpListener::bind(m.listen)
            .await
            .map_err(|source| ServeError::Metrics {
                addr: m.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Metrics {
                addr: m.listen,
                source,
            })?;
        tracing::info!(listen = %addr, "metrics and health (GET /metrics, /healthz)");
        http_task = Some(tokio::spawn(crate::http::run(
            current_rx,
            listener,
            server_stop_rx,
        )));
    }
    // The console, on the gateway of the moment too: a reload changes its
    // operators and roles; only a restart moves its address.
    let mut console_task = None;
    if let Some(c) = &gw.config.console {
        let listener = tokio::net::TcpListener::bind(c.listen)
            .await
            .map_err(|source| ServeError::Console {
                addr: c.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Console {
                addr: c.listen,
                source,
            })?;
        tracing::info!(listen = %addr, operators = c.operators.len(), "operator console (http)");
        console_task = Some(tokio::spawn(crate::console::run(
            current_tx.subscribe(),
            listener,
            server_stop_tx.subscribe(),
        )));
    }
    let pid_file = PidFile::write(&gw.config.data_dir);
    let mut hangups = hangups();
    tracing::info!(pid = std::process::id(), "settlegate serving");

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = next_hangup(&mut hangups) => {
                tracing::info!("SIGHUP: reloading the configuration");
                let current = Current { gw: &gw, watch: settings, sftp: sftp_settings.as_ref() };
                match prepare_reload(&source, &current).await {
                    Err(refused) => {
                        for line in &refused {
                            tracing::error!(problem = %line, "reload refused: the running configuration stays");
                        }
                        let details = serde_json::json!({ "refused": refused }).to_string();
                        if let Err(e) = gw.ledger.gateway_event(chrono::Utc::now(), "reload-refused", &gateway_actor(), None, &details).await {
                            tracing::warn!(error = %e, "cannot record the refused reload in the ledger");
                        }
                    }
                    Ok(next) => {
                        let Reloaded { checked, changes } = next;
                        let new_gw = Arc::new(gw.reconfigured(checked.config, checked.formats));
                        if let (Some(handle), Some(new)) = (&sftp, &checked.channels.sftp_server) {
                            match handle.reload(new.clone(), new_gw.clone()) {
                                Ok(restart) => {
                                    for r in restart {
                                        tracing::warn!(setting = %r, "changed setting takes effect at the next restart");
                                    }
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "reload refused: the running configuration stays");
                                    continue;
                                }
                            }
                        }
                        generation.stop(&gw).await;
                        let watch_settings = checked.channels.watch;
                        generation = match Generation::start(&new_gw, watch_settings) {
                            Ok(g) => g,
                            Err(e) => {
                                tracing::error!(error = %e, "reload refused: cannot start the new channels; the running configuration stays");
                                if let Some(handle) = &sftp
                                    && let Some(old) = &sftp_settings
                                {
                                    let _ = handle.reload(old.clone(), gw.clone());
                                }
                                generation = Generation::start(&gw, settings)?;
                                continue;
                            }
                        };
                        settings = watch_settings;
                        gw = new_gw;
                        let _ = current_tx.send(gw.clone());
                        sftp_settings = checked.channels.sftp_server;
                        let details = serde_json::json!({ "changes": changes }).to_string();
                        tracing::info!(changes = %changes.join("; "), "configuration reloaded");
                        if let Err(e) = gw.ledger.gateway_event(chrono::Utc::now(), "reload", &gateway_actor(), None, &details).await {
                            tracing::warn!(error = %e, "cannot record the reload in the ledger");
                        }
                    }
                }
            }
        }
    }
    tracing::info!("shutting down: finishing in-flight files");
    let _ = server_stop_tx.send(true);
    generation.stop(&gw).await;
    if let Some(t) = server_task {
        let _ = t.await;
    }
    if let Some(t) = http_task {
        let _ = t.await;
    }
    if let Some(t) = console_task {
        let _ = t.await;
    }
    let _ = heartbeat.await;
    drop(pid_file);
    gw.ledger.close().await;
    tracing::info!("settlegate stopped");
    Ok(())
}

/// Every lease time, judge what other nodes left unjudged.
async fn sweep(gw: Arc<Gateway>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(gw.config.lease) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = gw.recover_abandoned(&gateway_actor()).await {
            let e = gw.explain(e).await;
            tracing::error!(error = %e, "cannot look for files left unjudged");
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What is running, to compare a new configuration with.
struct Current<'a> {
    gw: &'a Gateway,
    watch: WatchSettings,
    sftp: Option<&'a SftpServerConfig>,
}

/// A configuration that passed the check, and what it changes.
struct Reloaded {
    checked: Checked,
    changes: Vec<String>,
}

/// Read and check the configuration again. `Err`: why it is refused (every
/// problem `check` finds, or a change only a restart can make).
async fn prepare_reload(
    source: &ReloadSource,
    current: &Current<'_>,
) -> Result<Reloaded, Vec<String>> {
    let src = source.clone();
    let checked =
        tokio::task::spawn_blocking(move || check_config(src.path.as_deref(), &src.overrides))
            .await
            .map_err(|e| vec![format!("the check did not finish: {e}")])?
            .map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let old = &current.gw.config;
    let new = &checked.config;
    let mut refused = Vec::new();
    if new.data_dir != old.data_dir {
        refused.push(format!(
            "data_dir changed ({} → {}): only a restart moves the data directory",
            old.data_dir.display(),
            new.data_dir.display()
        ));
    }
    if new.ledger != old.ledger {
        refused.push("ledger changed: only a restart opens another ledger".to_string());
    }
    if old.console.as_ref().map(|c| c.listen) != new.console.as_ref().map(|c| c.listen) {
        refused.push(
            "[console] added, removed or moved: only a restart starts, stops or moves the console"
                .to_string(),
        );
    }
    if current.sftp.is_some() != checked.channels.sftp_server.is_some() {
        refused.push(
            "[sftp_server] added or removed: only a restart starts or stops the SFTP server"
                .to_string(),
        );
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    let changes = changes(current, &checked);
    Ok(Reloaded { checked, changes })
}

/// What a new configuration changes, one line each (names only, never a
/// secret).
fn changes(current: &Current<'_>, checked: &Checked) -> Vec<String> {
    let mut out = Vec::new();
    let (old, new) = (&current.gw.config, &checked.config);
    for p in &new.partners {
        match old.partner(&p.id) {
            None => out.push(format!("partner {} added", p.id)),
            Some(o) if format!("{o:?}") != format!("{p:?}") => {
                out.push(format!("partner {} changed", p.id))
            }
            Some(_) => {}
        }
    }
    for p in &old.partners {
        if new.partner(&p.id).is_none() {
            out.push(format!("partner {} removed", p.id));
        }
    }
    for f in checked.formats.iter() {
        match current.gw.formats.get(&f.id) {
            None => out.push(format!("format {} added", f.id)),
            Some(o) if format!("{o:?}") != format!("{f:?}") => {
                out.push(format!("format {} changed", f.id))
            }
            Some(_) => {}
        }
    }
    for f in current.gw.formats.iter() {
        if checked.formats.get(&f.id).is_none() {
            out.push(format!("format {} removed", f.id));
        }
    }
    if let (Some(o), Some(n)) = (current.sftp, &checked.channels.sftp_server) {
        for a in &n.accounts {
            match o.account(&a.user) {
                None => out.push(format!(
                    "sftp account {} (partner {}) added",
                    a.user, a.partner
                )),
                Some(b)
                    if b.partner != a.partner
                        || b.keys != a.keys
                        || b.password_hash.as_ref().map(|h| h.expose())
                            != a.password_hash.as_ref().map(|h| h.expose()) =>
                {
                    out.push(format!("sftp account {} changed", a.user))
                }
                Some(_) => {}
            }
        }
        for a in &o.accounts {
            if n.account(&a.user).is_none() {
                out.push(format!("sftp account {} removed", a.user));
            }
        }
    }
    if let (Some(o), Some(n)) = (&old.console, &new.console) {
        for op in &n.operators {
            match o.operator(&op.login) {
                None => out.push(format!("console operator {} added", op.login)),
                Some(p) if p.role != op.role || p.password_hash != op.password_hash => {
                    out.push(format!("console operator {} changed", op.login))
                }
                Some(_) => {}
            }
        }
        for op in &o.operators {
            if n.operator(&op.login).is_none() {
                out.push(format!("console operator {} removed", op.login));
            }
        }
    }
    if current.watch != checked.channels.watch {
        out.push("[watch] changed".to_string());
    }
    if out.is_empty() {
        out.push("nothing changed".to_string());
    }
    out
}

/// SIGHUP, as a stream (`None` where there is no such signal).
fn hangups() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: reload is off");
            None
        }
    }
}

async fn next_hangup(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The name of the pid file in the data dir.
pub const PID_FILE: &str = "serve.pid";

/// `<data_dir>/serve.pid` while `serve` runs: `settlegate reload` reads it.
/// Removed at exit when it still names this process (another `serve` on the
/// same data dir may have written it since).
struct PidFile(PathBuf);

impl PidFile {
    fn write(data_dir: &std::path::Path) -> Option<PidFile> {
        let path = data_dir.join(PID_FILE);
        let tmp = data_dir.join(format!(".{PID_FILE}.{}", std::process::id()));
        let written = std::fs::write(&tmp, format!("{}\n", std::process::id()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => Some(PidFile(path)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the pid file: settlegate reload will not find this process (SIGHUP still reloads)");
                None
            }
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The pid of the `serve` running on `data_dir`, from its pid file.
pub fn running_pid(data_dir: &std::path::Path) -> Result<i32, String> {
    let path = data_dir.join(PID_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no running serve found: cannot read {}: {e}",
            path.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{} does not hold a process id", path.display()))?;
    // Signal 0: is there such a process (ours to signal)?
    // SAFETY: kill with signal 0 only checks.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return Err(format!(
            "{} names pid {pid}, which is not running (a serve that was killed?)",
            path.display()
        ));
    }
    Ok(pid)
}

/// Ask the `serve` with this pid to reload.
pub fn signal_reload(pid: i32) -> std::io::Result<()> {
    // SAFETY: sends SIGHUP to one process id.
    if unsafe { libc::kill(pid, libc::SIGHUP) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

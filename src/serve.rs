//! `settlegate serve`: every configured channel in one process, until a
//! shutdown signal. In-flight intakes finish (a feed is one transaction, so
//! an interrupted one is rolled back, never half-applied); files staged but
//! not judged by an earlier run are judged at start.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::channels::ChannelSettings;
use crate::channels::watch::{Direction, Inbox, run_inbox};
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
    #[error("metrics: cannot listen on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Run until `shutdown` completes.
pub async fn serve(
    config: Config,
    channels: ChannelSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let settings = channels.watch;
    let gw = Arc::new(Gateway::open(config, Arc::new(SystemClock)).await?);
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
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
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
    if let Some(settings) = channels.sftp_server {
        let server = crate::channels::sftp_server::SftpServer::bind(gw.clone(), settings).await?;
        tracing::info!(
            listen = %server.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            host_key = %server.fingerprint,
            "channel sftp-push (sftp server)"
        );
        tasks.spawn(
            gw.telemetry
                .track("sftp-server".into(), server.run(stop_rx.clone())),
        );
    }
    if let Some(m) = &cfg.metrics {
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
        tasks.spawn(crate::http::run(gw.clone(), listener, stop_rx.clone()));
    }
    tracing::info!("settlegate serving");

    shutdown.await;
    tracing::info!("shutting down: finishing in-flight files");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    drop(watcher);
    gw.ledger.close().await;
    tracing::info!("settlegate stopped");
    Ok(())
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

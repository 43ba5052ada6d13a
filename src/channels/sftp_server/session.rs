//! One SSH connection: authentication against the partner accounts, the
//! failed-login limit, the per-partner session cap, and nothing but the
//! `sftp` subsystem (no shell, exec, pty, forwarding, agent or X11).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use russh::keys::Algorithm;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet};

use super::Shared;
use super::config::Account;
use super::limits::{NotChecked, PreAuthSlot, SessionSlot};
use super::sftp::SftpSession;
use super::upload::Peer;
use super::wire;

/// When the session last did something, and whether a request is running;
/// the idle watchdog reads it.
#[derive(Debug)]
pub struct Activity {
    last: Mutex<Instant>,
    busy: AtomicUsize,
    /// The partner once logged in (for log lines).
    partner: Mutex<String>,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            last: Mutex::new(Instant::now()),
            busy: AtomicUsize::new(0),
            partner: Mutex::new(String::new()),
        })
    }

    pub fn partner(&self) -> String {
        self.partner.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Whether the connection has logged in.
    pub fn is_authenticated(&self) -> bool {
        self.partner.lock().map(|p| !p.is_empty()).unwrap_or(false)
    }

    /// Mark a request as running until the guard drops.
    pub fn busy(self: &Arc<Activity>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Whether a request is running.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    /// How long the session has been idle (zero while a request runs).
    pub fn idle_for(&self) -> std::time::Duration {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return std::time::Duration::ZERO;
        }
        self.last.lock().map(|t| t.elapsed()).unwrap_or_default()
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last.lock() {
            *t = Instant::now();
        }
    }
}

pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Ssh(#[from] russh::Error),
}

/// The russh handler of one connection: an adapter from SSH callbacks to
/// the account table, the limits and the SFTP session.
pub struct Connection {
    shared: Arc<Shared>,
    addr: SocketAddr,
    pub activity: Arc<Activity>,
    /// Set once authenticated.
    account: Option<Account>,
    slot: Option<SessionSlot>,
    /// Held until the login: counts this connection among those not yet
    /// logged in.
    pre_auth: Option<PreAuthSlot>,
    /// Session channels not yet turned into a subsystem.
    channels: Vec<Channel<Msg>>,
    /// Keys offered that are not authorized. A client with several keys
    /// (an agent, default identity files) offers them in turn: only a
    /// connection that ends without logging in counts one failure for them.
    unknown_key: Option<String>,
    sftp_started: bool,
}

impl Connection {
    pub fn new(shared: Arc<Shared>, addr: SocketAddr, pre_auth: PreAuthSlot) -> Connection {
        Connection {
            shared,
            addr,
            activity: Activity::new(),
            account: None,
            slot: None,
            pre_auth: Some(pre_auth),
            channels: Vec::new(),
            unknown_key: None,
            sftp_started: false,
        }
    }

    /// The partner of a user name, for log lines ("" when unknown).
    fn partner_of(&self, user: &str) -> String {
        self.shared
            .settings()
            .account(user)
            .map(|a| a.partner.clone())
            .unwrap_or_default()
    }

    /// Log a refused request of a logged-in session (or of a connection).
    fn refused(&self, what: &str) {
        let (partner, user) = match &self.account {
            Some(a) => (a.partner.as_str(), a.user.as_str()),
            None => ("", ""),
        };
        tracing::warn!(partner, user, addr = %self.addr, "refused: {what}");
    }

    fn reject_all() -> Auth {
        Auth::reject()
    }

    /// An RSA key signing with SHA-1: say what the partner should use.
    fn refused_sha1(&self, user: &str) {
        tracing::warn!(partner = %self.partner_of(user), user = %user.escape_debug(), addr = %self.addr, "refused: ssh-rsa (SHA-1) signature; RSA keys must sign with rsa-sha2-256 or rsa-sha2-512 (OpenSSH 7.2 or later, PuTTY 0.75, paramiko 2.9)");
    }

    /// Log a failed login and whether it blocked the address.
    fn failed(&self, user: &str, method: &str, why: &str, blocked: bool) {
        let partner = self.partner_of(user);
        tracing::warn!(partner = %partner, user = %user.escape_debug(), addr = %self.addr, method, "refused: login failed ({why})");
        if blocked {
            tracing::warn!(addr = %self.addr, user = %user.escape_debug(), partner = %partner, block_seconds = self.shared.settings().login_limit.block.as_secs(), "refused: too many failed logins; address blocked");
        }
    }

    /// Begin checking a login: refused (and logged) when the address is
    /// blocked or already has as many failures and checks running as the
    /// limit allows. Failures are counted under one lock, so parallel
    /// connections cannot try more passwords than `max_failed_logins`.
    fn begin_check(&self, user: &str, method: &str) -> bool {
        let r = self
            .shared
            .failed_logins
            .lock()
            .map(|mut f| f.begin_check(self.addr.ip(), Instant::now()))
            .unwrap_or(Err(NotChecked::AtLimit));
        match r {
            Ok(()) => true,
            Err(NotChecked::Blocked) => {
                tracing::warn!(user = %user.escape_debug(), addr = %self.addr, method, "refused: address blocked after failed logins");
                false
            }
            Err(NotChecked::AtLimit) => {
                tracing::warn!(user = %user.escape_debug(), addr = %self.addr, method, "refused: failed logins and logins being checked from this address reach max_failed_logins");
                false
            }
        }
    }

    fn end_check(&self, ok: bool) -> bool {
        self.shared
            .failed_logins
            .lock()
            .map(|mut f| f.end_check(self.addr.ip(), Instant::now(), ok))
            .unwrap_or(false)
    }

    fn blocked(&self) -> bool {
        self.shared
            .failed_logins
            .lock()
            .map(|mut f| f.blocked(self.addr.ip(), Instant::now()).is_some())
            .unwrap_or(false)
    }

    /// Accept `account` unless its partner is at its session cap.
    fn admit(&mut self, account: &Account, method: &str) -> Auth {
        let max = self.shared.settings().max_sessions_per_partner;
        match self.shared.sessions.try_take(&account.partner, max) {
            Some(slot) => {
                tracing::info!(partner = %account.partner, user = %account.user, addr = %self.addr, method, "sftp login");
                self.slot = Some(slot);
                self.pre_auth = None;
                self.unknown_key = None;
                if let Ok(mut p) = self.activity.partner.lock() {
                    *p = account.partner.clone();
                }
                self.account = Some(account.clone());
                Auth::Accept
            }
            None => {
                tracing::warn!(partner = %account.partner, user = %account.user, addr = %self.addr, max_sessions = max, "refused: partner already has the maximum number of sessions");
                Self::reject_all()
            }
        }
    }
}

impl Drop for Connection {
    /// A connection that offered only keys not authorized and never logged
    /// in counts as one failed login.
    fn drop(&mut self) {
        if self.account.is_none()
            && let Some(user) = self.unknown_key.take()
        {
            let blocked = self
                .shared
                .failed_logins
                .lock()
                .map(|mut f| f.fail(self.addr.ip(), Instant::now()))
                .unwrap_or(false);
            self.failed(
                &user,
                "publickey",
                "no offered key is authorized for this user",
                blocked,
            );
        }
    }
}

impl russh::server::Handler for Connection {
    type Error = SessionError;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        let mut methods = MethodSet::empty();
        methods.push(MethodKind::PublicKey);
        if self
            .shared
            .settings()
            .accounts
            .iter()
            .any(|a| a.password_hash.is_some())
        {
            methods.push(MethodKind::Password);
        }
        Ok(Auth::Reject {
            proceed_with_methods: Some(methods),
            partial_success: false,
        })
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.blocked() {
            tracing::warn!(user = %user.escape_debug(), addr = %self.addr, "refused: address blocked after failed logins");
            return Ok(Self::reject_all());
        }
        if *offer.algorithm == (Algorithm::Rsa { hash: None }) {
            self.refused_sha1(user);
            return Ok(Self::reject_all());
        }
        let known = self.shared.settings().account(user).is_some_and(|a| {
            a.keys
                .iter()
                .any(|k| k.key_data() == offer.public_key.key_data())
        });
        if known {
            return Ok(Auth::Accept);
        }
        // Not a failure yet: a client with several keys tries the next.
        tracing::debug!(user = %user.escape_debug(), addr = %self.addr, "offered key not authorized for this user");
        self.unknown_key = Some(user.to_string());
        Ok(Self::reject_all())
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if *key.algorithm == (Algorithm::Rsa { hash: None }) {
            self.refused_sha1(user);
            return Ok(Self::reject_all());
        }
        if !self.begin_check(user, "publickey") {
            return Ok(Self::reject_all());
        }
        let account = self
            .shared
            .settings()
            .account(user)
            .filter(|a| {
                a.keys
                    .iter()
                    .any(|k| k.key_data() == key.public_key.key_data())
            })
            .cloned();
        match account {
            Some(a) => {
                self.end_check(true);
                Ok(self.admit(&a, "publickey"))
            }
            None => {
                let blocked = self.end_check(false);
                self.failed(
                    user,
                    "publickey",
                    "key not authorized for this user",
                    blocked,
                );
                Ok(Self::reject_all())
            }
        }
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if !self.begin_check(user, "password") {
            return Ok(Self::reject_all());
        }
        let account = self.shared.settings().account(user).cloned();
        let Some(hash) = account.as_ref().and_then(|a| a.password_hash.clone()) else {
            let blocked = self.end_check(false);
            self.failed(user, "password", "no password login for this user", blocked);
            return Ok(Self::reject_all());
        };
        let password = password.to_string();
        // argon2 is deliberately slow: off the async threads.
        let ok = tokio::task::spawn_blocking(move || {
            crate::auth::verify_password(hash.expose(), &password)
        })
        .await
        .unwrap_or(false);
        let blocked = self.end_check(ok);
        match (ok, account) {
            (true, Some(a)) => Ok(self.admit(&a, "password")),
            _ => {
                self.failed(user, "password", "wrong password", blocked);
                Ok(Self::reject_all())
            }
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::UnsupportedMethod)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.account.is_none() || self.channels.len() >= 4 {
            self.refused("another session channel (at most 4)");
            return Ok(());
        }
        self.channels.push(channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let pos = self.channels.iter().position(|c| c.id() == channel_id);
        let (Some(account), Some(pos), "sftp") = (self.account.clone(), pos, name) else {
            self.refused(&format!("subsystem other than sftp: {name:?}"));
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        if self.sftp_started {
            tracing::warn!(partner = %account.partner, addr = %self.addr, "refused: a second sftp subsystem in one session");
            session.channel_failure(channel_id)?;
            return Ok(());
        }
        self.sftp_started = true;
        let channel = self.channels.swap_remove(pos);
        let peer = Peer {
            partner: account.partner.clone(),
            user: account.user.clone(),
            addr: self.addr,
        };
        let mut sftp = SftpSession::new(
            self.shared.uploads.clone(),
            peer,
            self.shared.settings().max_file_bytes,
            self.activity.clone(),
        );
        session.channel_success(channel_id)?;
        let (partner, addr) = (account.partner.clone(), self.addr);
        tokio::spawn(async move {
            let malformed = |id: u32, why: &str| {
                tracing::warn!(partner = %partner, addr = %addr, request_id = id, error = %why.escape_debug(), "refused: malformed SFTP request");
            };
            // Writes are at most 256 KiB of data (OpenSSH sends 32 KiB).
            let max = super::sftp::MAX_PACKET;
            if let Err(e) = wire::serve(channel.into_stream(), &mut sftp, max, malformed).await {
                tracing::warn!(partner = %partner, addr = %addr, error = %e, "sftp session ended");
            }
            drop(sftp);
            super::allocator::give_back();
        });
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.close(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refused("exec");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refused("shell");
        session.channel_failure(channel)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refused("pty");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refused("X11 forwarding");
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refused(&format!("environment variable {variable_name:?}"));
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refused("agent forwarding");
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refused(&format!(
            "remote port forwarding {:?}",
            format!("{address}:{port}")
        ));
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refused(&format!("remote socket forwarding {socket_path:?}"));
        Ok(false)
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        _reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refused(&format!(
            "port forwarding to {:?}",
            format!("{host_to_connect}:{port_to_connect}")
        ));
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        _reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refused(&format!("socket forwarding to {socket_path:?}"));
        Ok(())
    }
}

//! `[console]`: the operator console `serve` answers in the browser, and
//! `[[console.operators]]`, the people who log in to it. Password hashes
//! are argon2 PHC strings, checked here before anything listens.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

pub use crate::auth::LoginLimit;
use crate::auth::{PasswordHash, parse_password_hash};

/// Defaults, as documented in the sample configuration.
pub const DEFAULT_IDLE_MINUTES: u64 = 30;
pub const DEFAULT_MAX_FAILED_LOGINS: u32 = 5;
pub const DEFAULT_FAILED_LOGIN_WINDOW: u64 = 60;
pub const DEFAULT_FAILED_LOGIN_BLOCK: u64 = 300;

/// `[console]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    /// Address to listen on, e.g. `127.0.0.1:8080`. Required.
    listen: String,
    /// Mark the session cookie `Secure` (set it when a TLS proxy fronts the
    /// console). Default false.
    secure_cookies: Option<bool>,
    /// Minutes without a request after which a session ends. Default 30.
    idle_minutes: Option<u64>,
    /// Failed logins from one address within `failed_login_window_seconds`
    /// that block it. Default 5.
    max_failed_logins: Option<u32>,
    /// Default 60.
    failed_login_window_seconds: Option<u64>,
    /// How long a blocked address stays blocked. Default 300.
    failed_login_block_seconds: Option<u64>,
    #[serde(default)]
    operators: Vec<RawOperator>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    login: String,
    /// An argon2 PHC string (`settlegate hash-password`). Never a password.
    password_hash: String,
    /// `viewer` (reads) or `operator` (reads and acts).
    role: String,
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads every page; no action.
    Viewer,
    /// Reads and acts (overrides, approvals), through the same operator
    /// actions as the command line.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "role {other:?} is not one of \"viewer\", \"operator\""
            )),
        }
    }
}

/// One console login.
#[derive(Debug, Clone)]
pub struct ConsoleOperator {
    pub login: String,
    pub password_hash: PasswordHash,
    pub role: Role,
}

/// The validated `[console]` section.
#[derive(Debug, Clone)]
pub struct Console {
    pub listen: SocketAddr,
    pub secure_cookies: bool,
    pub idle: Duration,
    pub login_limit: LoginLimit,
    pub operators: Vec<ConsoleOperator>,
}

impl Console {
    pub fn operator(&self, login: &str) -> Option<&ConsoleOperator> {
        self.operators.iter().find(|o| o.login == login)
    }
}

pub(super) fn build_console(raw: RawConsole) -> Result<Console, Vec<String>> {
    let mut problems = Vec::new();
    let listen = raw.listen.parse::<SocketAddr>().unwrap_or_else(|e| {
        problems.push(format!(
            "listen {:?} is not an address such as 127.0.0.1:8080 ({e})",
            raw.listen
        ));
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let idle_minutes = raw.idle_minutes.unwrap_or(DEFAULT_IDLE_MINUTES);
    if !(1..=24 * 60).contains(&idle_minutes) {
        problems.push(format!(
            "idle_minutes: {idle_minutes} is not from 1 to 1440"
        ));
    }
    let max_failures = raw.max_failed_logins.unwrap_or(DEFAULT_MAX_FAILED_LOGINS);
    if max_failures == 0 {
        problems.push("max_failed_logins must be at least 1".into());
    }
    let mut operators: Vec<ConsoleOperator> = Vec::new();
    for o in raw.operators {
        let ctx = format!("operator {:?}", o.login);
        let valid_login = !o.login.is_empty()
            && o.login.len() <= 64
            && o.login
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
        if !valid_login {
            problems.push(format!(
                "{ctx}: login must be 1 to 64 letters, digits, '.', '_', '-' or '@'"
            ));
            continue;
        }
        if operators.iter().any(|p| p.login == o.login) {
            problems.push(format!("{ctx}: defined twice"));
            continue;
        }
        let role = match Role::parse(&o.role) {
            Ok(r) => r,
            Err(m) => {
                problems.push(format!("{ctx}: {m}"));
                continue;
            }
        };
        match parse_password_hash(o.password_hash) {
            Ok(password_hash) => operators.push(ConsoleOperator {
                login: o.login,
                password_hash,
                role,
            }),
            Err(m) => problems.push(format!("{ctx}: {m}")),
        }
    }
    if problems.is_empty() {
        Ok(Console {
            listen,
            secure_cookies: raw.secure_cookies.unwrap_or(false),
            idle: Duration::from_secs(idle_minutes * 60),
            login_limit: LoginLimit {
                max_failures,
                window: Duration::from_secs(
                    raw.failed_login_window_seconds
                        .unwrap_or(DEFAULT_FAILED_LOGIN_WINDOW),
                ),
                block: Duration::from_secs(
                    raw.failed_login_block_seconds
                        .unwrap_or(DEFAULT_FAILED_LOGIN_BLOCK),
                ),
            },
            operators,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$rgGjAXRL6tHhw7WP3sRznjvGDwjGvOdGCtY8R6q4UBo";

    fn build(text: &str) -> Result<Console, Vec<String>> {
        build_console(toml::from_str(text).expect("toml"))
    }

    #[test]
    fn defaults_and_operators() {
        let c = build(&format!(
            "listen = \"127.0.0.1:8080\"\n[[operators]]\nlogin = \"kim\"\npassword_hash = \"{HASH}\"\nrole = \"operator\"\n"
        ))
        .unwrap();
        assert_eq!(c.idle, Duration::from_secs(1800));
        assert!(!c.secure_cookies);
        assert_eq!(c.login_limit.max_failures, 5);
        assert_eq!(c.operator("kim").map(|o| o.role), Some(Role::Operator));
        assert!(!format!("{c:?}").contains("argon2id"), "hash hidden");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, needle) in [
            ("listen = \"localhost\"", "listen \"localhost\""),
            (
                "listen = \"127.0.0.1:1\"\n[[operators]]\nlogin = \"a\"\npassword_hash = \"hunter2\"\nrole = \"viewer\"",
                "not a PHC string",
            ),
            (
                &format!(
                    "listen = \"127.0.0.1:1\"\n[[operators]]\nlogin = \"a\"\npassword_hash = \"{HASH}\"\nrole = \"admin\""
                ),
                "role \"admin\"",
            ),
            (
                &format!(
                    "listen = \"127.0.0.1:1\"\n[[operators]]\nlogin = \"a b\"\npassword_hash = \"{HASH}\"\nrole = \"viewer\""
                ),
                "login must be",
            ),
            ("listen = \"127.0.0.1:1\"\nidle_minutes = 0", "idle_minutes"),
        ] {
            let e = build(text).unwrap_err().join("; ");
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}

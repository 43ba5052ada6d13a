//! Console logins and sessions. A session is a random token in an
//! `HttpOnly`, `SameSite=Strict` cookie; the ledger keeps only its SHA-256,
//! with the login, role, CSRF token and when it was last seen, so any
//! gateway process sharing the ledger answers the same browser and a
//! logout ends the session everywhere. Tokens and passwords are never
//! logged.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::Role;

/// The session cookie's name.
pub const COOKIE: &str = "settlegate_console";

/// Who is logged in, for one request.
#[derive(Debug, Clone)]
pub struct User {
    pub login: String,
    /// From the configuration of the moment (a reload may have changed it).
    pub role: Role,
    /// The token this session's forms carry.
    pub csrf: String,
    /// The session token's hash (the ledger's key for it).
    pub token_hash: String,
}

impl User {
    /// The actor recorded in the ledger: the same form as the command
    /// line's, so four-eyes compares a console login with a CLI operator.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.login)
    }
}

/// 32 random bytes, hex.
pub fn random_token() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The login form's cookie: a random token the form carries back as well
/// (double submit), so another site cannot log a browser in under its own
/// account (login CSRF).
pub const LOGIN_COOKIE: &str = "settlegate_login";

/// The session token from the request's cookies.
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, COOKIE)
}

/// The login form's token from the request's cookies.
pub fn login_token(headers: &HeaderMap) -> Option<String> {
    cookie(headers, LOGIN_COOKIE)
}

/// A token cookie (64 hex digits) by name.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value for a new session (`None`: one that ends it).
pub fn set_cookie(token: Option<&str>, secure: bool) -> String {
    cookie_header(COOKIE, "/", token, secure)
}

/// The `Set-Cookie` value for the login form's token (`None`: removed once
/// logged in).
pub fn set_login_cookie(token: Option<&str>, secure: bool) -> String {
    cookie_header(LOGIN_COOKIE, "/login", token, secure)
}

fn cookie_header(name: &str, path: &str, token: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match token {
        Some(t) => format!("{name}={t}; Path={path}; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{name}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Compare two tokens in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_read_back_and_marked() {
        let t = random_token().unwrap();
        assert_eq!(t.len(), 64);
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("other=1; {COOKIE}={t}; x=y").parse().unwrap(),
        );
        assert_eq!(session_token(&h), Some(t.clone()));
        let mut bad = HeaderMap::new();
        bad.insert(
            axum::http::header::COOKIE,
            format!("{COOKIE}=../../etc").parse().unwrap(),
        );
        assert_eq!(session_token(&bad), None);
        let c = set_cookie(Some(&t), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie(Some(&t), false).contains("Secure"));
        assert!(set_cookie(None, false).contains("Max-Age=0"));
        assert_ne!(token_hash(&t), t);
        assert!(same_token(&t, &t.clone()));
        assert!(!same_token(&t, &random_token().unwrap()));
        assert!(!same_token(&t, ""));
    }
}

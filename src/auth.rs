//! Logins shared by the SFTP server and the operator console: argon2 PHC
//! password hashes (checked when the configuration is read, verified off
//! the async threads) and the failed-login limit per source address.

/// Failed-login rate limit per source address (the SFTP server's and the
/// console's; both count with `channels::sftp_server::limits::FailedLogins`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimit {
    pub max_failures: u32,
    pub window: std::time::Duration,
    pub block: std::time::Duration,
}

/// An argon2 PHC string. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl PasswordHash {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `password` matches. argon2 is deliberately slow: call from a
    /// blocking thread ([`PasswordHash::verify_blocking`] does).
    pub fn verify(&self, password: &str) -> bool {
        verify_password(&self.0, password)
    }

    /// [`PasswordHash::verify`] on a blocking thread.
    pub async fn verify_blocking(&self, password: String) -> bool {
        let hash = self.0.clone();
        tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false)
    }
}

/// Check that `text` is an argon2 PHC string (never a plain password).
pub fn check_password_hash(text: &str) -> Result<(), String> {
    match argon2::PasswordHash::new(text) {
        Err(e) => Err(format!("password_hash is not a PHC string ({e})")),
        Ok(parsed) if !parsed.algorithm.as_str().starts_with("argon2") => Err(format!(
            "password_hash must be argon2 (found {})",
            parsed.algorithm
        )),
        Ok(_) => Ok(()),
    }
}

/// A checked [`PasswordHash`].
pub fn parse_password_hash(text: String) -> Result<PasswordHash, String> {
    check_password_hash(&text).map(|()| PasswordHash(text))
}

/// A hash of no one's password with the default parameters: checked when a
/// login is unknown, so an unknown login takes as long as a wrong password
/// and the answer's timing does not tell which logins exist.
pub const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2V0dGxlZ2F0ZWRlY295$0Fr2Ql6Hhl2m6m2z3sN4d1rUpQ3jz0cFq1kq0u9Zq8E";

/// Whether `password` matches the PHC string `hash` (its own parameters).
pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::PasswordVerifier;
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_checked_and_verified() {
        use argon2::PasswordHasher;
        let hash = argon2::Argon2::default()
            .hash_password_with_salt(b"s3cret", b"0123456789abcdef")
            .unwrap()
            .to_string();
        let h = parse_password_hash(hash).unwrap();
        assert!(h.verify("s3cret"));
        assert!(!h.verify("s3cret "));
        assert_eq!(format!("{h:?}"), "<secret>");
        assert!(parse_password_hash("hunter2".into()).is_err());
        // The decoy is a real argon2id hash with the default parameters.
        assert_eq!(check_password_hash(DECOY_HASH), Ok(()));
        assert!(DECOY_HASH.contains("m=19456,t=2,p=1"));
        assert!(!verify_password(DECOY_HASH, ""));
        assert!(
            check_password_hash("$pbkdf2-sha256$i=1000$c29tZXNhbHRzYWx0$aGFzaGhhc2hoYXNo")
                .unwrap_err()
                .contains("must be argon2")
        );
    }
}

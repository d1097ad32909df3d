//! Login sessions. `POST /login` issues an opaque random token (256 bits); the server keeps only
//! its SHA-256 with the user, the role, an expiry and a fingerprint of the user's secret, so a
//! session ends when it expires, when its user logs out (`POST /logout`), or when the user is
//! removed or gets another password. With a file (the analyzer's store directory) sessions
//! survive a restart: the file is written (whole, then renamed, then synced) before the login
//! is answered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::User;

/// How long a session lasts when `auth.<name>.session_timeout` does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most sessions kept, in all and per user; the oldest go first.
const MAX_SESSIONS: usize = 10_000;
const MAX_PER_USER: usize = 64;

/// One session, as kept (and written to the file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Session {
    user: String,
    role: String,
    /// Unix seconds.
    created: i64,
    expires: i64,
    /// The user's secret when the session was made (hex SHA-256 of the stored hash).
    secret: String,
}

/// The sessions of one authentication backend.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    file: Option<PathBuf>,
    /// Keyed by the hex SHA-256 of the token.
    live: Mutex<HashMap<String, Session>>,
}

/// Why a session could not be saved.
#[derive(Debug, thiserror::Error)]
#[error("cannot save the sessions to {path}: {source}")]
pub struct SaveError {
    path: String,
    source: std::io::Error,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The hex SHA-256 of some bytes.
pub fn sha256_hex(b: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, b).as_ref())
}

impl Sessions {
    /// Sessions lasting `ttl`, kept in `file` when there is one (its sessions are read back;
    /// an unreadable file is said and started afresh).
    pub fn new(ttl: Duration, file: Option<PathBuf>) -> Sessions {
        let mut live = HashMap::new();
        if let Some(f) = &file {
            match std::fs::read(f) {
                Ok(bytes) => match serde_json::from_slice::<HashMap<String, Session>>(&bytes) {
                    Ok(m) => live = m,
                    Err(e) => tracing::warn!(
                        "{}: not a sessions file ({e}); every user logs in again",
                        f.display()
                    ),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("{}: {e}; every user logs in again", f.display()),
            }
        }
        let t = now();
        live.retain(|_, s| s.expires > t);
        Sessions {
            ttl,
            file,
            live: Mutex::new(live),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session for `user`, whose secret has this fingerprint; the token to give them.
    pub fn create(&self, user: &User, secret: &str) -> Result<String, SaveError> {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .expect("the system's random generator works");
        let token = hex(&raw);
        let t = now();
        let session = Session {
            user: user.name.clone(),
            role: user.role.clone(),
            created: t,
            expires: t.saturating_add(self.ttl.as_secs() as i64),
            secret: secret.to_string(),
        };
        let mut live = self.lock();
        live.retain(|_, s| s.expires > t);
        let theirs = live.values().filter(|s| s.user == user.name).count();
        for (count, max, own) in [
            (theirs, MAX_PER_USER, true),
            (live.len(), MAX_SESSIONS, false),
        ] {
            if count >= max
                && let Some(oldest) = live
                    .iter()
                    .filter(|(_, s)| !own || s.user == user.name)
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| k.clone())
            {
                live.remove(&oldest);
            }
        }
        live.insert(sha256_hex(token.as_bytes()), session);
        self.save(&live)?;
        Ok(token)
    }

    /// The user of a live session, with the fingerprint of their secret at login; `None` for
    /// a token that is not a session (or no longer one).
    pub fn get(&self, token: &str) -> Option<(User, String)> {
        let key = sha256_hex(token.as_bytes());
        let live = self.lock();
        let s = live.get(&key)?;
        (s.expires > now()).then(|| {
            (
                User {
                    name: s.user.clone(),
                    role: s.role.clone(),
                },
                s.secret.clone(),
            )
        })
    }

    /// Ends a session; whether there was one.
    pub fn remove(&self, token: &str) -> Result<bool, SaveError> {
        let mut live = self.lock();
        let found = live.remove(&sha256_hex(token.as_bytes())).is_some();
        if found {
            self.save(&live)?;
        }
        Ok(found)
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        let t = now();
        self.lock().values().filter(|s| s.expires > t).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn save(&self, live: &HashMap<String, Session>) -> Result<(), SaveError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let err = |source| SaveError {
            path: file.display().to_string(),
            source,
        };
        let tmp = file.with_extension("tmp");
        let body = serde_json::to_vec(live).map_err(|e| err(e.into()))?;
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            // Only the server reads it: it holds the tokens' hashes.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(err)?;
            f.write_all(&body).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, file).map_err(err)?;
        if let Some(dir) = file.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            name: "alice".into(),
            role: "guest".into(),
        }
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sessions.json");
        let s = Sessions::new(DEFAULT_TTL, Some(file.clone()));
        let a = s.create(&alice(), "f1").unwrap();
        let b = s.create(&alice(), "f1").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(s.get(&a), Some((alice(), "f1".to_string())));
        assert_eq!(s.get("nope"), None);
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains(&a) && text.contains(&sha256_hex(a.as_bytes())));
        // Read back after a restart; a removed session stays removed.
        assert!(s.remove(&b).unwrap());
        assert!(!s.remove(&b).unwrap());
        let again = Sessions::new(DEFAULT_TTL, Some(file));
        assert_eq!(again.get(&a).map(|u| u.0), Some(alice()));
        assert_eq!(again.get(&b), None);
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn sessions_expire() {
        let s = Sessions::new(Duration::ZERO, None);
        let t = s.create(&alice(), "f").unwrap();
        assert_eq!(s.get(&t), None);
        assert!(s.is_empty());
    }

    #[test]
    fn a_damaged_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sessions.json");
        std::fs::write(&file, b"{not json").unwrap();
        let s = Sessions::new(DEFAULT_TTL, Some(file));
        assert!(s.is_empty());
        let t = s.create(&alice(), "f").unwrap();
        assert!(s.get(&t).is_some());
    }
}

//! The `basic` backend's users: an htpasswd file (bcrypt or `{SHA}` entries, read again when
//! it changes) and inline `users: {name: password}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use serde_json::Value;

/// A stored secret of the basic backend.
#[derive(Debug, Clone)]
pub(super) enum Secret {
    /// Inline `users:` passwords.
    Plain(String),
    /// `$2a$`, `$2b$`, `$2y$` htpasswd entries.
    Bcrypt(String),
    /// `{SHA}base64(sha1(password))` htpasswd entries.
    Sha1([u8; 20]),
}

impl Secret {
    /// What identifies the secret without revealing it: the hex SHA-256 of its stored form.
    pub(super) fn fingerprint(&self) -> String {
        let stored = match self {
            Secret::Plain(p) => format!("plain:{p}"),
            Secret::Bcrypt(h) => format!("bcrypt:{h}"),
            Secret::Sha1(d) => format!("sha1:{d:?}"),
        };
        super::sessions::sha256_hex(stored.as_bytes())
    }

    pub(super) fn verify(&self, password: &str) -> bool {
        match self {
            Secret::Plain(p) => constant_time_eq(p.as_bytes(), password.as_bytes()),
            Secret::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Secret::Sha1(d) => {
                use sha1::Digest as _;
                let got: [u8; 20] = sha1::Sha1::digest(password.as_bytes()).into();
                constant_time_eq(&got, d)
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses an htpasswd file: `user:hash` lines; `#` comments and blank lines skipped.
fn parse_htpasswd(text: &str, path: &Path) -> anyhow::Result<HashMap<String, Secret>> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            anyhow::bail!("{}:{}: expected `user:hash`", path.display(), i + 1);
        };
        let secret = if hash.starts_with("$2a$")
            || hash.starts_with("$2b$")
            || hash.starts_with("$2y$")
        {
            Secret::Bcrypt(hash.to_string())
        } else if let Some(b64) = hash.strip_prefix("{SHA}") {
            let d = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("{}:{}: malformed {{SHA}} hash", path.display(), i + 1)
                })?;
            Secret::Sha1(d)
        } else {
            anyhow::bail!(
                "{}:{}: unsupported hash for user `{user}` (use bcrypt, `htpasswd -B`, or {{SHA}}, `htpasswd -s`)",
                path.display(),
                i + 1
            );
        };
        users.insert(user.to_string(), secret);
    }
    Ok(users)
}

/// The users of a basic backend; the file is read again when it changes.
#[derive(Debug)]
pub(super) struct Basic {
    inline: HashMap<String, Secret>,
    file: Option<PathBuf>,
    /// The file's users and the modification time they were read at.
    loaded: Mutex<(HashMap<String, Secret>, Option<SystemTime>)>,
    pub(super) role: String,
    /// A bcrypt hash per cost, for [`Basic::equalise`].
    dummies: Mutex<HashMap<u32, String>>,
}

impl Basic {
    /// What identifies the users' current version: the file's modification time.
    pub(super) fn generation(&self) -> Option<SystemTime> {
        let file = self.file.as_ref()?;
        std::fs::metadata(file).and_then(|m| m.modified()).ok()
    }

    /// Spends on a user who does not exist the time a bcrypt check of the file's cost takes,
    /// so that the answer's time does not tell which user names exist.
    pub(super) fn equalise(&self, password: &str) {
        let cost = {
            let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            loaded
                .0
                .values()
                .chain(self.inline.values())
                .find_map(|s| match s {
                    Secret::Bcrypt(h) => h.get(4..6).and_then(|c| c.parse::<u32>().ok()),
                    _ => None,
                })
        };
        let Some(cost) = cost else { return };
        let hash = {
            let mut dummies = self.dummies.lock().unwrap_or_else(|e| e.into_inner());
            match dummies.get(&cost) {
                Some(h) => h.clone(),
                None => {
                    let Ok(h) = bcrypt::hash("no such user", cost) else {
                        return;
                    };
                    dummies.insert(cost, h.clone());
                    h
                }
            }
        };
        let _ = bcrypt::verify(password, &hash);
    }

    pub(super) fn lookup(&self, user: &str) -> Option<Secret> {
        if let Some(file) = &self.file {
            let mtime = std::fs::metadata(file).and_then(|m| m.modified()).ok();
            let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            if mtime != loaded.1 {
                match std::fs::read_to_string(file)
                    .map_err(anyhow::Error::from)
                    .and_then(|t| parse_htpasswd(&t, file))
                {
                    Ok(users) => *loaded = (users, mtime),
                    // Keep the users read last; say why the new file is not taken.
                    Err(e) => tracing::warn!("{}: {e:#}", file.display()),
                }
            }
            if let Some(s) = loaded.0.get(user) {
                return Some(s.clone());
            }
        }
        self.inline.get(user).cloned()
    }
}

/// The users of an `auth.<name>` section of type `basic`.
pub(super) fn basic_from(section: &Value, name: &str) -> anyhow::Result<Basic> {
    let mut inline = HashMap::new();
    if let Some(users) = section.get("users") {
        let map = users.as_object().ok_or_else(|| {
            anyhow::anyhow!("auth.{name}.users: expected a map of user: password")
        })?;
        for (u, p) in map {
            let p = p
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("auth.{name}.users.{u}: expected a string"))?;
            inline.insert(u.clone(), Secret::Plain(p.to_string()));
        }
    }
    let file = match section.get("file") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            let path = PathBuf::from(s);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("auth.{name}.file: {}: {e}", path.display()))?;
            parse_htpasswd(&text, &path).map_err(|e| anyhow::anyhow!("auth.{name}.file: {e:#}"))?;
            Some(path)
        }
        Some(_) => anyhow::bail!("auth.{name}.file: expected a path"),
    };
    if inline.is_empty() && file.is_none() {
        anyhow::bail!("auth.{name}: a basic backend needs `file` (htpasswd) or `users`");
    }
    let role = section
        .get("role")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .unwrap_or("admin")
        .to_string();
    Ok(Basic {
        inline,
        file,
        loaded: Mutex::new((HashMap::new(), None)),
        role,
        dummies: Mutex::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_lines_give_bcrypt_and_sha_secrets() {
        let bcrypt_hash = bcrypt::hash("pw-one", 4).unwrap();
        let sha = {
            use sha1::Digest as _;
            base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(b"pw-two"))
        };
        let users = parse_htpasswd(
            &format!("# users\none:{bcrypt_hash}\n\ntwo:{{SHA}}{sha}\n"),
            Path::new("f"),
        )
        .unwrap();
        assert!(users["one"].verify("pw-one") && !users["one"].verify("pw-two"));
        assert!(users["two"].verify("pw-two") && !users["two"].verify("pw-one"));
        let e = parse_htpasswd("u:{SHA}short\n", Path::new("f")).unwrap_err();
        assert_eq!(e.to_string(), "f:1: malformed {SHA} hash");
        let e = parse_htpasswd("\nnocolon\n", Path::new("f")).unwrap_err();
        assert_eq!(e.to_string(), "f:2: expected `user:hash`");
    }
}

//! Who may use Ironic's API: HTTP basic auth by default, as Metal3's
//! ironic-image and Bifrost run a standalone Ironic. Anyone who reaches an
//! unauthenticated API can power-cycle and reimage every enrolled machine
//! through its BMC, so `noauth` has to be asked for by name.
//!
//! The password is `passwords.ironic` from `undercloud.yaml`, else the one
//! made up on an earlier boot (kept under /var/lib, which the persistence
//! partition carries), else a new random one. Ironic reads a bcrypt
//! htpasswd file; the stack user gets the plain password in
//! `~stack/undercloudrc` (mode 0600); tools running as root in the image
//! (`status`, `undercloud enroll`) read the root-only password file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The plain password, root only, relative to the root.
pub const PASSWORD_FILE: &str = "var/lib/undercloud/ironic-password";
/// What Ironic checks requests against: root:ironic 0640.
pub const HTPASSWD_FILE: &str = "/etc/ironic/htpasswd";

/// bcrypt's cost for the htpasswd entry: 2^8 rounds. Ironic checks the
/// hash on every request, and on an emulated CPU a cost of 12 took
/// seconds per call. A generated password has 128 bits of entropy, so the
/// cost adds nothing against guessing it; the file itself is readable only
/// by root and Ironic. (`htpasswd -B`, which Ironic's and Metal3's docs
/// use, defaults to 5.)
const BCRYPT_COST: u32 = 8;

/// One API user.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never the password, in any log or panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ username: {:?}, .. }}", self.username)
    }
}

/// Where the password came from: a new one is shown on the console once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Configured,
    Kept,
    Generated,
}

/// The API password: configured, else kept from an earlier boot, else
/// new (and then kept). `root` is the target root.
pub fn password(root: &Path, configured: &str) -> Result<(String, Origin)> {
    kept_secret(root, PASSWORD_FILE, configured, valid_password)
}

/// A secret that must survive reboots (the persistence partition carries
/// `file`, relative to `root`): `configured` when set; else the file's,
/// when `valid`; else 16 random bytes in hex, written to the file (0600).
pub fn kept_secret(
    root: &Path,
    file: &str,
    configured: &str,
    valid: fn(&str) -> bool,
) -> Result<(String, Origin)> {
    if !configured.is_empty() {
        return Ok((configured.to_string(), Origin::Configured));
    }
    let file = super::configure::in_root(root, file)?;
    match fs::read_to_string(&file) {
        Ok(t) if valid(t.trim()) => return Ok((t.trim().to_string(), Origin::Kept)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    }
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let secret = hex::encode(bytes);
    super::configure::write_file(&file, format!("{secret}\n").as_bytes(), 0o600, 0, 0)?;
    Ok((secret, Origin::Generated))
}

/// The htpasswd line Ironic reads (`user:$2b$...`).
pub fn htpasswd(c: &Credentials) -> Result<String> {
    let hash = bcrypt::hash(&c.password, BCRYPT_COST).context("hashing the API password")?;
    Ok(format!("{}:{hash}\n", c.username))
}

/// A user name that is safe in htpasswd, ini, shell and HTTP: 1-64 of
/// letters, digits, `.`, `_`, `-`.
pub fn valid_username(u: &str) -> bool {
    (1..=64).contains(&u.len())
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// 8-128 printable ASCII characters, no spaces at either end: anything a
/// shell, an HTTP header and a console line carry once quoted.
pub fn valid_password(p: &str) -> bool {
    (8..=128).contains(&p.len())
        && p.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && p.trim() == p
}

/// The credentials an API client in the image uses, in this order:
/// `OS_USERNAME` and `OS_PASSWORD` from the environment (a sourced
/// undercloudrc); the endpoints file's `auth=http_basic` user with the
/// root-only password file; none (`auth=noauth` or keystone, or no
/// endpoints file: not inside a configured undercloud).
pub fn for_client(endpoints: &BTreeMap<String, String>) -> Result<Option<Credentials>> {
    if let (Ok(username), Ok(password)) =
        (std::env::var("OS_USERNAME"), std::env::var("OS_PASSWORD"))
    {
        if !username.is_empty() {
            return Ok(Some(Credentials { username, password }));
        }
    }
    if endpoints.get("auth").map(String::as_str) != Some("http_basic") {
        return Ok(None);
    }
    let username = endpoints
        .get("user")
        .cloned()
        .unwrap_or_else(|| "admin".into());
    let file = Path::new("/").join(PASSWORD_FILE);
    match fs::read_to_string(&file) {
        Ok(t) => Ok(Some(Credentials {
            username,
            password: t.trim().to_string(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("Ironic's API needs a password: run as root, or source ~stack/undercloudrc first")
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_htpasswd_line_is_bcrypt_and_checks() {
        let c = Credentials {
            username: "admin".into(),
            password: "p$w'd \"x\"".into(),
        };
        let line = htpasswd(&c).unwrap();
        let (user, hash) = line.trim_end().split_once(':').unwrap();
        assert_eq!(user, "admin");
        // Ironic (oslo.middleware) accepts only these prefixes.
        assert!(hash.starts_with("$2b$08$"), "{hash}");
        assert!(bcrypt::verify(&c.password, hash).unwrap());
        assert!(!bcrypt::verify("wrong", hash).unwrap());
        assert!(!format!("{c:?}").contains("p$w"));
    }

    #[test]
    #[ignore = "needs root: gives files to the services' users (make test runs it)"]
    fn a_password_is_made_once_and_kept() {
        let root = tempfile::tempdir().unwrap();
        let (a, o) = password(root.path(), "").unwrap();
        assert_eq!(o, Origin::Generated);
        assert_eq!(a.len(), 32);
        let (b, o) = password(root.path(), "").unwrap();
        assert_eq!((b.as_str(), o), (a.as_str(), Origin::Kept));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(root.path().join(PASSWORD_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (c, o) = password(root.path(), "configured-one").unwrap();
        assert_eq!((c.as_str(), o), ("configured-one", Origin::Configured));
    }

    #[test]
    fn names_and_passwords() {
        assert!(valid_username("admin"));
        assert!(valid_username("ops.team-1"));
        for bad in ["", "a:b", "a b", "a\nb", "$(x)", &"a".repeat(65)] {
            assert!(!valid_username(bad), "{bad:?}");
        }
        assert!(valid_password("correct horse battery"));
        assert!(valid_password("$ecret'\"`;#\\"));
        for bad in [
            "short",
            " leading-space",
            "line\nbreak",
            "tab\tinside",
            "é-accent-é",
        ] {
            assert!(!valid_password(bad), "{bad:?}");
        }
    }
}

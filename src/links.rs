//! Signed links: how a message lets its reader act without an account.
//!
//! A token is `base64url(payload) "." base64url(HMAC-SHA256(key, payload))` where the payload is
//! `v1 \n staff id \n purpose \n item \n expiry (unix seconds)`. It lets its holder do exactly one
//! thing as one person: open and complete one assignment (`item`), open their own work page
//! (`mywork`), open and acknowledge one urgent concern (`concern`), or open the closing-the-loop
//! tracker (`tracker`). The key comes from `[web] link_key_file`; a previous key is still accepted during
//! rotation. Forms carry a CSRF token derived from the link token and the key (see
//! [`LinkKeys::csrf`]), so a page can only be posted by someone who was sent the page.
//!
//! **Invariant:** pure apart from [`load_or_create_key`]; never reads the clock (`now` is given).

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// What a link lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Open and complete one assignment.
    Item,
    /// Open one's own work page.
    MyWork,
    /// Open and acknowledge one urgent concern (`item` is the concern id).
    Concern,
    /// Open the closing-the-loop tracker (scoped by the holder's roles when used).
    Tracker,
    /// Open one action (`item` is the action id): its owner marks it done, its verifier
    /// verifies or reopens it (what the holder may do is decided by the domain when used).
    Action,
}

impl Purpose {
    /// The payload spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Item => "item",
            Purpose::MyWork => "mywork",
            Purpose::Concern => "concern",
            Purpose::Tracker => "tracker",
            Purpose::Action => "action",
        }
    }

    fn parse(text: &str) -> Option<Purpose> {
        match text {
            "item" => Some(Purpose::Item),
            "mywork" => Some(Purpose::MyWork),
            "concern" => Some(Purpose::Concern),
            "tracker" => Some(Purpose::Tracker),
            "action" => Some(Purpose::Action),
            _ => None,
        }
    }
}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The person it acts as.
    pub staff_id: String,
    /// What it allows.
    pub purpose: Purpose,
    /// The assignment (for [`Purpose::Item`]), concern (for [`Purpose::Concern`]) or action
    /// (for [`Purpose::Action`]).
    pub item: Option<i64>,
    /// When it stops working.
    pub expires: Timestamp,
}

/// Why a token was refused. Pages show one plain message for all of them (with a button to
/// ask for a fresh link); the variant is for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token qaloop makes.
    #[error("malformed link token")]
    Malformed,
    /// Made with another key, or changed.
    #[error("link token signature does not match")]
    BadSignature,
    /// Past its expiry.
    #[error("link token expired")]
    Expired,
}

/// A link key's bytes; Debug prints nothing.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    /// A key from its bytes (at least [`MIN_KEY_BYTES`]).
    pub fn new(bytes: Vec<u8>) -> Option<Key> {
        (bytes.len() >= MIN_KEY_BYTES).then_some(Key(bytes))
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        for part in parts {
            mac.update(part);
        }
        mac
    }
}

/// The keys links are signed and checked with.
#[derive(Debug, Clone)]
pub struct LinkKeys {
    /// Signs new links and checks them.
    current: Key,
    /// Still accepted (rotation), never used to sign.
    previous: Option<Key>,
    /// How long a new link works.
    pub days: u32,
}

impl LinkKeys {
    /// Keys for signing with `current`, also accepting `previous`; links last `days`.
    pub fn new(current: Key, previous: Option<Key>, days: u32) -> LinkKeys {
        LinkKeys {
            current,
            previous,
            days,
        }
    }

    /// A token granting `purpose` (on `item`) to `staff_id` until `expires`.
    pub fn sign(
        &self,
        staff_id: &str,
        purpose: Purpose,
        item: Option<i64>,
        expires: Timestamp,
    ) -> String {
        let payload = format!(
            "v1\n{staff_id}\n{}\n{}\n{}",
            purpose.as_str(),
            item.map(|i| i.to_string()).unwrap_or_default(),
            expires.as_second()
        );
        let tag = self
            .current
            .mac(&[payload.as_bytes()])
            .finalize()
            .into_bytes();
        format!("{}.{}", B64.encode(payload), B64.encode(tag))
    }

    /// A token for a link made at `now`: expires [`LinkKeys::days`] later.
    pub fn sign_from(
        &self,
        staff_id: &str,
        purpose: Purpose,
        item: Option<i64>,
        now: Timestamp,
    ) -> String {
        let expires = now
            .checked_add(jiff::SignedDuration::from_hours(24 * i64::from(self.days)))
            .unwrap_or(Timestamp::MAX);
        self.sign(staff_id, purpose, item, expires)
    }

    /// Checks `token` at `now` with the current key, then the previous one.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Grant, TokenError> {
        let (payload, tag) = split(token)?;
        let signed = std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .any(|key| key.mac(&[&payload]).verify_slice(&tag).is_ok());
        if !signed {
            return Err(TokenError::BadSignature);
        }
        let grant = parse_payload(&payload).ok_or(TokenError::Malformed)?;
        if now >= grant.expires {
            return Err(TokenError::Expired);
        }
        Ok(grant)
    }

    /// Who a token claims to be for, without trusting it: so an expired or damaged link can
    /// still offer to email that person a fresh one (which only they receive).
    pub fn claimed(token: &str) -> Option<Grant> {
        let (payload, _) = split(token).ok()?;
        parse_payload(&payload)
    }

    /// The CSRF token a page for link `token` carries in its forms: only a holder of the link
    /// who was served the page has it, and it cannot be made without the key.
    pub fn csrf(&self, token: &str) -> String {
        B64.encode(
            self.current
                .mac(&[b"csrf\n", token.as_bytes()])
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `given` is the CSRF token for link `token` (constant-time comparison; either
    /// key, so a rotation does not break a form that is open).
    pub fn check_csrf(&self, token: &str, given: &str) -> bool {
        let Ok(tag) = B64.decode(given) else {
            return false;
        };
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .any(|key| {
                key.mac(&[b"csrf\n", token.as_bytes()])
                    .verify_slice(&tag)
                    .is_ok()
            })
    }
}

fn split(token: &str) -> Result<(Vec<u8>, Vec<u8>), TokenError> {
    let (payload, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let payload = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
    let tag = B64.decode(tag).map_err(|_| TokenError::Malformed)?;
    Ok((payload, tag))
}

fn parse_payload(payload: &[u8]) -> Option<Grant> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split('\n');
    let (version, staff_id, purpose, item, expires) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if version != "v1" || parts.next().is_some() || staff_id.is_empty() {
        return None;
    }
    let purpose = Purpose::parse(purpose)?;
    let item = match (purpose, item) {
        (Purpose::Item | Purpose::Concern | Purpose::Action, i) => Some(i.parse().ok()?),
        (Purpose::MyWork | Purpose::Tracker, "") => None,
        (Purpose::MyWork | Purpose::Tracker, _) => return None,
    };
    Some(Grant {
        staff_id: staff_id.to_owned(),
        purpose,
        item,
        expires: Timestamp::from_second(expires.parse().ok()?).ok()?,
    })
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It could not be read or created.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// It holds too little.
    #[error("{0}: a link key needs at least {MIN_KEY_BYTES} bytes (64 hex digits)")]
    TooShort(String),
}

/// Reads the key in `path` (its bytes, surrounding whitespace ignored). When the file is
/// missing and `create` is set (the example configuration), writes 32 random bytes as hex with
/// mode 0600 first.
pub fn load_or_create_key(path: &Path, create: bool) -> Result<Key, KeyFileError> {
    let shown = path.display().to_string();
    let io = |e| KeyFileError::Io(shown.clone(), e);
    if create && !path.exists() {
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(io)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // Written whole under a private name, then linked into place: a process starting at the
        // same moment either finds no key (and links its own, which fails if ours won) or a
        // complete one — never a half-written file.
        let temp = path.with_extension(format!("tmp.{}.{}", std::process::id(), fastrand::u64(..)));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(format!("{hex}\n").as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::hard_link(&temp, path));
        let _ = std::fs::remove_file(&temp);
        match written {
            Ok(()) => {}
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let trimmed = bytes.trim_ascii().to_vec();
    Key::new(trimmed).ok_or(KeyFileError::TooShort(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> LinkKeys {
        LinkKeys::new(Key::new(vec![7; 32]).unwrap(), None, 30)
    }

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    #[test]
    fn a_token_grants_exactly_what_was_signed_until_it_expires() {
        let k = keys();
        let token = k.sign_from("TM1", Purpose::Item, Some(42), at("2027-06-01T00:00:00Z"));
        let grant = k.verify(&token, at("2027-06-30T23:59:59Z")).unwrap();
        assert_eq!(grant.staff_id, "TM1");
        assert_eq!(grant.purpose, Purpose::Item);
        assert_eq!(grant.item, Some(42));
        assert_eq!(
            k.verify(&token, at("2027-07-01T00:00:00Z")),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn changed_or_foreign_tokens_are_refused() {
        let k = keys();
        let now = at("2027-06-01T00:00:00Z");
        let token = k.sign_from("TM1", Purpose::Item, Some(42), now);
        // Change the item in the payload and keep the signature.
        let (_, tag) = token.split_once('.').unwrap();
        let forged_payload =
            B64.encode(format!("v1\nTM1\nitem\n43\n{}", (now.as_second() + 86_400)));
        assert_eq!(
            k.verify(&format!("{forged_payload}.{tag}"), now),
            Err(TokenError::BadSignature)
        );
        let other = LinkKeys::new(Key::new(vec![8; 32]).unwrap(), None, 30);
        assert_eq!(other.verify(&token, now), Err(TokenError::BadSignature));
        assert_eq!(k.verify("nonsense", now), Err(TokenError::Malformed));
        assert_eq!(k.verify("a.b.c", now), Err(TokenError::Malformed));
    }

    #[test]
    fn the_previous_key_is_accepted_during_rotation() {
        let old = keys();
        let token = old.sign_from("SL1", Purpose::MyWork, None, at("2027-06-01T00:00:00Z"));
        let rotated = LinkKeys::new(
            Key::new(vec![9; 32]).unwrap(),
            Some(Key::new(vec![7; 32]).unwrap()),
            30,
        );
        let grant = rotated.verify(&token, at("2027-06-02T00:00:00Z")).unwrap();
        assert_eq!((grant.purpose, grant.item), (Purpose::MyWork, None));
        assert!(rotated.check_csrf(&token, &old.csrf(&token)));
    }

    #[test]
    fn csrf_tokens_belong_to_one_link() {
        let k = keys();
        let now = at("2027-06-01T00:00:00Z");
        let a = k.sign_from("TM1", Purpose::Item, Some(1), now);
        let b = k.sign_from("TM1", Purpose::Item, Some(2), now);
        assert!(k.check_csrf(&a, &k.csrf(&a)));
        assert!(!k.check_csrf(&a, &k.csrf(&b)));
        assert!(!k.check_csrf(&a, ""));
        assert!(!k.check_csrf(&a, "not base64!"));
    }

    #[test]
    fn a_missing_key_file_is_created_private_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("link.key");
        assert!(load_or_create_key(&path, false).is_err());
        let key = load_or_create_key(&path, true).unwrap();
        let again = load_or_create_key(&path, true).unwrap();
        assert_eq!(key.0, again.0, "created once, then read");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            load_or_create_key(&path, false),
            Err(KeyFileError::TooShort(_))
        ));
    }
}

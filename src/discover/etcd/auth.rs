//! etcd authentication: a user name and password exchanged for a token
//! (`/v3/auth/authenticate`), the token sent as the raw `Authorization`
//! header of every call, and fetched again when etcd rejects it.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderValue;

/// A user's credentials and the token they were last exchanged for.
/// Neither the password nor the token is ever printed: `Debug` shows the
/// user name only.
#[derive(Clone)]
pub(crate) struct Auth {
    user: Arc<str>,
    password: Arc<str>,
    token: Arc<Mutex<Option<HeaderValue>>>,
}

impl Auth {
    pub(crate) fn new(user: &str, password: &str) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
            token: Arc::new(Mutex::new(None)),
        }
    }

    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The body of the authenticate call.
    pub(crate) fn request_body(&self) -> serde_json::Value {
        serde_json::json!({"name": &*self.user, "password": &*self.password})
    }

    /// The token of the last authentication, if it is still trusted.
    pub(crate) fn token(&self) -> Option<HeaderValue> {
        self.token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps `token` for the calls to come and returns it as a header
    /// value; `None` if etcd's token is not a valid header value.
    pub(crate) fn store(&self, token: &str) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(token).ok()?;
        value.set_sensitive(true);
        *self.token.lock().unwrap_or_else(PoisonError::into_inner) = Some(value.clone());
        Some(value)
    }

    /// Forgets the token (etcd rejected it, or it expired): the next call
    /// authenticates again.
    pub(crate) fn forget(&self, rejected: &HeaderValue) {
        let mut token = self.token.lock().unwrap_or_else(PoisonError::into_inner);
        if token.as_ref() == Some(rejected) {
            *token = None;
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("user", &self.user)
            .field("password", &crate::redact::REDACTED)
            .finish_non_exhaustive()
    }
}

/// Whether etcd's answer (HTTP status, gRPC code, message) says the token
/// is missing, expired or unknown: worth one fresh authentication.
/// etcd 3.4: code 16 `invalid auth token`; code 3 `user name is empty`
/// when a token that etcd forgot (a restart) is no token at all.
pub(crate) fn is_token_rejected(code: i32, message: &str) -> bool {
    code == 16
        || message.contains("invalid auth token")
        || message.contains("user name is empty")
        || message.contains("auth token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let auth = Auth::new("app", "canary-password");
        auth.store("canary-token.17");
        let printed = format!("{auth:?}");
        assert!(printed.contains("app"), "{printed}");
        assert!(!printed.contains("canary"), "{printed}");
        assert!(!format!("{:?}", auth.token()).contains("canary"));
    }

    #[test]
    fn forgets_only_the_rejected_token() {
        let auth = Auth::new("app", "pw");
        let old = auth.store("old").unwrap();
        let new = auth.store("new").unwrap();
        auth.forget(&old);
        assert_eq!(auth.token(), Some(new.clone()));
        auth.forget(&new);
        assert_eq!(auth.token(), None);
        assert!(auth.store("bad\ntoken").is_none());
    }

    #[test]
    fn recognizes_etcds_token_rejections() {
        assert!(is_token_rejected(16, "etcdserver: invalid auth token"));
        assert!(is_token_rejected(3, "etcdserver: user name is empty"));
        assert!(!is_token_rejected(7, "etcdserver: permission denied"));
        assert!(!is_token_rejected(
            3,
            "etcdserver: authentication failed, invalid user ID or password"
        ));
    }
}

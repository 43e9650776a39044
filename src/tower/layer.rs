//! [`OtpLayer`]: the gate as a tower [`Layer`].

use tower_layer::Layer;

use super::OtpService;
use crate::Gate;
use crate::http::{CookieSettings, Dialect, EndpointMount, Front, HttpSettings};

/// Adds OTP sign-in in front of a service; see the [module docs](super).
///
/// Made from a [`Front`] (the engine and its HTTP settings, e.g. from
/// [`Config::build`](crate::config::Config::build)) or a [`Gate`](crate::Gate) with the
/// default settings, and adjusted with the methods below for the common cases:
///
/// ```
/// use otpgate::Gate;
/// use otpgate::tower::OtpLayer;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = OtpLayer::with_defaults(Gate::builder().build()?)
///     .protect("/api/")
///     .endpoints_at("/login");
/// assert_eq!(layer.front().settings().protect[0].prefix, "/api/");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct OtpLayer {
    front: Front,
}

impl OtpLayer {
    /// A layer driven by `front`: the engine with its HTTP settings, e.g. from a config
    /// file.
    pub fn new(front: Front) -> OtpLayer {
        OtpLayer { front }
    }

    /// A layer for `gate` with the default HTTP settings (the generic endpoints under
    /// `/auth`, nothing protected), to adjust with the methods below.
    pub fn with_defaults(gate: Gate) -> OtpLayer {
        OtpLayer::new(Front::with_defaults(gate))
    }

    /// The front the layer's services use.
    pub fn front(&self) -> &Front {
        &self.front
    }

    /// Requires a valid token for every path under `prefix` (on a segment boundary:
    /// `/api/` covers `/api` and `/api/x`, never `/apiary`); other paths stay open,
    /// and still get the identity when the request carries a valid token.
    ///
    /// # Panics
    ///
    /// When `prefix` is not a canonical path (`api/`, `/api//`, `/%61pi/`): requests are
    /// compared in canonical form, so such a prefix would silently protect nothing.
    pub fn protect(self, prefix: &str) -> OtpLayer {
        assert!(
            self.front.settings().paths.is_canonical_prefix(prefix),
            "OtpLayer::protect: `{prefix}` is not a canonical path; write it like \"/api/\""
        );
        self.with_settings(|settings| {
            if !settings.protect.iter().any(|known| known.prefix == prefix) {
                settings.protect.push(prefix.into());
            }
        })
    }

    /// Serves the generic endpoints (`/otp/send`, `/otp/verify`, `/logout`,
    /// `/token/refresh`) under `prefix` instead of `/auth`.
    ///
    /// # Panics
    ///
    /// When `prefix` is not a canonical path (`auth`, `//auth`): requests are routed in
    /// canonical form, so the endpoints would never be reached.
    pub fn endpoints_at(self, prefix: &str) -> OtpLayer {
        assert!(
            self.front.settings().paths.is_canonical_prefix(prefix),
            "OtpLayer::endpoints_at: `{prefix}` is not a canonical path; write it like \"/auth\""
        );
        self.with_settings(|settings| {
            let prefix = prefix.trim_end_matches('/');
            let mut mounted = false;
            for mount in &mut settings.endpoints {
                if mount.dialect == Dialect::Generic {
                    mount.prefix = prefix.to_owned();
                    mounted = true;
                }
            }
            if !mounted {
                settings
                    .endpoints
                    .push(EndpointMount::new(Dialect::Generic, prefix));
            }
        })
    }

    /// The session cookie the gate sets on sign-in and reads tokens from; `None` for
    /// bearer tokens only.
    pub fn cookie(self, cookie: Option<CookieSettings>) -> OtpLayer {
        self.with_settings(|settings| settings.cookie = cookie)
    }

    /// A new front from the same engine and changed settings.
    fn with_settings(self, change: impl FnOnce(&mut HttpSettings)) -> OtpLayer {
        let mut settings = self.front.settings().clone();
        change(&mut settings);
        OtpLayer {
            front: Front::new(self.front.gate().clone(), settings),
        }
    }
}

impl<S> Layer<S> for OtpLayer {
    type Service = OtpService<S>;

    fn layer(&self, inner: S) -> OtpService<S> {
        OtpService::new(inner, self.front.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Gate;
    use crate::http::ProtectRule;

    #[test]
    fn settings_methods_change_only_their_setting() {
        let layer = OtpLayer::with_defaults(Gate::builder().build().unwrap())
            .protect("/api/")
            .protect("/api/")
            .endpoints_at("/login/")
            .cookie(None);
        let settings = layer.front().settings();
        assert_eq!(settings.protect, [ProtectRule::prefix("/api/")]);
        assert_eq!(
            settings.endpoints,
            [EndpointMount::new(Dialect::Generic, "/login")]
        );
        assert_eq!(settings.cookie, None);
        assert_eq!(settings.body_limit, HttpSettings::default().body_limit);
    }

    #[test]
    #[should_panic(expected = "is not a canonical path")]
    fn a_prefix_that_would_protect_nothing_is_refused() {
        let _ = OtpLayer::with_defaults(Gate::builder().build().unwrap()).protect("/%61pi/");
    }
}

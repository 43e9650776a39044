//! Per-tenant looks and words of the pages: title, logo, colours, language and texts.
//! Every value that reaches CSS or a header is checked here, once for the config file
//! and again when a page is drawn, for settings made in code.

use std::collections::BTreeMap;

use super::texts::{self, TEXTS};

/// A language the pages ship texts in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Locale {
    /// English.
    #[default]
    En,
    /// French.
    Fr,
}

impl Locale {
    /// `en` or `fr`, as `<html lang>` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::Fr => "fr",
        }
    }

    /// The locale of a language tag (`fr`, `fr-CA`, `en-GB`), if the pages have it.
    pub fn from_tag(tag: &str) -> Option<Locale> {
        let language = tag.split(['-', '_']).next()?.trim();
        if language.eq_ignore_ascii_case("en") {
            Some(Locale::En)
        } else if language.eq_ignore_ascii_case("fr") {
            Some(Locale::Fr)
        } else {
            None
        }
    }
}

/// How the pages look for one tenant (`[[pages.branding]]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Branding {
    /// The tenant these pages are for.
    pub tenant: String,
    /// The name shown in the window title and as the logo's text.
    pub title: Option<String>,
    /// The logo: an `https://` address or a path on this site.
    pub logo_url: Option<String>,
    /// Buttons and links: `#rgb` or `#rrggbb`.
    pub primary_color: Option<String>,
    /// The page's background: `#rgb` or `#rrggbb`.
    pub background_color: Option<String>,
    /// The pages' language; when `None`, the browser's `Accept-Language` picks one.
    pub locale: Option<Locale>,
    /// Built-in texts replaced, by key.
    pub texts: BTreeMap<String, String>,
}

/// Whether `text` is a colour the pages accept: `#rgb` or `#rrggbb` and nothing else,
/// since the value is written into the page's CSS and anything more could inject rules.
pub fn is_color(text: &str) -> bool {
    text.strip_prefix('#').is_some_and(|hex| {
        (hex.len() == 3 || hex.len() == 6) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Whether `url` is a logo address the pages accept: a path on this site, or an
/// `https://` address whose origin can be named in the Content-Security-Policy.
pub fn is_logo_url(url: &str) -> bool {
    // Quotes, spaces, controls and backslashes could end the attribute or the policy.
    if url.is_empty()
        || url.len() > 2048
        || url
            .bytes()
            .any(|b| b.is_ascii_control() || b" \"'<>\\`;,".contains(&b) || b >= 0x80)
    {
        return false;
    }
    if url.starts_with('/') {
        return !url.starts_with("//");
    }
    logo_origin(url).is_some()
}

/// The origin of an `https://` logo address (`https://cdn.example.com`), for `img-src`;
/// `None` for a path (covered by `'self'`) or anything else.
pub fn logo_origin(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    // `user@host` shows one host and loads from another.
    let plain = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    plain.then(|| format!("https://{}", authority.to_ascii_lowercase()))
}

/// Whether `key` names a text that `texts` may replace.
pub fn is_text_key(key: &str) -> bool {
    texts::is_key(key)
}

/// The words of one page answer: a tenant's replacements over the built-in texts of one
/// language.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Words<'a> {
    pub(crate) locale: Locale,
    overrides: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Words<'a> {
    pub(crate) fn new(locale: Locale, branding: Option<&'a Branding>) -> Words<'a> {
        Words {
            locale,
            overrides: branding.map(|b| &b.texts),
        }
    }

    /// The text of `key`.
    pub(crate) fn get(&self, key: &str) -> String {
        if let Some(text) = self.overrides.and_then(|o| o.get(key)) {
            return text.clone();
        }
        TEXTS
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, en, fr)| match self.locale {
                Locale::En => *en,
                Locale::Fr => *fr,
            })
            .unwrap_or(key)
            .to_owned()
    }

    /// The text of `key` with `{name}` replaced by `value`.
    pub(crate) fn with(&self, key: &str, name: &str, value: &str) -> String {
        self.get(key).replace(&format!("{{{name}}}"), value)
    }

    /// `25 seconds`, `3 minutes`, `2 hours`: a wait in words, rounded up.
    pub(crate) fn wait(&self, seconds: u64) -> String {
        let seconds = seconds.max(1);
        let (n, unit) = if seconds < 120 {
            (seconds, "seconds")
        } else if seconds < 2 * 3600 {
            (seconds.div_ceil(60), "minutes")
        } else {
            (seconds.div_ceil(3600), "hours")
        };
        match n {
            1 => self.get(&format!("{unit}_one")),
            _ => self.with(&format!("{unit}_many"), "n", &n.to_string()),
        }
    }
}

/// `#000000` or `#ffffff`, whichever reads better on `color` (WCAG relative luminance).
pub(crate) fn readable_on(color: &str) -> &'static str {
    let hex = color.trim_start_matches('#');
    let channel = |i: usize| -> f64 {
        let value = match hex.len() {
            3 => u8::from_str_radix(&hex[i..=i].repeat(2), 16),
            _ => u8::from_str_radix(&hex[2 * i..2 * i + 2], 16),
        }
        .unwrap_or(0);
        let c = f64::from(value) / 255.0;
        if c <= 0.03928 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2);
    // Contrast with black beats contrast with white above about 0.179.
    if luminance > 0.179 {
        "#000000"
    } else {
        "#ffffff"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_hex_colours_pass() {
        for good in ["#fff", "#1a2B3c"] {
            assert!(is_color(good), "{good}");
        }
        for bad in ["red", "red;}body{", "#ffff", "#12345g", "fff", "#fff;", ""] {
            assert!(!is_color(bad), "{bad}");
        }
        assert_eq!(readable_on("#ffffff"), "#000000");
        assert_eq!(readable_on("#1d4ed8"), "#ffffff");
        assert_eq!(readable_on("#ff0"), "#000000");
    }

    #[test]
    fn logos_are_paths_or_https_origins() {
        assert!(is_logo_url("/static/logo.svg"));
        assert!(is_logo_url("https://cdn.example.com/logo.png"));
        assert_eq!(
            logo_origin("https://CDN.example.com/logo.png").as_deref(),
            Some("https://cdn.example.com")
        );
        for bad in [
            "//evil.com/x.png",
            "http://cdn.example.com/x.png",
            "javascript:alert(1)",
            "https://a@evil.com/x.png",
            "/x.png\" onerror=\"x",
            "https://cdn.example.com; script-src *",
        ] {
            assert!(!is_logo_url(bad), "{bad}");
        }
    }

    #[test]
    fn waits_read_as_words() {
        let words = Words::new(Locale::En, None);
        assert_eq!(words.wait(25), "25 seconds");
        assert_eq!(words.wait(1), "1 second");
        assert_eq!(words.wait(150), "3 minutes");
        assert_eq!(Words::new(Locale::Fr, None).wait(25), "25 secondes");
    }
}

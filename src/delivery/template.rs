//! What a message says: templates per tenant, channel and locale, rendered with minijinja.
//!
//! A template has a subject (email), a text body, an HTML body (email) and a sender name.
//! Each is a minijinja template over `code`, `link`, `minutes`, `tenant` and
//! `tenant_name`. The most specific template wins: tenant + locale, tenant, any tenant +
//! locale, any tenant, then the built-in defaults. `link` is set only for an email sent
//! with a sign-in link, and is undefined otherwise (test it with `{% if link %}`). Mail
//! scanners follow links, so the page a link opens must ask for a click before it
//! consumes the code; without a link, emails carry the code alone.

use std::collections::HashMap;

use minijinja::{AutoEscape, Environment};
use serde::Serialize;

use crate::identifier::Channel;

/// One template, as configured. Unset parts fall back to the next less specific one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Template {
    /// Email subject.
    pub subject: Option<String>,
    /// Plain-text body (emails, SMS, webhook `message`).
    pub text: Option<String>,
    /// HTML body (emails).
    pub html: Option<String>,
    /// The sender's display name (emails).
    pub from_name: Option<String>,
}

/// Which messages a template is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TemplateScope {
    /// A tenant id; `None` for every tenant.
    pub tenant: Option<String>,
    /// The channel.
    pub channel: Option<Channel>,
    /// A locale like `fr` or `pt-BR`; `None` for any.
    pub locale: Option<String>,
}

/// The text of one message, ready to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Email subject.
    pub subject: String,
    /// Plain text.
    pub text: String,
    /// HTML (emails).
    pub html: String,
    /// Sender display name, if any.
    pub from_name: Option<String>,
}

/// What templates can use.
#[derive(Serialize)]
pub struct TemplateContext<'a> {
    /// The code.
    pub code: &'a str,
    /// The sign-in link carrying the code, for emails sent with one. Left out of the
    /// context when absent, so that a template's `{{ link }}` renders as nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<&'a str>,
    /// Minutes until it expires.
    pub minutes: u64,
    /// The tenant id.
    pub tenant: &'a str,
    /// The tenant's display name, if it has one.
    pub tenant_name: Option<&'a str>,
}

const DEFAULT_SUBJECT: &str =
    "{{ code }} is your {% if tenant_name %}{{ tenant_name }} {% endif %}sign-in code";
const DEFAULT_TEXT: &str = "Your {% if tenant_name %}{{ tenant_name }} {% endif %}sign-in code is {{ code }}.\
{% if link %}\n\nOr sign in with this link: {{ link }}\n\n{% else %} {% endif %}\
It expires in {{ minutes }} minute{{ '' if minutes == 1 else 's' }}. If you did not ask for it, ignore this message.";
const DEFAULT_HTML: &str = "<!doctype html><html><body style=\"font-family:sans-serif\">\
<p>Your {% if tenant_name %}{{ tenant_name }} {% endif %}sign-in code is</p>\
<p style=\"font-size:28px;letter-spacing:4px\"><strong>{{ code }}</strong></p>\
{% if link %}<p>Or sign in with this link: <a href=\"{{ link }}\">{{ link }}</a></p>{% endif %}\
<p>It expires in {{ minutes }} minute{{ '' if minutes == 1 else 's' }}. If you did not ask for it, ignore this message.</p>\
</body></html>";

/// A template that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("template for {scope}: {part}: {message}")]
pub struct TemplateError {
    /// Which template.
    pub scope: String,
    /// Which part (subject, text, html, from_name).
    pub part: &'static str,
    /// What minijinja said.
    pub message: String,
}

/// Every configured template, compiled once.
pub struct Templates {
    env: Environment<'static>,
    // scope -> per-part template names in `env` (None where the part is unset)
    scopes: HashMap<TemplateScope, [Option<String>; 4]>,
    // The built-in parts, used where no configured template sets one.
    builtin: [Option<String>; 4],
}

const PARTS: [&str; 4] = ["subject", "text", "html", "from_name"];

impl Templates {
    /// The built-in templates only.
    pub fn defaults() -> Templates {
        Templates::new(Vec::new()).unwrap_or_else(|_| unreachable_defaults())
    }

    /// Compiles `templates`; an error names the template and the part.
    pub fn new(templates: Vec<(TemplateScope, Template)>) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        // HTML bodies escape what they interpolate; the others are plain text.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        let compile = |env: &mut Environment<'static>,
                       scope: &TemplateScope,
                       template: Template,
                       index: usize| {
            let parts = [
                template.subject,
                template.text,
                template.html,
                template.from_name,
            ];
            let mut names: [Option<String>; 4] = Default::default();
            for (i, part) in parts.into_iter().enumerate() {
                let Some(source) = part else { continue };
                let suffix = if PARTS[i] == "html" { ".html" } else { ".txt" };
                let name = format!("t{index}.{}{suffix}", PARTS[i]);
                env.add_template_owned(name.clone(), source)
                    .map_err(|e| TemplateError {
                        scope: describe(scope),
                        part: PARTS[i],
                        message: e.to_string(),
                    })?;
                names[i] = Some(name);
            }
            Ok::<_, TemplateError>(names)
        };
        let defaults = Template {
            subject: Some(DEFAULT_SUBJECT.into()),
            text: Some(DEFAULT_TEXT.into()),
            html: Some(DEFAULT_HTML.into()),
            from_name: None,
        };
        let builtin = compile(&mut env, &TemplateScope::default(), defaults, 0)?;
        let mut scopes = HashMap::new();
        for (i, (scope, template)) in templates.into_iter().enumerate() {
            let names = compile(&mut env, &scope, template, i + 1)?;
            scopes.insert(scope, names);
        }
        let templates = Templates {
            env,
            scopes,
            builtin,
        };
        // Render every template once now, so a mistake shows at start, not at a send.
        let sample = TemplateContext {
            code: "123456",
            link: Some("https://sign-in.example/?code=123456"),
            minutes: 5,
            tenant: "t",
            tenant_name: Some("T"),
        };
        let builtin_scope = TemplateScope::default();
        for (scope, names) in templates
            .scopes
            .iter()
            .chain(std::iter::once((&builtin_scope, &templates.builtin)))
        {
            for (i, name) in names.iter().enumerate() {
                if let Some(name) = name {
                    templates
                        .render_one(name, &sample)
                        .map_err(|message| TemplateError {
                            scope: describe(scope),
                            part: PARTS[i],
                            message,
                        })?;
                }
            }
        }
        Ok(templates)
    }

    fn render_one(&self, name: &str, context: &TemplateContext<'_>) -> Result<String, String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(context))
            .map_err(|e| e.to_string())
    }

    /// Renders the message for `channel` in `tenant`, in `locale` where a template for it
    /// exists.
    pub fn render(
        &self,
        channel: Channel,
        locale: Option<&str>,
        context: &TemplateContext<'_>,
    ) -> Rendered {
        let mut chosen: [Option<&str>; 4] = [None; 4];
        // Most specific first; each part comes from the first scope that sets it.
        let tenant = Some(context.tenant.to_owned());
        let locales: Vec<Option<String>> = match locale {
            Some(l) => {
                let l = l.to_ascii_lowercase();
                let base = l.split(['-', '_']).next().map(str::to_owned);
                let mut v = vec![Some(l.clone())];
                if base.as_deref() != Some(&l) {
                    v.push(base);
                }
                v.push(None);
                v
            }
            None => vec![None],
        };
        let mut candidates = Vec::new();
        for tenant in [tenant, None] {
            for locale in &locales {
                for channel in [Some(channel), None] {
                    candidates.push(TemplateScope {
                        tenant: tenant.clone(),
                        channel,
                        locale: locale.clone(),
                    });
                }
            }
        }
        let found = candidates.iter().filter_map(|scope| self.scopes.get(scope));
        for names in found.chain(std::iter::once(&self.builtin)) {
            for (slot, name) in chosen.iter_mut().zip(names) {
                if slot.is_none() {
                    *slot = name.as_deref();
                }
            }
        }
        let render = |name: Option<&str>| {
            name.and_then(|n| match self.render_one(n, context) {
                Ok(text) => Some(text),
                Err(error) => {
                    tracing::error!(template = n, %error, "template failed; using the default");
                    None
                }
            })
        };
        Rendered {
            subject: render(chosen[0])
                .unwrap_or_else(|| format!("Your sign-in code: {}", context.code)),
            text: render(chosen[1]).unwrap_or_else(|| match context.link {
                Some(link) => format!(
                    "Your sign-in code is {}. Or sign in with this link: {link}",
                    context.code
                ),
                None => format!("Your sign-in code is {}.", context.code),
            }),
            html: render(chosen[2]).unwrap_or_default(),
            from_name: render(chosen[3])
                .filter(|n| !n.trim().is_empty())
                .or_else(|| context.tenant_name.map(str::to_owned)),
        }
    }
}

fn describe(scope: &TemplateScope) -> String {
    format!(
        "tenant {}, channel {}, locale {}",
        scope.tenant.as_deref().unwrap_or("*"),
        scope.channel.map_or("*", Channel::as_str),
        scope.locale.as_deref().unwrap_or("*")
    )
}

fn unreachable_defaults() -> Templates {
    // The built-in templates are tested to compile; this only keeps `defaults` total.
    Templates {
        env: Environment::new(),
        scopes: HashMap::new(),
        builtin: Default::default(),
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("scopes", &self.scopes.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>(tenant: &'a str, name: Option<&'a str>) -> TemplateContext<'a> {
        TemplateContext {
            code: "482913",
            link: None,
            minutes: 5,
            tenant,
            tenant_name: name,
        }
    }

    #[test]
    fn defaults_carry_the_code_and_the_brand_and_no_link() {
        let templates = Templates::defaults();
        let r = templates.render(Channel::Email, None, &context("7", Some("Downtown Hub")));
        assert_eq!(r.subject, "482913 is your Downtown Hub sign-in code");
        assert!(
            r.text
                .starts_with("Your Downtown Hub sign-in code is 482913. It expires in 5 minutes.")
        );
        assert!(r.html.contains("<strong>482913</strong>"));
        assert_eq!(r.from_name.as_deref(), Some("Downtown Hub"));
        for body in [&r.text, &r.html] {
            assert!(!body.contains("http"), "no links: {body}");
        }
        let plain = templates.render(Channel::Sms, None, &context("default", None));
        assert_eq!(
            plain.text,
            "Your sign-in code is 482913. It expires in 5 minutes. If you did not ask for it, ignore this message."
        );
    }

    #[test]
    fn a_link_shows_after_the_code_only_when_there_is_one() {
        let templates = Templates::defaults();
        let link = "https://app.example/sign-in?code=482913";
        let with = TemplateContext {
            link: Some(link),
            ..context("7", Some("Downtown Hub"))
        };
        let r = templates.render(Channel::Email, None, &with);
        assert_eq!(
            r.text,
            "Your Downtown Hub sign-in code is 482913.\n\n\
             Or sign in with this link: https://app.example/sign-in?code=482913\n\n\
             It expires in 5 minutes. If you did not ask for it, ignore this message."
        );
        assert!(
            r.html.contains(
                "<strong>482913</strong></p><p>Or sign in with this link: <a href=\"https:&#x2f;&#x2f;"
            ),
            "{}",
            r.html
        );
        assert!(!r.subject.contains("http"), "{}", r.subject);

        // Custom templates may name it; without one it renders as nothing.
        let custom = Templates::new(vec![(
            TemplateScope::default(),
            Template {
                text: Some("Code {{ code }} [{{ link }}]".into()),
                ..Template::default()
            },
        )])
        .unwrap();
        let r = custom.render(Channel::Email, None, &with);
        assert_eq!(r.text, format!("Code 482913 [{link}]"));
        let r = custom.render(Channel::Email, None, &context("7", None));
        assert_eq!(r.text, "Code 482913 []");
    }

    #[test]
    fn the_most_specific_template_wins_part_by_part() {
        let templates = Templates::new(vec![
            (
                TemplateScope {
                    tenant: None,
                    channel: Some(Channel::Email),
                    locale: Some("fr".into()),
                },
                Template {
                    subject: Some("Votre code : {{ code }}".into()),
                    text: Some("Code : {{ code }}".into()),
                    ..Template::default()
                },
            ),
            (
                TemplateScope {
                    tenant: Some("acme".into()),
                    channel: None,
                    locale: None,
                },
                Template {
                    text: Some("Acme code {{ code }}".into()),
                    from_name: Some("Acme Security".into()),
                    ..Template::default()
                },
            ),
        ])
        .unwrap();
        let fr = templates.render(Channel::Email, Some("fr-CA"), &context("other", None));
        assert_eq!(fr.subject, "Votre code : 482913");
        assert_eq!(fr.text, "Code : 482913");
        assert!(fr.html.contains("482913"), "html falls back to the default");
        let acme = templates.render(Channel::Sms, Some("fr"), &context("acme", None));
        assert_eq!(acme.text, "Acme code 482913", "tenant beats locale-only");
        assert_eq!(acme.from_name.as_deref(), Some("Acme Security"));
        let en = templates.render(Channel::Email, Some("en"), &context("other", None));
        assert!(en.subject.starts_with("482913 is your"));
    }

    #[test]
    fn html_escapes_and_bad_templates_are_refused() {
        let templates = Templates::new(vec![(
            TemplateScope::default(),
            Template {
                html: Some("<p>{{ tenant_name }}</p>".into()),
                ..Template::default()
            },
        )])
        .unwrap();
        let r = templates.render(
            Channel::Email,
            None,
            &context("t", Some("<script>x</script>")),
        );
        assert_eq!(r.html, "<p>&lt;script&gt;x&lt;&#x2f;script&gt;</p>");
        let error = Templates::new(vec![(
            TemplateScope {
                tenant: Some("t".into()),
                ..TemplateScope::default()
            },
            Template {
                subject: Some("{{ code ".into()),
                ..Template::default()
            },
        )])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("tenant t") && error.contains("subject"),
            "{error}"
        );
    }
}

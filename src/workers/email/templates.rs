//! Email types: each a subject, an HTML and a plain-text template (minijinja), and the variables a request
//! must carry for it.
//!
//! Eight types are built in (the social platform's seven: account creation, welcome, and five verification
//! codes; and `notification`, for notifications that go by email), their templates compiled into the binary; their HTML parts extend one `layout.html` (the frame,
//! with `content` and `footer` blocks). A templates directory (`HERALD_EMAIL_TEMPLATES`) overrides them and
//! adds types without a rebuild: for a type `T`, `T.html`, `T.txt` and `T.toml` (`subject = "…"`,
//! `required = ["…"]`), and `layout.html` for the frame. An override may replace any of the three; a new
//! type needs all three.
//!
//! HTML is auto-escaped (a variable holding `<script>` arrives as text); the plain-text part and the subject
//! are not, and the subject is folded onto one line, so no variable can add a header. A template that names
//! a variable the request lacks fails to render rather than leaving a blank.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;
use serde_json::Value;

/// One built-in type: its name, subject template, required variables, and its two bodies.
struct BuiltIn {
    name: &'static str,
    subject: &'static str,
    required: &'static [&'static str],
    html: &'static str,
    text: &'static str,
}

macro_rules! built_in {
    ($name:literal, $subject:literal, [$($var:literal),*]) => {
        BuiltIn {
            name: $name,
            subject: $subject,
            required: &[$($var),*],
            html: include_str!(concat!("templates/", $name, ".html")),
            text: include_str!(concat!("templates/", $name, ".txt")),
        }
    };
}

/// The frame every built-in HTML part extends (`{% extends "layout.html" %}`).
const LAYOUT: &str = include_str!("templates/layout.html");
const LAYOUT_NAME: &str = "layout.html";

const BUILT_IN: &[BuiltIn] = &[
    built_in!("create-account", "Verify your email to finish creating your account", ["email", "otpCode"]),
    built_in!("welcome-message", "Welcome aboard", ["email"]),
    built_in!("fingerprint-verify", "Confirm a sign-in from a new device", ["email", "otpCode"]),
    built_in!("forgot-password-verify", "Your password reset code", ["email", "otpCode"]),
    built_in!("username-change-verify", "Confirm your new username", ["email", "otpCode"]),
    built_in!("email-change-verify", "Confirm you want to change your email address", ["email", "otpCode"]),
    built_in!("new-email-change-verify", "Confirm your new email address", ["email", "otpCode"]),
    // The generic template of a notification that asks for the email channel and names no template of its
    // own: `notification` (id, type, title, message, data, created_at) and `user` (id, email, display_name).
    built_in!("notification", "{{ notification.title or \"You have a new notification\" }}", ["notification"]),
];

/// Why an email cannot be rendered. Every one is the request's or the template's fault, so sending it again
/// can never succeed: such a request goes to the dead-letter queue at once.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unknown email type {0:?}")]
    UnknownType(String),
    #[error("email type {kind}: the request's data must be a JSON object")]
    NotAnObject { kind: String },
    #[error("email type {kind}: the required variable {variable:?} is missing")]
    MissingVariable { kind: String, variable: String },
    #[error("email type {kind}: its {part} template failed: {message}")]
    Render { kind: String, part: &'static str, message: String },
    #[error("email templates in {path}: {message}")]
    Load { path: PathBuf, message: String },
}

/// Where a type's templates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    /// A built-in type with some of its parts replaced from the directory.
    Overridden(PathBuf),
    /// A type the directory adds.
    Directory(PathBuf),
}

#[derive(Debug, Clone)]
pub struct EmailType {
    pub name: String,
    pub required: Vec<String>,
    pub origin: Origin,
}

/// An email, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub html: String,
    pub text: String,
}

/// The types this server knows and their compiled templates.
pub struct Catalog {
    env: Environment<'static>,
    types: BTreeMap<String, EmailType>,
}

/// A type's `T.toml` in the templates directory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeFile {
    subject: Option<String>,
    required: Option<Vec<String>>,
}

/// The most bytes one template file may hold.
const MAX_TEMPLATE_BYTES: u64 = 256 * 1024;

impl Catalog {
    /// The built-in types, overridden and extended from `dir` when given.
    pub fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut types = BTreeMap::new();
        let mut sources: BTreeMap<String, [Option<String>; 3]> = BTreeMap::new();
        for b in BUILT_IN {
            let required = b.required.iter().map(|v| (*v).to_owned()).collect();
            types.insert(b.name.to_owned(), EmailType { name: b.name.to_owned(), required, origin: Origin::BuiltIn });
            sources.insert(
                b.name.to_owned(),
                [Some(b.subject.to_owned()), Some(b.html.to_owned()), Some(b.text.to_owned())],
            );
        }
        let mut layout = (LAYOUT.to_owned(), PathBuf::from("(built in)"));
        if let Some(dir) = dir {
            load_dir(dir, &mut types, &mut sources)?;
            let path = dir.join(LAYOUT_NAME);
            if path.is_file() {
                layout = (read_template(&path)?, path);
            }
        }
        env.add_template_owned(LAYOUT_NAME, layout.0)
            .map_err(|e| TemplateError::Load { path: layout.1, message: format!("{LAYOUT_NAME}: {e}") })?;
        for (name, [subject, html, text]) in sources {
            let path = match &types[&name].origin {
                Origin::BuiltIn => PathBuf::from("(built in)"),
                Origin::Overridden(p) | Origin::Directory(p) => p.clone(),
            };
            let missing = |part: &str| TemplateError::Load {
                path: path.clone(),
                message: format!("type {name:?} has no {part}"),
            };
            let parts = [
                (format!("{name}.subject"), subject.ok_or_else(|| missing("subject (in its .toml)"))?),
                (format!("{name}.html"), html.ok_or_else(|| missing(".html template"))?),
                (format!("{name}.txt"), text.ok_or_else(|| missing(".txt template"))?),
            ];
            for (template, source) in parts {
                env.add_template_owned(template.clone(), source)
                    .map_err(|e| TemplateError::Load { path: path.clone(), message: format!("{template}: {e}") })?;
            }
        }
        Ok(Self { env, types })
    }

    pub fn types(&self) -> impl Iterator<Item = &EmailType> {
        self.types.values()
    }

    pub fn get(&self, kind: &str) -> Option<&EmailType> {
        self.types.get(kind)
    }

    /// Renders an email of type `kind` from the request's `data` (a JSON object holding at least the type's
    /// required variables; null counts as missing). The HTML also sees `subject`.
    pub fn render(&self, kind: &str, data: &Value) -> Result<Rendered, TemplateError> {
        let ty = self.types.get(kind).ok_or_else(|| TemplateError::UnknownType(kind.chars().take(64).collect()))?;
        let Value::Object(vars) = data else {
            return Err(TemplateError::NotAnObject { kind: kind.to_owned() });
        };
        if let Some(missing) = ty.required.iter().find(|v| vars.get(v.as_str()).is_none_or(Value::is_null)) {
            return Err(TemplateError::MissingVariable { kind: kind.to_owned(), variable: missing.clone() });
        }
        let render = |part: &'static str, ctx: &Value| -> Result<String, TemplateError> {
            let failed =
                |e: minijinja::Error| TemplateError::Render { kind: kind.to_owned(), part, message: e.to_string() };
            self.env.get_template(&format!("{kind}.{part}")).map_err(failed)?.render(ctx).map_err(failed)
        };
        let subject = one_line(&render("subject", data)?);
        let mut with_subject = vars.clone();
        with_subject.insert("subject".into(), Value::String(subject.clone()));
        let with_subject = Value::Object(with_subject);
        let html = render("html", &with_subject)?;
        let text = render("txt", &with_subject)?;
        Ok(Rendered { subject, html, text })
    }
}

/// A subject on one line: every run of whitespace (line breaks included) becomes one space.
fn one_line(subject: &str) -> String {
    subject.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads one template file, bounded in size.
fn read_template(path: &Path) -> Result<String, TemplateError> {
    let fail = |message: String| TemplateError::Load { path: path.to_owned(), message };
    let size = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?.len();
    if size > MAX_TEMPLATE_BYTES {
        return Err(fail(format!("larger than {MAX_TEMPLATE_BYTES} bytes")));
    }
    std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))
}

/// Reads `dir`'s `T.toml`, `T.html` and `T.txt` files over the built-in sources.
fn load_dir(
    dir: &Path,
    types: &mut BTreeMap<String, EmailType>,
    sources: &mut BTreeMap<String, [Option<String>; 3]>,
) -> Result<(), TemplateError> {
    let fail = |path: &Path, message: String| TemplateError::Load { path: path.to_owned(), message };
    let entries = std::fs::read_dir(dir).map_err(|e| fail(dir, e.to_string()))?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // In name order, so a type's .toml (which may declare it) is read whatever the directory's order.
    files.sort();
    for path in files {
        let (Some(stem), Some(ext)) =
            (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|s| s.to_str()))
        else {
            continue;
        };
        let part = match ext {
            "toml" => 0,
            "html" => 1,
            "txt" => 2,
            _ => continue,
        };
        if path.file_name().and_then(|n| n.to_str()) == Some(LAYOUT_NAME) {
            continue;
        }
        if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(fail(&path, "a type's name is letters, digits, - and _".into()));
        }
        let content = read_template(&path)?;
        let ty = types.entry(stem.to_owned()).or_insert_with(|| EmailType {
            name: stem.to_owned(),
            required: Vec::new(),
            origin: Origin::Directory(dir.to_owned()),
        });
        if ty.origin == Origin::BuiltIn {
            ty.origin = Origin::Overridden(dir.to_owned());
        }
        let slots = sources.entry(stem.to_owned()).or_default();
        if part == 0 {
            let file: TypeFile = toml::from_str(&content).map_err(|e| fail(&path, e.message().to_owned()))?;
            if let Some(required) = file.required {
                ty.required = required;
            }
            if let Some(subject) = file.subject {
                slots[0] = Some(subject);
            }
        } else {
            slots[part] = Some(content);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_built_in_type_renders_both_parts_and_a_subject() {
        let catalog = Catalog::load(None).unwrap();
        assert_eq!(catalog.types().count(), 8);
        let user = json!({"id": "ana", "email": "ana@example.com", "display_name": "Ana"});
        let notification = json!({"type": "t", "title": "For ana@example.com", "message": null});
        for ty in catalog.types() {
            let vars =
                json!({"email": "ana@example.com", "otpCode": "482913", "notification": notification, "user": user});
            let email = catalog.render(&ty.name, &vars).unwrap();
            assert!(!email.subject.is_empty() && !email.subject.contains('\n'), "{}", ty.name);
            assert!(email.html.contains("ana@example.com") && email.text.contains("ana@example.com"), "{}", ty.name);
            if ty.required.iter().any(|v| v == "otpCode") {
                assert!(email.html.contains("482913") && email.text.contains("482913"), "{}", ty.name);
            }
            assert!(email.html.contains(&format!("<title>{}</title>", email.subject)), "{}", ty.name);
        }
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let catalog = Catalog::load(None).unwrap();
        let email =
            catalog.render("create-account", &json!({"email": "<script>x</script>@e.com", "otpCode": "1"})).unwrap();
        assert!(email.html.contains("&lt;script&gt;") && !email.html.contains("<script>"), "{}", email.html);
        assert!(email.text.contains("<script>x</script>@e.com"));
    }

    #[test]
    fn unknown_types_and_missing_variables_are_refused() {
        let catalog = Catalog::load(None).unwrap();
        assert_eq!(catalog.render("nope", &json!({})), Err(TemplateError::UnknownType("nope".into())));
        let missing = catalog.render("create-account", &json!({"email": "a@e.com", "otpCode": null})).unwrap_err();
        assert_eq!(
            missing,
            TemplateError::MissingVariable { kind: "create-account".into(), variable: "otpCode".into() }
        );
        assert!(matches!(catalog.render("welcome-message", &json!(["a"])), Err(TemplateError::NotAnObject { .. })));
    }

    #[test]
    fn a_directory_overrides_parts_and_adds_types() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &str| std::fs::write(dir.path().join(name), content).unwrap();
        write(
            "welcome-message.toml",
            "subject = \"Hello {{ name }}\\nBcc: evil@e.com\"\nrequired = [\"email\", \"name\"]\n",
        );
        write("invoice.toml", "subject = \"Invoice {{ number }}\"\nrequired = [\"number\"]\n");
        write("invoice.html", "<p>Invoice {{ number }} for {{ customer }}</p>");
        write("invoice.txt", "Invoice {{ number }}");
        write("notes.md", "ignored");
        let catalog = Catalog::load(Some(dir.path())).unwrap();
        assert_eq!(catalog.types().count(), 9);
        let welcome = catalog.render("welcome-message", &json!({"email": "a@e.com", "name": "Ana"})).unwrap();
        // The subject is folded onto one line: a variable or a template cannot add a header.
        assert_eq!(welcome.subject, "Hello Ana Bcc: evil@e.com");
        assert!(welcome.html.contains("a@e.com"), "the built-in body stays");
        assert_eq!(catalog.get("welcome-message").unwrap().origin, Origin::Overridden(dir.path().to_owned()));
        assert!(matches!(
            catalog.render("welcome-message", &json!({"email": "a@e.com"})),
            Err(TemplateError::MissingVariable { .. })
        ));
        // A variable the template uses but the type does not require still fails, rather than rendering blank.
        let failed = catalog.render("invoice", &json!({"number": 7})).unwrap_err();
        assert!(matches!(failed, TemplateError::Render { part: "html", .. }), "{failed}");
        let invoice = catalog.render("invoice", &json!({"number": 7, "customer": "Ana"})).unwrap();
        assert_eq!((invoice.subject.as_str(), invoice.text.as_str()), ("Invoice 7", "Invoice 7"));
        // The frame of every built-in HTML part, replaced once.
        write(
            "layout.html",
            "<main>{% block content %}{% endblock %}</main><footer>{% block footer %}ours{% endblock %}</footer>",
        );
        let framed = Catalog::load(Some(dir.path())).unwrap();
        let code = framed.render("create-account", &json!({"email": "a@e.com", "otpCode": "1"})).unwrap();
        assert!(code.html.starts_with("<main>") && code.html.ends_with("<footer>ours</footer>"), "{}", code.html);
        let welcome = framed.render("welcome-message", &json!({"email": "a@e.com", "name": "Ana"})).unwrap();
        assert!(welcome.html.ends_with("<footer></footer>"), "welcome has no footer: {}", welcome.html);

        // A new type without all its parts, or a template that does not parse, stops the load with a reason.
        write("broken.html", "{% if %}");
        let error = Catalog::load(Some(dir.path())).err().unwrap().to_string();
        assert!(error.contains("broken"), "{error}");
    }
}

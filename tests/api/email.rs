//! The email channel's templates from the command line: `herald email types` lists the seven built-in types
//! and those a templates directory adds; `herald email preview` renders one, HTML escaped, and refuses an
//! unknown type or a missing variable with the reason.

use crate::helpers::{run_herald, Settings};

async fn herald(args: &[&str], settings: &Settings) -> (bool, String, String) {
    let output = run_herald(args, settings).await;
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_seven_built_in_types_are_listed_and_rendered() {
    let settings = Settings::default();
    let (ok, out, err) = herald(&["email", "types"], &settings).await;
    assert!(ok, "{err}");
    for kind in crate::email_channel::SEVEN {
        let line = out.lines().find(|l| l.starts_with(kind)).unwrap_or_else(|| panic!("{kind} not listed: {out}"));
        assert!(line.contains("email"), "{line}");
    }

    let data = r#"{"email":"<script>alert(1)</script>@example.com","otpCode":"482913"}"#;
    let (ok, html, err) =
        herald(&["email", "preview", "--type", "create-account", "--data", data, "--html"], &settings).await;
    assert!(ok, "{err}");
    assert!(html.contains("482913") && html.contains("&lt;script&gt;") && !html.contains("<script>"), "{html}");
    let (ok, all, _) = herald(&["email", "preview", "--type", "create-account", "--data", data], &settings).await;
    assert!(ok && all.starts_with("Subject: Verify your email") && all.contains("--- text/plain ---"), "{all}");

    let (ok, _, err) = herald(&["email", "preview", "--type", "no-such-type"], &settings).await;
    assert!(!ok && err.contains("unknown email type \"no-such-type\""), "{err}");
    let (ok, _, err) =
        herald(&["email", "preview", "--type", "create-account", "--data", r#"{"email":"a@e.com"}"#], &settings).await;
    assert!(!ok && err.contains("otpCode"), "{err}");
}

#[tokio::test]
async fn a_templates_directory_adds_and_overrides_types() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("invoice.toml"), "subject = \"Invoice {{ number }}\"\nrequired = [\"number\"]\n")
        .unwrap();
    std::fs::write(dir.path().join("invoice.html"), "<p>Invoice {{ number }}</p>").unwrap();
    std::fs::write(dir.path().join("invoice.txt"), "Invoice {{ number }}").unwrap();
    std::fs::write(dir.path().join("welcome-message.txt"), "Hi {{ email }}, from the directory").unwrap();
    let mut settings = Settings::default();
    settings.env("HERALD_EMAIL_TEMPLATES", dir.path().to_str().unwrap());
    let (ok, out, err) = herald(&["email", "types"], &settings).await;
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("invoice") && l.contains("number")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("welcome-message") && l.contains("overridden")), "{out}");
    let (ok, text, err) = herald(
        &["email", "preview", "--type", "welcome-message", "--data", r#"{"email":"a@e.com"}"#, "--text"],
        &settings,
    )
    .await;
    assert!(ok && text == "Hi a@e.com, from the directory", "{text} {err}");
    let (ok, text, err) =
        herald(&["email", "preview", "--type", "invoice", "--data", r#"{"number":7}"#, "--text"], &settings).await;
    assert!(ok && text == "Invoice 7", "{text} {err}");
}

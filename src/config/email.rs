//! The email channel's settings: the SMTP server (`smtp_*`, `HERALD_SMTP_*`) and the retry policy of a send
//! (`email_*`). Without `smtp_host` the channel is off: `POST /api/v1/emails` answers 503 and no email
//! consumer is declared.

use std::path::PathBuf;
use std::time::Duration;

use super::amqp::RetryPolicy;
use super::{invalid, ConfigError, Layer, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP (a relay on loopback or a private network).
    None,
    /// Plain at first, then `STARTTLS`, which is required: a server that does not offer it is an error.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

impl SmtpTls {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpTls::None => "none",
            SmtpTls::StartTls => "starttls",
            SmtpTls::Tls => "tls",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub tls: SmtpTls,
    /// The `From` mailbox, as written (`Herald <no-reply@example.com>` or a bare address); checked here.
    pub from: String,
    /// PEM certificates to trust besides the built-in roots (a private CA, a test server's own).
    pub ca_file: Option<PathBuf>,
    /// Each SMTP command's timeout (the connection's too).
    pub timeout: Duration,
    /// Emails sent at once, and so the pool's most connections.
    pub concurrency: usize,
}

pub fn resolve(layer: &Layer) -> Result<(Option<SmtpSettings>, RetryPolicy), ConfigError> {
    let retry = RetryPolicy {
        attempts: layer.email_attempts.unwrap_or(3),
        initial_delay: Duration::from_millis(layer.email_retry_initial_ms.unwrap_or(5_000)),
        multiplier: 4.0,
        max_delay: Duration::from_millis(layer.email_retry_max_ms.unwrap_or(600_000)),
        jitter: 0.2,
    };
    if retry.attempts == 0 || retry.attempts > 100 {
        return Err(invalid("email_attempts", "expected 1 to 100 attempts"));
    }
    if retry.initial_delay.is_zero() {
        return Err(invalid("email_retry_initial_ms", "must be at least 1"));
    }
    if retry.max_delay < retry.initial_delay {
        return Err(invalid("email_retry_max_ms", "must be at least email_retry_initial_ms"));
    }
    let Some(host) = layer.smtp_host.clone().filter(|h| !h.is_empty()) else {
        return Ok((None, retry));
    };
    let tls = match layer.smtp_tls.as_deref().unwrap_or("starttls") {
        "none" => SmtpTls::None,
        "starttls" => SmtpTls::StartTls,
        "tls" => SmtpTls::Tls,
        other => return Err(invalid("smtp_tls", format!("expected none, starttls or tls, got {other:?}"))),
    };
    let port = layer.smtp_port.unwrap_or(match tls {
        SmtpTls::None => 25,
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
    });
    let from = layer.smtp_from.clone().ok_or_else(|| invalid("smtp_from", "is required with smtp_host"))?;
    from.parse::<lettre::message::Mailbox>().map_err(|e| {
        invalid("smtp_from", format!("expected an address like \"Herald <no-reply@example.com>\": {e}"))
    })?;
    let user = layer.smtp_user.clone().filter(|u| !u.is_empty());
    let password = layer.smtp_password.clone().filter(|p| !p.is_empty()).map(Secret::new);
    if user.is_some() != password.is_some() {
        return Err(invalid("smtp_user", "set smtp_user and smtp_password together"));
    }
    let concurrency = layer.smtp_concurrency.unwrap_or(8);
    if !(1..=256).contains(&concurrency) {
        return Err(invalid("smtp_concurrency", "expected 1 to 256"));
    }
    let timeout = Duration::from_millis(layer.smtp_timeout_ms.unwrap_or(30_000));
    if timeout < Duration::from_millis(100) {
        return Err(invalid("smtp_timeout_ms", "must be at least 100"));
    }
    let smtp = SmtpSettings {
        host,
        port,
        user,
        password,
        tls,
        from,
        ca_file: layer.smtp_ca_file.clone(),
        timeout,
        concurrency,
    };
    Ok((Some(smtp), retry))
}

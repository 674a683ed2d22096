//! SMTP through lettre: a pooled async transport (at most `smtp_concurrency` connections, kept for reuse),
//! the three TLS modes, and how a send's failure is judged: a 5xx reply is permanent (dead-letter it now);
//! anything else (4xx, refused or dropped connections, timeouts, TLS failures) may pass, so it is retried.

use std::str::FromStr;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpSettings, SmtpTls};
use crate::store::emails::Claimed;

/// How long an idle pooled connection is kept.
const IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("smtp_from: {0}")]
    From(String),
    #[error("smtp_ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("TLS for {host}: {message}")]
    Tls { host: String, message: String },
}

/// Why one send failed.
#[derive(Debug, Clone)]
pub struct SendFailure {
    /// A 5xx reply, or a message that cannot be built: sending it again cannot succeed.
    pub permanent: bool,
    /// The server answered (a 4xx or 5xx reply): it is up, it refused this one.
    pub replied: bool,
    pub error: String,
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port (tls mode)`, for logs and `/health`; never the user or password.
    server: String,
}

impl Mailer {
    pub fn new(settings: &SmtpSettings) -> Result<Self, SetupError> {
        let from = Mailbox::from_str(&settings.from).map_err(|e| SetupError::From(e.to_string()))?;
        let tls = match settings.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_parameters(settings)?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(settings)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(settings.concurrency as u32).idle_timeout(IDLE));
        if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let server = format!("{}:{} ({})", settings.host, settings.port, settings.tls.as_str());
        Ok(Self { transport: builder.build(), from, server })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Connects, greets and says NOOP: whether the server is there and takes this configuration.
    pub async fn check(&self) -> Result<(), String> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the server did not answer NOOP".into()),
            Err(e) => Err(describe(&e)),
        }
    }

    pub async fn send(&self, email: &Claimed) -> Result<(), SendFailure> {
        let message = self.message(email).map_err(|error| SendFailure { permanent: true, replied: false, error })?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| SendFailure {
            permanent: e.is_permanent(),
            replied: e.status().is_some(),
            error: describe(&e),
        })
    }

    /// The MIME message: `multipart/alternative` (text, then HTML), its Message-ID, the Date of this attempt.
    fn message(&self, email: &Claimed) -> Result<Message, String> {
        let to = Mailbox::from_str(&email.to).map_err(|e| format!("the stored recipient is not valid: {e}"))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(email.message_id.clone()))
            .date_now()
            .multipart(MultiPart::alternative_plain_html(email.text.clone(), email.html.clone()))
            .map_err(|e| format!("the message cannot be built: {e}"))
    }
}

fn tls_parameters(settings: &SmtpSettings) -> Result<TlsParameters, SetupError> {
    let mut builder = TlsParameters::builder(settings.host.clone());
    if let Some(path) = &settings.ca_file {
        let failed = |message: String| SetupError::CaFile { path: path.display().to_string(), message };
        let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        let certificate = Certificate::from_pem(&pem).map_err(|e| failed(e.to_string()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build_rustls().map_err(|e| SetupError::Tls { host: settings.host.clone(), message: e.to_string() })
}

/// lettre's error with its causes, on one line.
fn describe(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

//! The email channel: typed requests (`create-account`, `welcome-message`, …) rendered from templates
//! (`templates`: seven built in, overridable and extensible from `HERALD_EMAIL_TEMPLATES`), shown by
//! `herald email types` and `herald email preview`.

pub mod templates;

pub use templates::{Catalog, EmailType, Origin, Rendered, TemplateError};

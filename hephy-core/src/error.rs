//! Errors shared by the traits.

/// A boxed error from an implementation, kept as the source of our own errors so that no
/// dependency's error type appears in hephy-core's API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

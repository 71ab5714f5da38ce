//! What a failed AWS SDK call says, read the same way for every classifier in the crate.
//!
//! `source::aws` (stream reads) and `lease::dynamodb` (the lease table) classify failures into
//! their own error kinds, but the reading is the same: the service's error code — from the
//! modeled variant when the error was built in code, from the metadata otherwise — the HTTP
//! status and message, or which transport failure it was — and what it says about the caller's
//! set-up ([`Cause`]: no credentials, no region, an unusable endpoint, access denied, a refused
//! connection, no answer). That reading lives here once.

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::endpoint::error::ResolveEndpointError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::Cause;

/// The error code of an operation error's modeled variant.
///
/// Modeled errors built in code (rather than parsed from a response) carry no code in their
/// metadata, so the variant itself is the authority; the metadata code covers the rest.
pub(crate) trait ModeledCode {
    fn modeled_code(&self) -> Option<&'static str>;
}

/// Implements [`ModeledCode`] for operation errors: `Error { Variant, ... }`, where each variant
/// is named after its code.
macro_rules! modeled_codes {
    ($($error:ty { $($variant:ident),* $(,)? })*) => {$(
        impl $crate::aws_error::ModeledCode for $error {
            fn modeled_code(&self) -> Option<&'static str> {
                match self {
                    $(Self::$variant(_) => Some(stringify!($variant)),)*
                    _ => None,
                }
            }
        }
    )*};
}
pub(crate) use modeled_codes;

/// A code without namespace (`com.amazonaws.dynamodb.v20120810#X`) or suffix (`X:http://..`);
/// the SDK usually strips both, this makes sure.
pub(crate) fn short_code(code: &str) -> &str {
    let code = code.rsplit('#').next().unwrap_or(code);
    code.split(':').next().unwrap_or(code)
}

/// How a call failed.
pub(crate) enum Failure<'a> {
    /// The service answered with an error.
    Service {
        /// The error code as sent (see [`short_code`]), if any.
        code: Option<&'a str>,
        status: u16,
        /// The service's message, or the error's description.
        detail: String,
    },
    /// No answer in time.
    Timeout,
    /// Not sent; `user` when the request itself is at fault rather than the connection, and
    /// what the failure says about the set-up (credentials, endpoint, connection), if anything.
    Dispatch { user: bool, cause: Option<Cause> },
    /// The answer could not be read.
    Response,
    /// The request could not be built.
    Construction,
    /// Anything a newer SDK adds.
    Other,
}

/// Read `err`.
pub(crate) fn read<E>(err: &SdkError<E, HttpResponse>) -> Failure<'_>
where
    E: ProvideErrorMetadata + ModeledCode + StdError + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => Failure::Service {
            code: service
                .err()
                .modeled_code()
                .or_else(|| service.err().code()),
            status: service.raw().status().as_u16(),
            detail: service
                .err()
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| DisplayErrorContext(service.err()).to_string()),
        },
        SdkError::TimeoutError(_) => Failure::Timeout,
        SdkError::DispatchFailure(dispatch) => Failure::Dispatch {
            user: dispatch.is_user(),
            cause: cause_in_chain(err),
        },
        SdkError::ResponseError(_) => Failure::Response,
        SdkError::ConstructionFailure(_) => Failure::Construction,
        _ => Failure::Other,
    }
}

/// The [`Cause`] an SDK error code stands for: rejected credentials or access denied.
pub(crate) fn cause_for_code(code: &str) -> Option<Cause> {
    Some(match short_code(code) {
        "AccessDeniedException" | "AccessDenied" => Cause::AccessDenied,
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignatureException"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch" => Cause::InvalidCredentials,
        _ => return None,
    })
}

/// The [`Cause`] one link of an error chain stands for, read from the SDK's own error types
/// (never from messages): a credential provider's failure, an endpoint that cannot be resolved,
/// a connector's I/O failure or timeout, or the operating system's connection error.
pub(crate) fn cause_at(link: &(dyn StdError + 'static)) -> Option<Cause> {
    if let Some(e) = link.downcast_ref::<CredentialsError>() {
        return Some(match e {
            CredentialsError::CredentialsNotLoaded(_) => Cause::NoCredentials,
            // A provider that did not answer (instance metadata, a container endpoint) may
            // answer later: like a timeout, not the configuration.
            CredentialsError::ProviderTimedOut(_) => Cause::NoAnswer,
            CredentialsError::InvalidConfiguration(_) | CredentialsError::ProviderError(_) => {
                Cause::CredentialsNotLoaded
            }
            // `Unhandled` and anything newer: an unexpected provider failure, not a verdict
            // on the set-up.
            _ => return None,
        });
    }
    if link.is::<ResolveEndpointError>() {
        return Some(Cause::InvalidEndpoint);
    }
    if let Some(e) = link.downcast_ref::<ConnectorError>() {
        if e.is_timeout() {
            return Some(Cause::NoAnswer);
        }
        if e.is_io() {
            return Some(Cause::Unreachable);
        }
        // `other` and `user` connector errors wrap what failed: look further down the chain.
        return None;
    }
    if let Some(e) = link.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind as K;
        return match e.kind() {
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::AddrNotAvailable => Some(Cause::Unreachable),
            K::TimedOut => Some(Cause::NoAnswer),
            _ => None,
        };
    }
    None
}

/// The first [`Cause`] in `err`'s chain (the error itself first). The most specific link wins:
/// a connector error that wraps a credentials failure is a credentials failure.
pub(crate) fn cause_in_chain(err: &(dyn StdError + 'static)) -> Option<Cause> {
    let mut found = None;
    let mut link = Some(err);
    while let Some(e) = link {
        match cause_at(e) {
            // A connector's I/O kind is generic; what it wraps may say more (an OS timeout).
            Some(Cause::Unreachable) if found.is_none() => found = Some(Cause::Unreachable),
            Some(cause) => return Some(cause),
            None => {}
        }
        link = e.source();
    }
    found
}

/// The innermost message of `err`'s chain, on one line: what actually failed ("Connection
/// refused (os error 111)", "endpoint must contain scheme"), without the layers of wrapping
/// that [`DisplayErrorContext`] prints (those stay reachable through `source()`).
pub(crate) fn innermost(err: &(dyn StdError + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    let text = last.to_string();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // Some SDK messages embed a whole request; a line that long is no help at the default level.
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

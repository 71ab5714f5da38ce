//! What a failed AWS SDK call says, read the same way for every classifier in the crate.
//!
//! `source::aws` (stream reads) and `lease::dynamodb` (the lease table) classify failures into
//! their own error kinds, but the reading is the same: the service's error code — from the
//! modeled variant when the error was built in code, from the metadata otherwise — the HTTP
//! status and message, or which transport failure it was. That reading lives here once.

use std::error::Error as StdError;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

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
    /// Not sent; `user` when the request itself is at fault (e.g. an invalid endpoint) rather
    /// than the connection.
    Dispatch { user: bool },
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
        },
        SdkError::ResponseError(_) => Failure::Response,
        SdkError::ConstructionFailure(_) => Failure::Construction,
        _ => Failure::Other,
    }
}

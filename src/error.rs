//! Typed, classified errors.
//!
//! Every error the crate returns says whether trying again can help ([`Error::is_retryable`]).
//! Supervision decides between restart and stop from that classification, never from strings.

use std::fmt;

use crate::record::SequenceNumber;

/// A boxed error from a lower layer, kept as the `source()` of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong when talking to a stream (the AWS service, DynamoDB Local or the simulator).
///
/// The classification mirrors the DynamoDB Streams error model, so the shard worker can react to
/// each case precisely: back off, refresh an iterator, report a gap, or give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceErrorKind {
    /// Request rate too high (`LimitExceededException`, `ThrottlingException`,
    /// `ProvisionedThroughputExceededException`): back off with jitter and retry.
    Throttled,
    /// The shard iterator is older than 15 minutes (`ExpiredIteratorException`): get a new one
    /// from the last delivered sequence number.
    ExpiredIterator,
    /// The requested position is older than the 24-hour retention (`TrimmedDataAccessException`):
    /// records were lost before we could read them. Reported as a gap, never skipped silently.
    TrimmedData,
    /// The stream or shard does not exist (`ResourceNotFoundException`).
    NotFound,
    /// A transient failure (5xx, timeout, connection reset): retry with backoff.
    Retryable,
    /// A failure that retrying cannot fix: a bad request, a validation error, a malformed
    /// answer — and the caller's set-up: no AWS credentials, credentials that cannot be loaded
    /// or that the service rejects, no region, an endpoint URL that cannot be used, access
    /// denied ([`SourceError::cause`] says which). `Consumer::spawn` returns such an error
    /// instead of retrying, and a running consumer stops with it.
    Fatal,
}

impl SourceErrorKind {
    /// Whether the same request may succeed later without any change on our side.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Retryable)
    }
}

/// What a failed call says about the caller's set-up or the way to the service, when it says
/// something: the precise reason behind a configuration error (of kind
/// [`SourceErrorKind::Fatal`]), or behind a transport failure (of kind
/// [`SourceErrorKind::Retryable`]). Tools turn it into advice
/// ("set AWS_REGION", "is the endpoint running?"); supervision decides from the kind alone.
///
/// Found on a [`SourceError`] with [`SourceError::cause`], and anywhere in an error's `source()`
/// chain with [`cause_of`] (also for errors this crate did not classify itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// No credentials were found anywhere in the credential chain (environment, profile files,
    /// SSO, web identity, container, instance metadata). Kind `Fatal`.
    NoCredentials,
    /// A credential provider was configured but failed: an expired SSO session, a failing
    /// `credential_process`, an invalid profile, a refused role assumption. Kind
    /// `Fatal`.
    CredentialsNotLoaded,
    /// The service rejected the credentials: an unknown access key, a bad signature, an expired
    /// session token (`UnrecognizedClientException`, `InvalidSignatureException`,
    /// `ExpiredTokenException`, ...). Kind `Fatal`.
    InvalidCredentials,
    /// The credentials are valid but not allowed to make the call (`AccessDeniedException`).
    /// Kind `Fatal`.
    AccessDenied,
    /// The client has no region. Kind `Fatal`.
    NoRegion,
    /// The endpoint URL cannot be used (e.g. `localhost:8000`, without `http://`). Kind
    /// `Fatal`.
    InvalidEndpoint,
    /// No connection could be made, or it broke: refused, reset, or the host name did not
    /// resolve. Kind `Retryable`: a restarting server refuses connections for a moment.
    Unreachable,
    /// The endpoint did not answer in time (connect, read or operation timeout). Kind
    /// `Retryable`.
    NoAnswer,
}

impl Cause {
    /// Whether the cause is the caller's configuration (every cause but `Unreachable` and
    /// `NoAnswer`): an error with such a cause is [`Fatal`](SourceErrorKind::Fatal).
    pub fn is_configuration(self) -> bool {
        !matches!(self, Self::Unreachable | Self::NoAnswer)
    }
}

/// The first [`Cause`] found in `error` or its `source()` chain: a [`SourceError`]'s own, or,
/// with the `aws` feature, one read from AWS SDK errors in the chain (missing credentials, an
/// unusable endpoint, a refused connection, a timeout). `None` when nothing in the chain says.
pub fn cause_of(error: &(dyn std::error::Error + 'static)) -> Option<Cause> {
    let mut link = Some(error);
    while let Some(e) = link {
        if let Some(cause) = e.downcast_ref::<SourceError>().and_then(SourceError::cause) {
            return Some(cause);
        }
        #[cfg(feature = "aws")]
        if let Some(cause) = crate::aws_error::cause_at(e) {
            return Some(cause);
        }
        link = e.source();
    }
    None
}

/// An error from a [`StreamsApi`](crate::source::StreamsApi) call, with its classification.
#[derive(Debug)]
pub struct SourceError {
    kind: SourceErrorKind,
    cause: Option<Cause>,
    message: String,
    source: Option<BoxError>,
}

impl SourceError {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: SourceErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            cause: None,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the lower-level cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Say what the failure tells about the set-up or the way to the service.
    pub fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = Some(cause);
        self
    }

    /// The classification.
    pub fn kind(&self) -> SourceErrorKind {
        self.kind
    }

    /// What the failure says about the set-up or the way to the service, if anything.
    pub fn cause(&self) -> Option<Cause> {
        self.cause
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// What went wrong with a checkpoint store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckpointErrorKind {
    /// Reading or writing the storage failed (disk, network); may succeed later.
    Io,
    /// The stored data cannot be parsed. Never treated as "no checkpoint": that would silently
    /// restart from the start position and lose or repeat records.
    Corrupt,
    /// The stored data belongs to another stream, application or format version, or names
    /// a position that cannot belong to the shard it is stored for.
    Mismatch,
    /// Lease mode: the write was refused because this worker no longer holds the shard's lease
    /// (another worker took it, or it expired). Not a failure of the shard: the new owner goes
    /// on from the last checkpoint.
    LeaseLost,
    /// The storage refused the request for a reason that trying again cannot fix: permission
    /// denied, a value it cannot hold, its tables changed underneath (a database server's
    /// answer that is neither a connection failure nor a transient conflict).
    Refused,
}

/// An error from a [`CheckpointStore`](crate::checkpoint::CheckpointStore).
#[derive(Debug)]
pub struct CheckpointError {
    kind: CheckpointErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl CheckpointError {
    /// A new error of `kind`.
    pub fn new(kind: CheckpointErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the lower-level cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The classification.
    pub fn kind(&self) -> CheckpointErrorKind {
        self.kind
    }

    /// Only I/O failures are worth retrying; corrupt or foreign data stays so.
    pub fn is_retryable(&self) -> bool {
        self.kind == CheckpointErrorKind::Io
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            CheckpointErrorKind::Io => "checkpoint storage failed",
            CheckpointErrorKind::Corrupt => "checkpoint data is corrupt",
            CheckpointErrorKind::Mismatch => "checkpoint data does not match this consumer",
            CheckpointErrorKind::LeaseLost => "the shard's lease is no longer held",
            CheckpointErrorKind::Refused => "checkpoint storage refused the request",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A record image could not be decoded into the caller's type.
#[derive(Debug, thiserror::Error)]
#[error("record {sequence_number}: {image} image does not decode: {source}")]
pub struct DecodeError {
    /// The record that failed.
    pub sequence_number: SequenceNumber,
    /// Which image: `"keys"`, `"new"` or `"old"`.
    pub image: &'static str,
    /// What did not fit.
    #[source]
    pub source: crate::decode::DecodeFailure,
}

/// The error a [`Handler`](crate::Handler) returns for a batch it could not process.
///
/// Any error type converts into it with `?`. The consumer redelivers the batch after a
/// supervised restart of the shard worker.
pub struct HandlerError {
    inner: BoxError,
    failed_at: Option<SequenceNumber>,
}

impl HandlerError {
    /// An error from a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            inner: message.to_string().into(),
            failed_at: None,
        }
    }

    /// A partial batch failure: every record before `sequence_number` was processed, the record
    /// with `sequence_number` failed (and those after it were not processed). The checkpoint
    /// moves to just before it and only the rest of the batch is retried.
    ///
    /// ```
    /// # use dynamodb_stream::{Batch, HandlerError};
    /// # fn apply(_: &dynamodb_stream::StreamRecord) -> Result<(), std::io::Error> { Ok(()) }
    /// # fn f(batch: Batch) -> Result<(), HandlerError> {
    /// for record in batch.records() {
    ///     if let Err(e) = apply(record) {
    ///         return Err(HandlerError::failed_at(record.sequence_number().clone(), e));
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn failed_at(sequence_number: SequenceNumber, error: impl Into<BoxError>) -> Self {
        Self {
            inner: error.into(),
            failed_at: Some(sequence_number),
        }
    }

    /// The first failed record of a partial failure.
    pub fn failed_sequence_number(&self) -> Option<&SequenceNumber> {
        self.failed_at.as_ref()
    }

    /// The wrapped error.
    pub fn into_inner(self) -> BoxError {
        self.inner
    }
}

impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(e: E) -> Self {
        Self {
            inner: e.into(),
            failed_at: None,
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

/// Every error the consumer reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A stream API call failed.
    #[error("stream API: {0}")]
    Source(#[from] SourceError),
    /// The checkpoint store failed or holds unusable data.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Records were lost before they could be read, and the gap policy says fail. The gap says
    /// which shard, why, and exactly which records.
    #[error("gap in {0}")]
    Gap(Box<crate::events::Gap>),
    /// The caller gave an argument that cannot work (bad ARN, missing handler, bad table).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A record did not decode into the requested type.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A shard exhausted its restart budget and was quarantined, and the policy stops the
    /// consumer.
    #[error("shard {shard_id} quarantined after repeated failures: {last_error}")]
    Quarantined {
        /// The shard.
        shard_id: String,
        /// The last failure before quarantine.
        last_error: String,
    },
    /// The table's stream was replaced (disabled and re-enabled: a new ARN) while checkpoints of
    /// the previous stream exist. Records of the old stream that were not read may be lost.
    #[error("table {table:?} now streams {current}, but checkpoints exist for its previous stream {previous}: records of the previous stream may not all be processed. Finish it with Consumer::builder(client, \"{previous}\"), or start on the new stream with ConsumerBuilder::accept_new_stream(true)")]
    StreamChanged {
        /// The table.
        table: String,
        /// The stream the checkpoints belong to.
        previous: String,
        /// The table's current stream.
        current: String,
    },
    /// The lease table failed or cannot be used (see [`LeaseError::is_retryable`]): a missing
    /// or foreign table, access denied, corrupt leases.
    ///
    /// [`LeaseError::is_retryable`]: crate::lease::LeaseError::is_retryable
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
    /// A part of the consumer itself failed (an actor or task stopped, or did not answer).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A part of the consumer failed: which part, and the cause when there is one.
#[derive(Debug, thiserror::Error)]
#[error("{what}{}", source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
pub struct RuntimeError {
    what: &'static str,
    #[source]
    source: Option<BoxError>,
}

impl RuntimeError {
    /// `what` failed (e.g. "the checkpointer stopped").
    pub fn new(what: &'static str) -> Self {
        Self { what, source: None }
    }

    /// Attach the cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What failed.
    pub fn what(&self) -> &'static str {
        self.what
    }
}

impl Error {
    /// Whether retrying the operation that produced this error may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Source(e) => e.is_retryable(),
            Error::Checkpoint(e) => e.is_retryable(),
            Error::Lease(e) => e.is_retryable(),
            // An actor or task of the consumer broke down: a new consumer may well work.
            Error::Runtime(_) => true,
            Error::Gap(_)
            | Error::InvalidArgument(_)
            | Error::Decode(_)
            | Error::Quarantined { .. }
            | Error::StreamChanged { .. } => false,
        }
    }

    /// The opposite of [`is_retryable`](Self::is_retryable).
    pub fn is_fatal(&self) -> bool {
        !self.is_retryable()
    }

    /// What the error says about the set-up or the way to the service (see [`cause_of`]).
    pub fn cause(&self) -> Option<Cause> {
        cause_of(self)
    }
}

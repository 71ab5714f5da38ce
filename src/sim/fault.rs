//! Fault injection and call counters.

use crate::error::{SourceError, SourceErrorKind};

/// A simulated DynamoDB Streams call, for fault injection and latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `DescribeStream`.
    DescribeStream,
    /// `GetShardIterator`.
    GetShardIterator,
    /// `GetRecords`.
    GetRecords,
}

impl Operation {
    /// The AWS name of the call, e.g. `GetRecords`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DescribeStream => "DescribeStream",
            Self::GetShardIterator => "GetShardIterator",
            Self::GetRecords => "GetRecords",
        }
    }
}

/// Which error an injected fault returns; each maps to the [`SourceErrorKind`] of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Like `LimitExceededException`: [`SourceErrorKind::Throttled`].
    Throttled,
    /// Like a 500 or a timeout: [`SourceErrorKind::Retryable`].
    Retryable,
    /// Like `AccessDeniedException`: [`SourceErrorKind::Fatal`].
    Fatal,
    /// Like `ExpiredIteratorException`: [`SourceErrorKind::ExpiredIterator`].
    ExpiredIterator,
    /// Like `TrimmedDataAccessException`: [`SourceErrorKind::TrimmedData`].
    TrimmedData,
    /// Like `ResourceNotFoundException`: [`SourceErrorKind::NotFound`].
    NotFound,
}

impl FaultKind {
    /// The classification the injected error carries.
    pub fn source_error_kind(self) -> SourceErrorKind {
        match self {
            Self::Throttled => SourceErrorKind::Throttled,
            Self::Retryable => SourceErrorKind::Retryable,
            Self::Fatal => SourceErrorKind::Fatal,
            Self::ExpiredIterator => SourceErrorKind::ExpiredIterator,
            Self::TrimmedData => SourceErrorKind::TrimmedData,
            Self::NotFound => SourceErrorKind::NotFound,
        }
    }

    pub(super) fn to_error(self, operation: Operation) -> SourceError {
        SourceError::new(
            self.source_error_kind(),
            format!(
                "simulator: injected {self:?} fault in {}",
                operation.as_str()
            ),
        )
    }
}

/// When and how an [`Operation`] fails; see [`Simulator::set_fault`](super::Simulator::set_fault).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRule {
    /// The chance, from 0.0 to 1.0, that a call fails. Drawn from the simulator's seeded
    /// generator, so a run repeats exactly with the same seed and the same calls.
    pub probability: f64,
    /// The error returned.
    pub kind: FaultKind,
    /// `Some(n)`: the rule applies to the next `n` calls of its operation only (each failing
    /// with `probability`), then removes itself. `None`: it applies until cleared.
    pub remaining: Option<u32>,
}

impl FaultRule {
    /// Every call fails with `kind` until the rule is cleared.
    pub fn always(kind: FaultKind) -> Self {
        Self {
            probability: 1.0,
            kind,
            remaining: None,
        }
    }

    /// The next `n` calls fail with `kind`; later calls succeed.
    pub fn next(n: u32, kind: FaultKind) -> Self {
        Self {
            probability: 1.0,
            kind,
            remaining: Some(n),
        }
    }

    /// Each call fails with `kind` with the given probability, until the rule is cleared.
    pub fn with_probability(probability: f64, kind: FaultKind) -> Self {
        Self {
            probability,
            kind,
            remaining: None,
        }
    }
}

/// How often the simulator was called, see [`Simulator::stats`](super::Simulator::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// DescribeStream calls, including failed ones.
    pub describe_stream_calls: u64,
    /// GetShardIterator calls, including failed ones.
    pub get_shard_iterator_calls: u64,
    /// GetRecords calls, including failed ones.
    pub get_records_calls: u64,
    /// Calls that returned an injected fault.
    pub faults_injected: u64,
}

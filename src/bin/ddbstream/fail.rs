//! How `ddbstream` ends: exit codes, and a failure as one plain sentence (what is wrong, what to
//! do) with the full error chain kept for `-v`.

use std::error::Error as StdError;
use std::process::ExitCode;

use dynamodb_stream::error::{cause_of, Cause, SourceError, SourceErrorKind};

/// Exit codes (documented in `--help` and docs/cli.md).
pub(crate) mod code {
    /// Done: the command did what it was asked (a follower stopped by SIGTERM, too).
    pub(crate) const DONE: u8 = 0;
    /// An error, said on stderr.
    pub(crate) const ERROR: u8 = 1;
    // 2: usage errors, from clap.
    /// `status --check` found a shard that needs attention.
    pub(crate) const CHECK_FAILED: u8 = 3;
    /// Interrupted by SIGINT (128 + 2), whatever the command.
    pub(crate) const INTERRUPTED: u8 = 130;
    /// Terminated by SIGTERM (128 + 15) before a `--once` run or `status` was done.
    pub(crate) const TERMINATED: u8 = 143;
}

/// The signal that stopped a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, a service manager).
    Terminate,
}

/// How a command ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It did what it was asked.
    Done,
    /// A follower (`tail`, `replicate` without `--once`) was stopped: there is no other way
    /// for it to end, so SIGTERM is success; SIGINT still says it was interrupted.
    Stopped(Signal),
    /// A command with an end (`--once`, `status`) was stopped before it got there: never
    /// success.
    Unfinished(Signal),
    /// `status --check` found a problem (already described on stdout).
    CheckFailed,
}

impl Ended {
    pub(crate) fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Ended::Done | Ended::Stopped(Signal::Terminate) => code::DONE,
            Ended::Stopped(Signal::Interrupt) | Ended::Unfinished(Signal::Interrupt) => {
                code::INTERRUPTED
            }
            Ended::Unfinished(Signal::Terminate) => code::TERMINATED,
            Ended::CheckFailed => code::CHECK_FAILED,
        })
    }
}

/// A failed command: one sentence for stderr, and what caused it (shown with `-v`).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The causes behind the sentence, outermost first, one line each (for `-v`).
    pub(crate) fn chain(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut link: Option<&(dyn StdError + 'static)> = match &self.source {
            Some(s) => Some(s.as_ref()),
            None => None,
        };
        while let Some(e) = link {
            let text = one_line(&e.to_string());
            if out.last() != Some(&text) {
                out.push(text);
            }
            link = e.source();
        }
        out
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::new(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::new(message)
    }
}

/// Whitespace (newlines included) folded to single spaces.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What `ddbstream` was talking to: the words it needs to explain a failure.
#[derive(Debug, Clone, Default)]
pub(crate) struct Setup {
    /// The endpoint URL from `--endpoint-url`, `AWS_ENDPOINT_URL` or the profile.
    pub(crate) endpoint_url: Option<String>,
    /// The region in use.
    pub(crate) region: String,
    /// The profile chosen with `--profile` or `AWS_PROFILE`.
    pub(crate) profile: Option<String>,
}

impl Setup {
    /// "the endpoint URL http://…" or, without one, AWS's endpoint of the region.
    fn endpoint(&self) -> String {
        match &self.endpoint_url {
            Some(url) => format!("the endpoint URL {url}"),
            None => format!("the AWS endpoint of region {}", self.region),
        }
    }
}

/// The sentence for an error whose cause is the set-up or the way to the service, if it has
/// such a cause. Used for every library error and for start-up warnings alike.
pub(crate) fn sentence_for_cause(
    error: &(dyn StdError + 'static),
    setup: &Setup,
) -> Option<(Cause, String)> {
    let cause = cause_of(error)?;
    let service_says = || {
        find_source_error(error)
            .map(|e| format!(" ({})", e.message()))
            .unwrap_or_default()
    };
    let deepest = || {
        let mut last = error;
        while let Some(next) = last.source() {
            last = next;
        }
        one_line(&last.to_string())
    };
    let text = match cause {
        Cause::NoCredentials => match &setup.profile {
            Some(profile) => format!(
                "no AWS credentials found (profile {profile:?} has none): set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add credentials to the profile \
                 (aws configure --profile {profile}, aws sso login)"
            ),
            None => "no AWS credentials found: set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, or choose a profile with --profile (aws configure, \
                     aws sso login)"
                .to_owned(),
        },
        Cause::CredentialsNotLoaded => format!(
            "the AWS credentials could not be loaded ({}): renew them (e.g. aws sso login) or \
             check the profile",
            deepest()
        ),
        Cause::InvalidCredentials => format!(
            "the AWS credentials were rejected{}: check AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY or the profile, or renew them (DynamoDB Local accepts access \
             keys of letters and digits only)",
            service_says()
        ),
        Cause::AccessDenied => format!(
            "access denied{}: allow these credentials the calls listed in docs/cli.md \
             (\"Permissions\"), or use other credentials",
            service_says()
        ),
        Cause::NoRegion => {
            "no AWS region: pass --region or set AWS_REGION (or a region in the profile)".to_owned()
        }
        Cause::InvalidEndpoint => format!(
            "could not connect to {}: it is not a usable URL ({}); write it with its scheme, \
             e.g. http://localhost:8000",
            setup.endpoint(),
            deepest()
        ),
        Cause::Unreachable => format!(
            "could not connect to {} ({}): is the service running there, and is the URL right?",
            setup.endpoint(),
            deepest()
        ),
        Cause::NoAnswer => format!(
            "no answer from {} in time: is it a DynamoDB endpoint, and reachable?",
            setup.endpoint()
        ),
        other => format!("{other:?}: {}", deepest()),
    };
    Some((cause, text))
}

/// The first [`SourceError`] in an error's chain.
pub(crate) fn find_source_error<'a>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a SourceError> {
    let mut link = Some(error);
    while let Some(e) = link {
        if let Some(found) = e.downcast_ref::<SourceError>() {
            return Some(found);
        }
        link = e.source();
    }
    None
}

/// A library error as a failure: the set-up's cause in plain words when there is one, the
/// caller's own mistakes without the "invalid argument" prefix, anything else as the library
/// says it; the error itself kept as the source for `-v`.
pub(crate) fn explain(e: dynamodb_stream::Error, setup: &Setup) -> Failure {
    if let Some((_, text)) = sentence_for_cause(&e, setup) {
        return Failure::new(text).with_source(e);
    }
    match e {
        dynamodb_stream::Error::InvalidArgument(m) => Failure::new(m),
        other => {
            let text = match find_source_error(&other) {
                Some(s) if s.kind() == SourceErrorKind::NotFound => {
                    format!("not found: {}", s.message())
                }
                _ => one_line(&other.to_string()),
            };
            Failure::new(text).with_source(other)
        }
    }
}

/// Whether an error is worth retrying while `ddbstream` starts: transient (the library says
/// so) and not a verdict on the set-up (credentials, region, endpoint, permissions).
pub(crate) fn retry_at_start(e: &dynamodb_stream::Error) -> bool {
    if cause_of(e).is_some_and(Cause::is_configuration) {
        return false;
    }
    e.is_retryable()
}

/// A stream the service does not know, said once, with its ARN once, and what to do.
pub(crate) fn stream_not_found(failure: Failure, arn: &str) -> Failure {
    let not_found = failure
        .source
        .as_deref()
        .and_then(|e| find_source_error(e))
        .is_some_and(|e| e.kind() == SourceErrorKind::NotFound);
    if !not_found {
        return failure;
    }
    Failure {
        message: format!(
            "stream {arn} not found: check --stream-arn, or pass --table to use a table's \
             current stream"
        ),
        source: failure.source,
    }
}

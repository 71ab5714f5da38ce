//! Issue 17, point 1: an AWS set-up error is one plain sentence (what is wrong, what to do) and
//! exit code 1, in every command and in bounded time; a configuration error at once, a refused
//! or silent endpoint after the start-up retries; `-v` adds the causes; `Consumer::spawn`
//! returns a configuration error instead of retrying it.

use std::path::Path;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::error::{Cause, SourceErrorKind};
use dynamodb_stream::{Batch, Consumer, HandlerError};

use crate::common::{
    assert_one_line_error, bare_ddbstream, ddbstream, refused_port, run_within, stderr,
    ErrorEndpoint, SilentEndpoint,
};
use crate::ddb_local::{clients, create_table, server, REGION};

/// A configuration error ends a command at once; this bound only keeps a broken build from
/// hanging the suite.
const AT_ONCE: Duration = Duration::from_secs(60);
/// Transient failures are retried for 30 s at start (a silent endpoint: one 30 s call, or three
/// 10 s attempts); then the command must have ended.
const AFTER_RETRIES: Duration = Duration::from_secs(150);

const ARN: &str =
    "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2024-01-01T00:00:00.000";

/// Every command, given a database path in `dir`.
fn every_command(dir: &Path) -> Vec<Vec<String>> {
    let db = dir.join("r.sqlite").to_string_lossy().into_owned();
    [
        vec!["tail", "--table", "orders"],
        vec!["tail", "--stream-arn", ARN],
        vec!["replicate", "--table", "orders", "--db", &db, "--once"],
        vec!["status", "--table", "orders"],
        vec!["status", "--stream-arn", ARN],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(str::to_owned).collect())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_are_said_plainly_and_at_once() {
    let home = tempfile::tempdir().expect("home");
    let endpoint = server().endpoint.clone();
    for args in every_command(home.path()) {
        let mut cmd = bare_ddbstream(
            home.path(),
            &[("AWS_ENDPOINT_URL", &endpoint), ("AWS_REGION", REGION)],
        );
        cmd.args(&args);
        let out = run_within(cmd, AT_ONCE).await;
        assert_one_line_error(&out, "no AWS credentials found: set AWS_ACCESS_KEY_ID");
        assert!(
            !stderr(&out).contains("DispatchFailure"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // -v shows what is behind the sentence: the SDK's own chain.
    let mut cmd = bare_ddbstream(
        home.path(),
        &[("AWS_ENDPOINT_URL", &endpoint), ("AWS_REGION", REGION)],
    );
    cmd.args(["-v", "tail", "--stream-arn", ARN]);
    let out = run_within(cmd, AT_ONCE).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with("ddbstream: no AWS credentials found"),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("caused by:") && l.contains("no credentials found in chain")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_profile_is_named() {
    let home = tempfile::tempdir().expect("home");
    std::fs::create_dir_all(home.path().join(".aws")).expect("mkdir");
    std::fs::write(
        home.path().join(".aws/config"),
        "[default]\nregion = us-east-1\n\n[profile dev]\nregion = eu-west-1\n",
    )
    .expect("config");
    let endpoint = server().endpoint.clone();
    // Named by the environment, and by --profile.
    for (vars, extra) in [
        (
            vec![("AWS_PROFILE", "nosuch"), ("AWS_ENDPOINT_URL", &endpoint)],
            vec![],
        ),
        (
            vec![("AWS_ENDPOINT_URL", endpoint.as_str())],
            vec!["--profile", "nosuch"],
        ),
    ] {
        for args in every_command(home.path()) {
            let mut cmd = bare_ddbstream(home.path(), &vars);
            cmd.args(&extra).args(&args);
            let out = run_within(cmd, AT_ONCE).await;
            assert_one_line_error(
                &out,
                "AWS profile \"nosuch\" not found in ~/.aws/config or ~/.aws/credentials \
                 (known: default, dev)",
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_scheme_and_a_missing_region_are_refused_at_once() {
    let home = tempfile::tempdir().expect("home");
    let creds = [
        ("AWS_ACCESS_KEY_ID", "AKIDSETUP"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ];
    for args in every_command(home.path()) {
        // --endpoint-url localhost:8000, and the same from the environment.
        let mut cmd = bare_ddbstream(home.path(), &[creds[0], creds[1], ("AWS_REGION", REGION)]);
        cmd.args(["--endpoint-url", "localhost:8000"]).args(&args);
        let out = run_within(cmd, AT_ONCE).await;
        assert_one_line_error(
            &out,
            "could not connect to the endpoint URL \"localhost:8000\": it has no scheme; write \
             it as http://localhost:8000",
        );
        let mut cmd = bare_ddbstream(
            home.path(),
            &[
                creds[0],
                creds[1],
                ("AWS_REGION", REGION),
                ("AWS_ENDPOINT_URL", "localhost:8000"),
            ],
        );
        cmd.args(&args);
        let out = run_within(cmd, AT_ONCE).await;
        assert_one_line_error(
            &out,
            "could not connect to the endpoint URL \"localhost:8000\"",
        );

        let mut cmd = bare_ddbstream(
            home.path(),
            &[creds[0], creds[1], ("AWS_ENDPOINT_URL", &server().endpoint)],
        );
        cmd.args(&args);
        let out = run_within(cmd, AT_ONCE).await;
        assert_one_line_error(&out, "no AWS region: pass --region or set AWS_REGION");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_access_denied_and_unknown_resources() {
    let c = clients("cli_setup_errors");
    let arn = create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // DynamoDB Local refuses access keys that are not letters and digits, as AWS refuses an
    // unknown key.
    for args in every_command(dir.path()) {
        let mut cmd = ddbstream(&c);
        cmd.env("AWS_ACCESS_KEY_ID", "not-a-key").args(&args);
        let out = run_within(cmd, AT_ONCE).await;
        assert_one_line_error(&out, "the AWS credentials were rejected");
        assert_one_line_error(&out, "UnrecognizedClientException");
    }

    // IAM's answer (DynamoDB Local has no IAM): an endpoint that denies every call.
    let denied = ErrorEndpoint::start(
        "com.amazon.coral.service#AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: dynamodb:DescribeStream",
    );
    for args in every_command(dir.path()) {
        let mut cmd = ddbstream(&c);
        cmd.env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", denied.port),
        )
        .args(&args);
        let out = run_within(cmd, AT_ONCE).await;
        assert_one_line_error(&out, "access denied (");
        assert_one_line_error(&out, "is not authorized to perform");
    }

    // Not found: the table, and a stream, named once each.
    for args in [
        vec!["tail", "--table", "nope"],
        vec!["status", "--table", "nope"],
    ] {
        let out = run_within(
            {
                let mut cmd = ddbstream(&c);
                cmd.args(&args);
                cmd
            },
            AT_ONCE,
        )
        .await;
        assert_one_line_error(&out, "table \"nope\" not found");
    }
    let gone = arn.replace("/stream/", "/stream/1999-");
    for command in ["tail", "status"] {
        let mut cmd = ddbstream(&c);
        cmd.args([command, "--stream-arn", &gone]);
        let out = run_within(cmd, AT_ONCE).await;
        assert_one_line_error(&out, &format!("stream {gone} not found"));
        // Issue 17, point 8: said once, with the ARN once.
        assert_eq!(stderr(&out).matches(&gone).count(), 1, "{}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_silent_endpoint_ends_the_command_in_bounded_time() {
    let home = tempfile::tempdir().expect("home");
    let refused = format!("http://127.0.0.1:{}", refused_port());
    let silent = SilentEndpoint::start();
    let silent_url = format!("http://127.0.0.1:{}", silent.port);
    for (url, expected) in [
        (
            refused.as_str(),
            format!(
                "could not connect to the endpoint URL {refused} (Connection refused (os error \
                 111)): is the service running there, and is the URL right? (gave up after"
            ),
        ),
        (
            silent_url.as_str(),
            format!("no answer from the endpoint URL {silent_url} in time"),
        ),
    ] {
        // `tail --stream-arn` used to retry these for ever.
        let mut cmd = bare_ddbstream(
            home.path(),
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDSETUP"),
                ("AWS_SECRET_ACCESS_KEY", "secret"),
                ("AWS_REGION", REGION),
            ],
        );
        cmd.args(["--endpoint-url", url, "tail", "--stream-arn", ARN]);
        let out = run_within(cmd, AFTER_RETRIES).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let lines: Vec<&str> = err.lines().collect();
        let last = lines.last().copied().unwrap_or_default();
        assert!(last.starts_with("ddbstream: "), "{err}");
        assert!(last.contains(&expected), "{last:?} lacks {expected:?}");
        // Retries are summarized: a warning, then at most one line per 10 s of retrying.
        let warnings = lines.iter().filter(|l| l.contains("WARN")).count();
        assert!((1..=6).contains(&warnings), "{warnings} warnings:\n{err}");
        assert!(err.len() < 4000, "{} bytes of stderr:\n{err}", err.len());
    }
}

/// A credentials provider that finds nothing.
#[derive(Debug)]
struct NoCredentials;

impl aws_credential_types::provider::ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded("none here"),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_spawn_returns_configuration_errors_instead_of_retrying() {
    use aws_sdk_dynamodbstreams::config::{BehaviorVersion, Builder, Region};
    let endpoint = server().endpoint.clone();
    let base = || {
        Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .timeout_config(dynamodb_stream::recommended_timeouts())
    };
    let cases = [
        (
            base()
                .endpoint_url(&endpoint)
                .credentials_provider(NoCredentials)
                .build(),
            Cause::NoCredentials,
        ),
        (
            base()
                .endpoint_url("localhost:8000")
                .credentials_provider(aws_sdk_dynamodbstreams::config::Credentials::new(
                    "AKIDSPAWN",
                    "secret",
                    None,
                    None,
                    "test",
                ))
                .build(),
            Cause::InvalidEndpoint,
        ),
        (
            Builder::new()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(&endpoint)
                .credentials_provider(aws_sdk_dynamodbstreams::config::Credentials::new(
                    "AKIDSPAWN",
                    "secret",
                    None,
                    None,
                    "test",
                ))
                .build(),
            Cause::NoRegion,
        ),
    ];
    for (config, cause) in cases {
        let client = aws_sdk_dynamodbstreams::Client::from_conf(config);
        let spawned = Consumer::builder(client, ARN)
            .handler_fn(|_batch: Batch| async { Ok::<(), HandlerError>(()) })
            .spawn();
        let error = match tokio::time::timeout(AT_ONCE, spawned).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => panic!("{cause:?}: the consumer started"),
            Err(_) => panic!("{cause:?}: spawn still retrying after {AT_ONCE:?}"),
        };
        assert!(error.is_fatal(), "{cause:?}: {error}");
        assert_eq!(error.cause(), Some(cause), "{error}");
        match &error {
            dynamodb_stream::Error::Source(e) => {
                assert_eq!(e.kind(), SourceErrorKind::Fatal, "{e}");
                assert!(!e.message().contains('\n'), "one line: {e}");
            }
            other => panic!("{cause:?}: {other}"),
        }
    }
}

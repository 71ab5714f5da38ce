//! Issue 17, point 5: `ddbstream completions <shell>`, `--profile`, `-q` / `-v`, and examples in
//! every subcommand's `--help`.

use std::process::Command;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;

use crate::common::{bare_ddbstream, item, put, run_cli, run_within, stderr};
use crate::ddb_local::{clients, create_table, server};

const BOUND: Duration = Duration::from_secs(90);

fn ddbstream_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ddbstream"))
}

#[test]
fn completions_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _ddbstream"),
        ("zsh", "#compdef ddbstream"),
        ("fish", "complete -c ddbstream"),
        ("elvish", "edit:completion:arg-completer[ddbstream]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        // No AWS set-up needed, none read.
        let out = ddbstream_bin()
            .env_clear()
            .args(["completions", shell])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains(marker),
            "{shell}: no {marker:?} in\n{script}"
        );
        for word in ["tail", "replicate", "status", "format", "profile"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
        // The formats are offered as --format's values where the shell knows values.
        if ["bash", "zsh", "fish"].contains(&shell) {
            assert!(
                script.contains("dynamodb-json"),
                "{shell}: no format values"
            );
        }
    }
    let out = ddbstream_bin()
        .args(["completions", "nushell-or-so"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_subcommand_has_examples() {
    for command in ["tail", "replicate", "status", "completions"] {
        let out = ddbstream_bin()
            .args([command, "--help"])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{command}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("Examples:"), "{command}:\n{help}");
        assert!(
            help.contains(&format!("ddbstream {command} ")),
            "{command}:\n{help}"
        );
    }
    let out = ddbstream_bin()
        .args(["tail", "--help"])
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--format", "compact", "dynamodb-json", "plain"] {
        assert!(help.contains(option), "{option}:\n{help}");
    }
    let out = ddbstream_bin().arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--profile", "--quiet", "--verbose", "completions"] {
        assert!(help.contains(option), "{option}:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_supplies_credentials_and_region() {
    let c = clients("cli_profile");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    put(&c, "orders", &item(1, 1)).await;
    let home = tempfile::tempdir().expect("home");
    std::fs::create_dir_all(home.path().join(".aws")).expect("mkdir");
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!(
            "[dev]\naws_access_key_id = {}\naws_secret_access_key = secret\n",
            c.access_key
        ),
    )
    .expect("credentials");
    std::fs::write(
        home.path().join(".aws/config"),
        "[profile dev]\nregion = us-east-1\n",
    )
    .expect("config");
    let endpoint = server().endpoint.clone();
    let once = crate::common::TAIL_ORDERS_ONCE;
    // --profile, and AWS_PROFILE.
    for (vars, extra) in [
        (
            vec![("AWS_ENDPOINT_URL", endpoint.as_str())],
            vec!["--profile", "dev"],
        ),
        (
            vec![
                ("AWS_ENDPOINT_URL", endpoint.as_str()),
                ("AWS_PROFILE", "dev"),
            ],
            vec![],
        ),
    ] {
        let mut cmd = bare_ddbstream(home.path(), &vars);
        cmd.args(&extra).args(once);
        let out = run_within(cmd, BOUND).await;
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        let printed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(printed.lines().count(), 1, "{printed}");
        assert!(printed.contains("item-00001"), "{printed}");
    }
    // Without the profile: no credentials.
    let mut cmd = bare_ddbstream(
        home.path(),
        &[("AWS_ENDPOINT_URL", &endpoint), ("AWS_REGION", "us-east-1")],
    );
    cmd.args(once);
    let out = run_within(cmd, BOUND).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_and_verbose() {
    let c = clients("cli_verbosity");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    put(&c, "orders", &item(1, 1)).await;
    let once = crate::common::TAIL_ORDERS_ONCE;

    let out = run_cli(&c, &once).await;
    assert!(out.status.success());
    let normal = stderr(&out);
    assert!(normal.contains("ddbstream: tailing "), "{normal}");
    assert!(
        normal.contains("ddbstream: caught up; 1 records printed"),
        "{normal}"
    );

    // -q: the records, and nothing on stderr.
    let mut args = vec!["-q"];
    args.extend(once);
    let out = run_cli(&c, &args).await;
    assert!(out.status.success());
    assert_eq!(stderr(&out), "", "-q prints nothing but errors");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    // -q still says what failed, in one line.
    let out = run_cli(&c, &["-q", "tail", "--table", "nope"]).await;
    crate::common::assert_one_line_error(&out, "table \"nope\" not found");

    // -v: the library's own log lines too, and the causes of an error.
    let mut args = vec!["-v"];
    args.extend(once);
    let out = run_cli(&c, &args).await;
    assert!(out.status.success());
    let verbose = stderr(&out);
    assert!(
        verbose.lines().count() > normal.lines().count(),
        "{verbose}"
    );
    assert!(verbose.contains("INFO"), "{verbose}");
    let out = run_cli(
        &c,
        &[
            "-v",
            "tail",
            "--table",
            "orders",
            "--endpoint-url",
            "http://127.0.0.1:1",
        ],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("caused by:"), "{err}");
    // -q and -v together is a usage error.
    let out = run_cli(&c, &["-q", "-v", "tail", "--table", "orders"]).await;
    assert_eq!(out.status.code(), Some(2));
}

//! A real PostgreSQL server for integration tests, shared by every test of one test binary.
//!
//! Include it from a test binary with
//!
//! ```ignore
//! #[path = "../support/postgres.rs"]
//! mod postgres;
//! ```
//!
//! [`server`] starts one server per test binary from Debian's `postgresql` package
//! (`apt-get install -y postgresql`; `scripts/test.sh` installs it when missing): `initdb` into a
//! throwaway data directory, then `postgres` on a free loopback port, without Unix sockets, as
//! the `postgres` user when this process is root (PostgreSQL refuses to run as root; a
//! `ddbstream-pg` user is created when there is no `postgres` user). A small shell wrapper holds
//! the server: when this test binary exits (even killed), the wrapper's standard input closes,
//! and it stops the server and deletes the data directory. Every test takes a [`database`] of its
//! own. When the server cannot start, [`server`] panics saying what to install: these tests
//! never skip.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

const HOW_TO_INSTALL: &str = "the PostgreSQL tests need Debian's postgresql package \
    (`apt-get install -y postgresql`, which scripts/test.sh runs as root when it is missing)";

/// The running server.
pub struct Postgres {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The directory holding `initdb`, `postgres`, `pg_dump`.
    pub bin: PathBuf,
    /// The operating system user the server runs as, when it is not this process's.
    run_as: Option<(u32, u32)>,
    // Held open for the life of the test binary: the wrapper stops the server at end of file.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
    output: Arc<Mutex<Vec<String>>>,
}

impl Postgres {
    /// A connection URL for `database`, as the superuser `postgres` (trust authentication).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The server's last lines of output, for failure messages.
    pub fn recent_output(&self) -> String {
        let lines = self.output.lock().unwrap();
        lines
            .iter()
            .rev()
            .take(50)
            .rev()
            .map(|l| format!("  {l}\n"))
            .collect()
    }

    /// The whole of `database` (schema and data) as `pg_dump` prints it: two equal dumps mean
    /// nothing was changed.
    pub fn dump(&self, database: &str) -> String {
        let out = Command::new(self.bin.join("pg_dump"))
            .args(["--no-owner", "--no-privileges", "--inserts"])
            .args(["-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg(database)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run pg_dump: {e}"));
        assert!(
            out.status.success(),
            "pg_dump {database} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `\restrict` lines carry a random key per run (pg_dump's guard against crafted
        // dumps): the rest is the database.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

/// The one server of this test binary, started on first use.
///
/// Panics (every time it is called) when the server cannot be started, with a message saying
/// what to install.
pub fn server() -> &'static Postgres {
    static SERVER: OnceLock<Result<Postgres, String>> = OnceLock::new();
    match SERVER.get_or_init(start) {
        Ok(s) => s,
        Err(e) => panic!("PostgreSQL is not available: {e}\n({HOW_TO_INSTALL})"),
    }
}

/// A fresh, empty database for one test; returns its URL.
pub async fn database(test_name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let server = server();
    let name: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let name = format!(
        "t_{name}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let admin = connect(&server.url("postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    server.url(&name)
}

/// A plain client (its connection driven by a spawned task).
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The database name at the end of a URL made by [`database`].
pub fn database_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

// ---------------------------------------------------------------------------------------------
// Starting the server
// ---------------------------------------------------------------------------------------------

/// Where Debian keeps the server programs (`/usr/lib/postgresql/VERSION/bin`, not on PATH):
/// the newest version there, else `initdb` on PATH.
fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|d| d.join("initdb").exists() && d.join("postgres").exists())
        .ok_or_else(|| "no initdb and postgres in /usr/lib/postgresql/*/bin or on PATH".to_owned())
}

fn command_output(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The (uid, gid) to run the server as: `None` when this process is not root, else the
/// `postgres` user (or `ddbstream-pg`, created when needed).
fn server_user() -> Result<Option<(u32, u32)>, String> {
    let me = command_output("id", &["-u"])?;
    if me != "0" {
        return Ok(None);
    }
    let user = if command_output("id", &["-u", "postgres"]).is_ok() {
        "postgres"
    } else {
        if command_output("id", &["-u", "ddbstream-pg"]).is_err() {
            command_output(
                "useradd",
                &[
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "ddbstream-pg",
                ],
            )?;
        }
        "ddbstream-pg"
    };
    let number = |flag: &str| -> Result<u32, String> {
        command_output("id", &[flag, user])?
            .parse()
            .map_err(|e| format!("id {flag} {user}: {e}"))
    };
    Ok(Some((number("-u")?, number("-g")?)))
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn as_user(cmd: &mut Command, run_as: Option<(u32, u32)>) {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid)
            .gid(gid)
            .env("HOME", "/tmp")
            .env_remove("PGDATA");
    }
}

fn start() -> Result<Postgres, String> {
    let bin = bin_dir()?;
    let run_as = server_user()?;
    // A port picked free can be taken by someone else before the server binds it: try again.
    let mut last_error = String::new();
    for _ in 0..3 {
        match launch(&bin, run_as) {
            Ok(s) => return Ok(s),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn launch(bin: &Path, run_as: Option<(u32, u32)>) -> Result<Postgres, String> {
    let dir = tempfile::Builder::new()
        .prefix("ddbstream-pg-")
        .tempdir()
        .map_err(|e| format!("cannot create a data directory: {e}"))?
        // The wrapper deletes it when the test binary exits.
        .keep();
    let data = dir.join("data");
    std::fs::create_dir(&data).map_err(|e| format!("mkdir {}: {e}", data.display()))?;
    if let Some((uid, gid)) = run_as {
        for d in [&dir, &data] {
            std::os::unix::fs::chown(d, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", d.display()))?;
        }
    }
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null());
    as_user(&mut initdb, run_as);
    let out = initdb
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.join("initdb").display()))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    let port = free_port()?;
    // The wrapper runs the server and stops it (fast shutdown) when its own standard input
    // closes: this process exiting, however it ends. Once the server is gone, it removes the
    // data directory. The watcher reads the input through fd 3, a copy made first: a background
    // job's own standard input is /dev/null.
    let script = r#"
        exec 3<&0
        "$1/postgres" -D "$2/data" -p "$3" -c listen_addresses=127.0.0.1 \
            -c unix_socket_directories= -c fsync=off -c full_page_writes=off \
            -c max_connections=300 -c shared_buffers=32MB &
        pid=$!
        (cat <&3 >/dev/null; kill -INT "$pid" 2>/dev/null) &
        wait "$pid"
        rm -rf "$2"
    "#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("postgres-wrapper")
        .arg(bin)
        .arg(&dir)
        .arg(port.to_string())
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    as_user(&mut cmd, run_as);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the postgres wrapper: {e}"))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let output = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    drain(
        child.stdout.take().expect("piped stdout"),
        output.clone(),
        None,
    );
    drain(
        child.stderr.take().expect("piped stderr"),
        output.clone(),
        Some(ready_tx),
    );
    let deadline = Instant::now() + READY_TIMEOUT;
    let failure = loop {
        match ready_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => break None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Some("the server exited before it was ready".to_owned())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = child.try_wait() {
                    break Some(format!("the server exited before it was ready ({status})"));
                }
                if Instant::now() >= deadline {
                    break Some(format!("not ready within {READY_TIMEOUT:?}"));
                }
            }
        }
    };
    if let Some(e) = failure {
        drop(stdin); // the wrapper stops what it started and removes the directory
        let _ = child.wait();
        let text: String = output
            .lock()
            .unwrap()
            .iter()
            .map(|l| format!("  {l}\n"))
            .collect();
        return Err(format!("{e}; its output:\n{text}"));
    }
    Ok(Postgres {
        port,
        bin: bin.to_path_buf(),
        run_as,
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
        output,
    })
}

/// Read a pipe to its end in a thread, keeping the lines and reporting readiness.
fn drain(
    pipe: impl Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    mut ready: Option<mpsc::Sender<()>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if std::env::var_os("PG_ECHO").is_some() {
                eprintln!("[postgres] {line}");
            }
            if line.contains("database system is ready to accept connections") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
            let mut lines = lines.lock().unwrap();
            if lines.len() >= 500 {
                lines.remove(0);
            }
            lines.push(line);
        }
    });
}

//! A private network namespace for tests that break the network below HTTP with iptables.
//!
//! Include it from a test binary with
//!
//! ```ignore
//! #[path = "../support/netns.rs"]
//! mod netns;
//! ```
//!
//! [`NetNs::create`] makes a fresh namespace that holds nothing but its own loopback
//! interface: a holder process (`unshare --net`, which brings `lo` up and then waits on its
//! standard input) keeps it alive, and it goes away with the holder when the [`NetNs`] is
//! dropped or the test process dies. Processes run inside it through [`NetNs::command`]
//! (`nsenter --net`), iptables rules go into it through [`NetNs::iptables`], and
//! [`NetNs::bind_loopback`] opens a listening socket on its loopback address from this process,
//! so the test can serve (or relay) what the processes inside connect to. Nothing inside can
//! reach any other address: there is no other interface.
//!
//! Where namespaces are not permitted (not root, or a sandbox that forbids `unshare`),
//! `create` returns the reason, for the test to print and skip. Everything else that is
//! missing (`ip`, `iptables`) is a failure with a message saying what to install:
//! `scripts/test.sh` installs both.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const HOW_TO_INSTALL: &str = "install iproute2 and iptables (`apt-get install -y iproute2 \
    iptables`; scripts/test.sh does this when they are missing)";

/// How long the holder may take to say the namespace is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A fresh network namespace with only `lo`, alive as long as this value.
pub struct NetNs {
    holder: Child,
    // The holder waits on this pipe: closing it ends the holder even if `Drop` never runs.
    holder_stdin: Option<ChildStdin>,
    /// `/proc/PID/ns/net` of the holder.
    path: String,
    /// Its target, `net:[INODE]`: checked before every use, so a command never runs in a
    /// namespace other than this one (the host's, above all).
    id: String,
    /// The iptables command that works in the namespace (see [`find_iptables`]).
    iptables: &'static str,
}

impl NetNs {
    /// A new namespace, or why namespaces are not permitted here. Panics on anything else
    /// (no `unshare`, no `ip`, no working `iptables`).
    pub fn create() -> Result<NetNs, String> {
        let mut holder = match Command::new("unshare")
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && echo ready && exec cat >/dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot run unshare (util-linux): {e}"),
        };
        let stdout = holder.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(READY_TIMEOUT).unwrap_or_default();
        if ready.trim() != "ready" {
            let _ = holder.kill();
            let status = holder.wait();
            let mut stderr = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            let stderr = stderr.trim();
            if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
                return Err(format!(
                    "network namespaces are not permitted here (`unshare --net`: {stderr})"
                ));
            }
            panic!("cannot make a network namespace ({status:?}): {stderr:?}; {HOW_TO_INSTALL}");
        }
        let pid = holder.id();
        let path = format!("/proc/{pid}/ns/net");
        let id = ns_id(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let own = ns_id("/proc/self/ns/net").expect("/proc/self/ns/net");
        assert_ne!(id, own, "the holder is still in this process's namespace");
        let mut ns = NetNs {
            holder_stdin: holder.stdin.take(),
            holder,
            path,
            id,
            iptables: "iptables",
        };
        ns.iptables = find_iptables(&ns);
        Ok(ns)
    }

    /// The iptables command in use: `iptables` (whichever backend the system's alternatives
    /// point at) or `iptables-legacy`.
    pub fn iptables_command(&self) -> &'static str {
        self.iptables
    }

    /// `program` to run inside the namespace (`nsenter --net=... -- program`), killed when the
    /// thread that spawns it ends (`setpriv --pdeathsig KILL`: a test that dies leaves nothing
    /// behind; spawn it from the test's own thread, not from a short-lived one).
    pub fn command(&self, program: &str) -> Command {
        self.check();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--", "nsenter"])
            .arg(format!("--net={}", self.path))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Run `iptables ARGS` inside the namespace; its stdout. Panics when it fails.
    pub fn iptables(&self, args: &[&str]) -> String {
        let out = self
            .command(self.iptables)
            .arg("-w")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.iptables));
        assert!(
            out.status.success(),
            "{} {} failed ({}): {}",
            self.iptables,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A listening socket on `127.0.0.1` (a free port) inside the namespace, owned by this
    /// process: a thread of its own joins the namespace (setns), binds, and ends. The socket
    /// stays in the namespace; connections it accepts do too.
    pub fn bind_loopback(&self) -> std::net::TcpListener {
        self.check();
        let path = self.path.clone();
        std::thread::spawn(move || -> std::io::Result<std::net::TcpListener> {
            let ns = std::fs::File::open(&path)?;
            setns_net(&ns)?;
            std::net::TcpListener::bind("127.0.0.1:0")
        })
        .join()
        .expect("the setns thread panicked")
        .unwrap_or_else(|e| panic!("cannot listen inside the namespace: {e}"))
    }

    /// Panics unless the holder is still in the namespace it made.
    fn check(&self) {
        match ns_id(&self.path) {
            Ok(id) if id == self.id => {}
            other => panic!(
                "the network namespace {} is gone ({other:?}): its holder exited",
                self.id
            ),
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.holder_stdin.take();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn ns_id(path: &str) -> std::io::Result<String> {
    std::fs::read_link(path).map(|p| p.to_string_lossy().into_owned())
}

/// The iptables that works in the namespace. Debian's `iptables` is the nf_tables backend
/// (`iptables-nft`); `iptables-legacy` drives the older x_tables interface. A fresh namespace
/// starts with empty tables under either, and on this project's CI machines (Debian 12, kernel
/// 6.x, root) both work inside `unshare --net`; a kernel built without nf_tables would need the
/// legacy one, so the first that can list the filter table wins.
fn find_iptables(ns: &NetNs) -> &'static str {
    let mut errors = Vec::new();
    for candidate in ["iptables", "iptables-legacy"] {
        match ns
            .command(candidate)
            .args(["-w", "-S", "OUTPUT"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => return candidate,
            Ok(out) => errors.push(format!(
                "{candidate}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => errors.push(format!("{candidate}: {e}")),
        }
    }
    panic!("no working iptables in the namespace ({errors:?}); {HOW_TO_INSTALL}")
}

/// Move the calling thread into the network namespace `ns` (an open `/proc/PID/ns/net`).
fn setns_net(ns: &std::fs::File) -> std::io::Result<()> {
    // std has no setns; libc (linked by std on Linux) does. Declared here rather than adding
    // a dependency for one call.
    extern "C" {
        fn setns(fd: std::os::raw::c_int, nstype: std::os::raw::c_int) -> std::os::raw::c_int;
    }
    const CLONE_NEWNET: std::os::raw::c_int = 0x4000_0000;
    // SAFETY: setns only reads its two integer arguments; the descriptor is open for the call.
    // It changes the namespace of this thread alone, which ends right after binding.
    let rc = unsafe { setns(ns.as_raw_fd(), CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

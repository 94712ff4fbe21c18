//! The suites' one switch: `SPIN_BIN=PATH` runs every end-to-end suite
//! against `PATH up` (Spin's own binary, or this project's host binary,
//! which takes the same subcommand and flags) as a child process, instead
//! of the host in process. What only the in-process host can do (its
//! request stats, its movable clock, its key-value fault switch) is then
//! skipped, and every skip says so on stderr, by test name, after the
//! fixed prefix [`SKIPPED`].

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Storage;

/// The environment variable naming the external spin.
pub const SPIN_BIN: &str = "SPIN_BIN";

/// What every line about a skipped assertion starts with.
pub const SKIPPED: &str = "skipped under external spin:";

/// When set, a file every skip line is also appended to (`cargo xtask
/// test` lists them after the external run).
pub const SKIP_LOG: &str = "SPIN_SESSIONS_SKIP_LOG";

/// How long `spin up` may take to answer on its port.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a stopped `spin up` may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The external spin the suites run against, when `SPIN_BIN` names one.
pub fn external_spin() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os(SPIN_BIN).filter(|v| !v.is_empty())?);
    assert!(
        path.is_file(),
        "{SPIN_BIN}={} is not a file: name a spin binary (or the host's, \
         target/debug/spin-sessions-host)",
        path.display()
    );
    Some(path)
}

/// The project's host binary, next to this test's executable
/// (`target/debug/deps/..`; `cargo test --workspace` builds it).
pub fn host_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(Path::parent).unwrap();
    let binary = debug.join("spin-sessions-host");
    assert!(
        binary.exists(),
        "{} is missing: `cargo test --workspace` (or `cargo build --workspace --bins`) builds it",
        binary.display()
    );
    binary
}

/// The binary a test that needs a process of its own runs: the external
/// spin, or else the host's.
pub fn spin_binary() -> PathBuf {
    external_spin().unwrap_or_else(host_binary)
}

/// Whether the host's own instruments (request stats, the guest's clock,
/// the key-value fault switch) are at hand: always in process. Under an
/// external spin, says on stderr what the running test skips
/// (`skipped under external spin: <test>: <what> (needs the host's
/// instruments)`) and answers false.
pub fn instrumented(what: &str) -> bool {
    if external_spin().is_none() {
        return true;
    }
    say_skipped(what);
    false
}

/// Prints the skip line: straight to stderr, past the test harness's
/// capture, so that it shows for tests that pass too.
pub(super) fn say_skipped(what: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    let line = format!("{SKIPPED} {test}: {what} (needs the host's instruments)\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(log) = std::env::var_os(SKIP_LOG) {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// One `spin up` (of any binary that takes its flags) as a child process,
/// on a free port of its own. Killed, with the trigger processes it
/// started, when dropped.
pub struct SpinProcess {
    binary: PathBuf,
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stdout and stderr files, kept out of the state directory (which
    /// the tests search as a copy of the store).
    logs: tempfile::TempDir,
}

impl SpinProcess {
    /// Runs `BINARY up --from MANIFEST --listen 127.0.0.1:PORT --state-dir
    /// DIR [--runtime-config-file FILE] FLAGS…` with `SPIN_VARIABLE_*` set
    /// from `variables` (names as in spin.toml), and waits until it answers.
    pub fn start(
        binary: &Path,
        manifest: &Path,
        storage: &Storage,
        variables: &[(&str, &str)],
        flags: &[&str],
    ) -> SpinProcess {
        let mut logs = tempfile::tempdir().unwrap();
        let runtime_config = storage.runtime_config_file();
        // A port that was free when looked at may be taken before the child
        // binds it: then another is tried.
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut command = Command::new(binary);
            command
                .arg("up")
                .arg("--from")
                .arg(manifest)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--state-dir")
                .arg(storage.state.path());
            if let Some(file) = &runtime_config {
                command.arg("--runtime-config-file").arg(file);
            }
            command.args(flags);
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("SPIN_VARIABLE_") {
                    command.env_remove(name);
                }
            }
            for (name, value) in variables {
                command.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
            }
            command
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(logs.path().join("stdout")).unwrap())
                .stderr(std::fs::File::create(logs.path().join("stderr")).unwrap());
            let child = command
                .spawn()
                .unwrap_or_else(|e| panic!("{} does not run: {e}", binary.display()));
            let mut process = SpinProcess {
                binary: binary.to_path_buf(),
                child: Some(child),
                addr,
                logs,
            };
            match process.wait_until_it_answers() {
                Ok(()) => return process,
                Err(exited) if exited && process.stderr().contains("in use") => {
                    logs = process.take_logs();
                }
                Err(_) => {
                    let status = process.status();
                    panic!(
                        "`{} up` did not answer on {addr} within {START_TIMEOUT:?}: {status}\n\
                         its stderr:\n{}\nits stdout:\n{}",
                        process.binary.display(),
                        process.stderr(),
                        process.stdout()
                    )
                }
            }
        }
        panic!("`{} up` found no free port", binary.display());
    }

    /// `Err(true)` when the child exited, `Err(false)` on the timeout.
    fn wait_until_it_answers(&mut self) -> Result<(), bool> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                return Err(true);
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn status(&mut self) -> String {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => format!("it exited ({status})"),
            _ => "it is still running".to_owned(),
        }
    }

    fn take_logs(mut self) -> tempfile::TempDir {
        self.kill();
        std::mem::replace(&mut self.logs, tempfile::tempdir().unwrap())
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stderr")).unwrap_or_default()
    }

    /// What it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("stdout")).unwrap_or_default()
    }

    /// Stops it as Ctrl-C does (SIGINT; `spin up` passes it on to its
    /// trigger processes), killing whatever is left after
    /// [`STOP_TIMEOUT`].
    pub fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let family = descendants(child.id());
        if signal("INT", &[child.id()]) {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill_all(child, family);
    }

    /// SIGKILL, to it and to the processes it started: no shutdown, no
    /// flush, nothing.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            let family = descendants(child.id());
            kill_all(child, family);
        }
    }
}

impl Drop for SpinProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on, outside the ephemeral range (where client
/// sockets and the tests' redis-servers take theirs).
fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        // RandomState is seeded afresh for every value.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let port = 20_000 + (hasher.finish() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A process as /proc shows it: its id, its parent's, and when it started
/// (so that a recycled id is never mistaken for it).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: u32,
    parent: u32,
    started: u64,
}

fn process(pid: u32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid … starttime …`; comm may hold anything.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Process {
        pid,
        parent: fields.get(1)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

/// Every process below `root` (`spin up` runs its trigger as a child).
fn descendants(root: u32) -> Vec<Process> {
    let all: Vec<Process> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter_map(process)
                .collect()
        })
        .unwrap_or_default();
    let mut found = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for p in all.iter().filter(|p| p.parent == parent) {
            found.push(*p);
            parents.push(p.pid);
        }
    }
    found
}

/// Sends `SIG<name>` to `pids` (with the `kill` command: the tests link no
/// libc of their own). False when that could not be done.
fn signal(name: &str, pids: &[u32]) -> bool {
    if pids.is_empty() {
        return true;
    }
    Command::new("kill")
        .arg("-s")
        .arg(name)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGKILL to `child` and to those of `family` that are still the same
/// processes; then reaps `child`.
fn kill_all(mut child: Child, family: Vec<Process>) {
    let mut pids: Vec<u32> = family
        .into_iter()
        .filter(|p| process(p.pid).is_some_and(|now| now.started == p.started))
        .map(|p| p.pid)
        .collect();
    if child.try_wait().unwrap().is_none() {
        pids.push(child.id());
    }
    signal("KILL", &pids);
    let _ = child.kill();
    let _ = child.wait();
}

//! Programs the tests start: a child process killed when dropped, started and waited for
//! until it listens, or until it names its port.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// A child process, killed (and reaped) when dropped.
pub struct Process {
    pub child: Child,
    /// Held open: some programs exit when their standard input closes.
    pub stdin: Option<ChildStdin>,
}

impl Process {
    pub fn new(child: Child) -> Process {
        Process { child, stdin: None }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` with its output in the file `log` and waits until it accepts
/// connections on `port`. Panics with `missing` if it cannot start, and with the log if it
/// exits first or does not listen within 10 s (killed then).
pub async fn start_listening(
    mut command: Command,
    port: u16,
    log: &Path,
    missing: &str,
) -> Process {
    let what = command.get_program().to_string_lossy().into_owned();
    let output = std::fs::File::create(log).unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .unwrap_or_else(|e| panic!("{missing} ({what}: {e})"));
    let mut process = Process::new(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return process;
        }
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!("{what} exited ({status}) before listening:\n{}", log_text());
        }
        // The process is killed as it drops with the panic.
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on port {port} after 10 s:\n{}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The port a program names on its first line of output, `READY <port>`, within 10 s;
/// `None` if it says something else, nothing, or exits first.
pub async fn ready_port(stdout: ChildStdout) -> Option<u16> {
    let ready = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            line
        }),
    )
    .await;
    let line = match ready {
        Ok(Ok(line)) => line,
        _ => String::new(),
    };
    line.strip_prefix("READY ")
        .and_then(|port| port.trim().parse().ok())
}

/// A child's output, collected line by line on a thread of its own as it is written.
#[derive(Clone)]
pub struct OutputLines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl OutputLines {
    /// Starts collecting what `output` (a child's stdout) writes.
    pub fn collect(output: ChildStdout) -> OutputLines {
        let lines = OutputLines(Default::default());
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines().map_while(Result::ok) {
                collected.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    /// How many lines were written so far.
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The first line after the first `skip` that contains `text`, waiting at most 10 s.
    pub async fn wait_for(&self, text: &str, skip: usize) -> String {
        for _ in 0..1000 {
            if let Some(line) = self
                .0
                .lock()
                .unwrap()
                .iter()
                .skip(skip)
                .find(|line| line.contains(text))
            {
                return line.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "no line with {text:?} in 10 s; the gate wrote:\n{}",
            self.0.lock().unwrap().join("\n")
        );
    }
}

//! A `payrelay serve` process (the real binary, for what only a process has: a file
//! limit, signals), with its log kept for assertions; killed on drop.
#![allow(dead_code)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct NodeProcess {
    child: std::process::Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// Starts a node with the test app and `settings` (top-level TOML lines), under
    /// `ulimit -n files` when given, and waits for it to listen.
    pub fn start(files: Option<u32>, settings: &str) -> NodeProcess {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("payrelay-node-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("payrelay.toml");
        // An in-memory SQLite database unless the settings name one.
        let database = if settings.contains("database_url") {
            ""
        } else {
            "database_url = \"sqlite::memory:\"\n"
        };
        std::fs::write(
            &config,
            format!(
                "bind = \"127.0.0.1:0\"\n{database}{settings}\n\
                 [[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n"
            ),
        )
        .unwrap();
        let limit = files.map_or(String::new(), |files| format!("ulimit -n {files} && "));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{limit}exec \"$0\" serve --config \"$1\""))
            .arg(env!("CARGO_BIN_EXE_payrelay"))
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    if line.contains("payrelay listening")
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(line.clone());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the node logs its address");
        let addr = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("addr="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line}"));
        NodeProcess { child, addr, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the node a signal by name (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// CPU seconds (user + system) the node has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second).
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    pub fn log_lines_containing(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

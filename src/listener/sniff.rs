//! An HTTP/1 framing check that sees the raw request head before hyper normalises it.
//!
//! hyper quietly resolves some ambiguous framings (it drops `Content-Length` when
//! `Transfer-Encoding` is present, and merges duplicate equal `Content-Length`s), so the request
//! the proxy receives no longer shows the ambiguity a different server behind us might resolve the
//! other way (request smuggling). [`SniffedIo`] wraps a connection, parses each request head it
//! reads (splitting lines as hyper's parser does), follows the body framing to find the next head,
//! and records one [`Framing`] verdict per request in a [`FramingLog`]; the proxy takes the verdict
//! for each request and refuses ambiguous ones before anything is sent upstream (invariant 1).
//!
//! HTTP/2 connections (the prior-knowledge preface) are passed through untouched.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The verdict on one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One clear body length (or none).
    Clean,
    /// Framing that servers may read differently; the reason is safe to show the client.
    Ambiguous(&'static str),
}

/// Verdicts in request order, shared between the IO wrapper and the connection's service.
#[derive(Debug, Default)]
pub struct FramingLog {
    verdicts: Mutex<VecDeque<Framing>>,
    /// Set once the connection carries another protocol (after a 101): stop parsing.
    stopped: AtomicBool,
}

/// More pipelined requests than this waiting for the service is abnormal; the sniffer stops and the
/// later requests are refused as unverifiable.
const MAX_QUEUED: usize = 64;

impl FramingLog {
    /// Takes the verdict of the next request; `None` if the head could not be checked.
    pub fn take(&self) -> Option<Framing> {
        self.verdicts.lock().ok()?.pop_front()
    }

    /// Tells the sniffer that the connection was upgraded: the bytes that follow are not HTTP/1.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Queues a verdict; false when the queue is full (the sniffer then stops).
    fn push(&self, f: Framing) -> bool {
        match self.verdicts.lock() {
            Ok(mut v) if v.len() < MAX_QUEUED => {
                v.push_back(f);
                true
            }
            _ => false,
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug)]
enum State {
    /// Connection start: may be an HTTP/2 preface.
    Start,
    /// Collecting a request head.
    Head,
    /// Skipping `n` body bytes.
    Body(u64),
    /// Chunked body: reading a chunk-size line.
    ChunkSize { size: u64, digits: bool, in_ext: bool },
    /// Chunked body: skipping chunk data.
    ChunkData(u64),
    /// Chunked body: the CRLF after chunk data (bytes still expected).
    ChunkDataEnd(u8),
    /// Chunked body: trailer lines; `line_len` is the current line's length so far.
    Trailers { line_len: usize },
    /// Nothing more to check (HTTP/2, an upgrade, or input hyper will refuse anyway).
    Passthrough,
}

/// The sniffing state of one connection.
#[derive(Debug)]
struct Sniffer {
    state: State,
    head: Vec<u8>,
    max_head: usize,
    max_headers: usize,
    log: Arc<FramingLog>,
}

impl Sniffer {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Passthrough => return,
                State::Start => {
                    let want = H2_PREFACE.len() - self.head.len();
                    let take = want.min(data.len());
                    self.head.extend_from_slice(&data[..take]);
                    if !H2_PREFACE.starts_with(&self.head) {
                        // Not HTTP/2: replay what we held as the start of a head.
                        let held = std::mem::take(&mut self.head);
                        self.state = State::Head;
                        self.feed(&held);
                        data = &data[take..];
                        continue;
                    }
                    data = &data[take..];
                    if self.head.len() == H2_PREFACE.len() {
                        self.head = Vec::new();
                        self.state = State::Passthrough;
                        return;
                    }
                }
                State::Head if self.head.is_empty() => {
                    // Fast path: the whole head is usually in one read; judge it in place.
                    while data.starts_with(b"\r\n") {
                        data = &data[2..];
                    }
                    if data.is_empty() {
                        return;
                    }
                    match find_head_end(data, 0) {
                        Some(end) => {
                            self.state = self.judge(&data[..end]);
                            data = &data[end..];
                        }
                        None => {
                            self.head.extend_from_slice(data);
                            return;
                        }
                    }
                }
                State::Head => {
                    let before = self.head.len();
                    let scan_from = before.saturating_sub(3);
                    self.head.extend_from_slice(data);
                    let Some(end) = find_head_end(&self.head, scan_from) else {
                        if self.head.len() > self.max_head {
                            self.state = State::Passthrough; // hyper refuses it
                            self.head = Vec::new();
                        }
                        return;
                    };
                    let mut head = std::mem::take(&mut self.head);
                    self.state = self.judge(&head[..end]);
                    head.clear();
                    self.head = head; // keep the capacity for the next partial head
                    data = &data[end - before..];
                }
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::ChunkDataEnd(2);
                    }
                }
                State::ChunkDataEnd(left) => {
                    let b = data[0];
                    data = &data[1..];
                    let expect = if *left == 2 { b'\r' } else { b'\n' };
                    if b != expect {
                        self.state = State::Passthrough; // hyper fails the body
                        return;
                    }
                    *left -= 1;
                    if *left == 0 {
                        self.state = State::ChunkSize { size: 0, digits: false, in_ext: false };
                    }
                }
                State::ChunkSize { size, digits, in_ext } => {
                    let b = data[0];
                    data = &data[1..];
                    match b {
                        b'\n' => {
                            if !*digits {
                                self.state = State::Passthrough;
                                return;
                            }
                            self.state =
                                if *size == 0 { State::Trailers { line_len: 0 } } else { State::ChunkData(*size) };
                        }
                        b'\r' => {}
                        _ if *in_ext => {}
                        b';' | b' ' | b'\t' => *in_ext = true,
                        _ => match (b as char).to_digit(16) {
                            Some(d) if *size < (1 << 56) => {
                                *size = *size * 16 + u64::from(d);
                                *digits = true;
                            }
                            _ => {
                                self.state = State::Passthrough;
                                return;
                            }
                        },
                    }
                }
                State::Trailers { line_len } => {
                    let b = data[0];
                    data = &data[1..];
                    match b {
                        b'\n' if *line_len == 0 => self.state = State::Head,
                        b'\n' => *line_len = 0,
                        b'\r' => {}
                        _ => {
                            *line_len += 1;
                            if *line_len > self.max_head {
                                self.state = State::Passthrough;
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Records the verdict for a complete head and returns the body state that follows it.
    ///
    /// Only `Content-Length` and `Transfer-Encoding` matter here. Lines are split the way hyper's
    /// parser accepts them (CRLF or bare LF); input that parser refuses never reaches the proxy, so
    /// such heads just end the sniffing.
    fn judge(&mut self, head: &[u8]) -> State {
        let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let Some(request_line) = lines.next() else { return State::Passthrough };
        let http10 = request_line.ends_with(b"HTTP/1.0");
        let mut cl: Option<u64> = None;
        let (mut cl_count, mut te_count, mut fields) = (0usize, 0usize, 0usize);
        let mut te_chunked = false;
        let mut verdict = Framing::Clean;
        for line in lines {
            if line.is_empty() {
                break;
            }
            fields += 1;
            if fields > self.max_headers {
                return State::Passthrough; // hyper answers 431
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else { return State::Passthrough };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                cl_count += 1;
                match std::str::from_utf8(value).ok().filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                {
                    Some(v) => cl = v.parse().ok(),
                    None => verdict = Framing::Ambiguous("The Content-Length header is not a single decimal number"),
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te_count += 1;
                te_chunked = value.eq_ignore_ascii_case(b"chunked");
                if !te_chunked {
                    verdict = Framing::Ambiguous("The only Transfer-Encoding accepted is `chunked`");
                }
            }
        }
        if cl_count > 1 {
            verdict = Framing::Ambiguous("The request has more than one Content-Length header");
        }
        if te_count > 1 {
            verdict = Framing::Ambiguous("The request has more than one Transfer-Encoding header");
        }
        if te_count > 0 && cl_count > 0 {
            verdict = Framing::Ambiguous("The request has both Content-Length and Transfer-Encoding");
        }
        if te_count > 0 && http10 {
            verdict = Framing::Ambiguous("HTTP/1.0 requests cannot use Transfer-Encoding");
        }
        if !self.log.push(verdict) {
            return State::Passthrough;
        }
        // An upgrade request is framed like any other: if it is refused, the connection goes on
        // with HTTP/1; if it is granted, the proxy calls `FramingLog::stop` before answering 101.
        // Mirror hyper: a Transfer-Encoding wins over Content-Length.
        if te_count > 0 {
            if te_chunked {
                State::ChunkSize { size: 0, digits: false, in_ext: false }
            } else {
                State::Passthrough
            }
        } else {
            match cl {
                Some(n) if n > 0 => State::Body(n),
                Some(_) => State::Head,
                None if cl_count > 0 => State::Passthrough,
                None => State::Head,
            }
        }
    }
}

fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| from + i + 4)
}

/// A connection whose incoming bytes are checked by the sniffer on their way to hyper.
#[derive(Debug)]
pub struct SniffedIo<T> {
    inner: T,
    sniffer: Sniffer,
    /// Until the protocol is known (first request byte, or the whole HTTP/2 preface), a silent
    /// client is cut off here; hyper's own header timeout only starts once HTTP/1 is chosen.
    detect_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> SniffedIo<T> {
    /// Wraps `inner`; heads longer than `max_head` bytes or with more than `max_headers` fields are
    /// left to hyper's own limits. A client that has not shown its protocol within `detect_timeout`
    /// is disconnected.
    pub fn new(
        inner: T,
        max_head: usize,
        max_headers: usize,
        detect_timeout: Duration,
    ) -> (SniffedIo<T>, Arc<FramingLog>) {
        let log = Arc::new(FramingLog::default());
        let sniffer = Sniffer { state: State::Start, head: Vec::new(), max_head, max_headers, log: log.clone() };
        let deadline = Some(Box::pin(tokio::time::sleep(detect_timeout)));
        (SniffedIo { inner, sniffer, detect_deadline: deadline }, log)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SniffedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(deadline) = this.detect_deadline.as_mut() {
            if matches!(this.sniffer.state, State::Start) {
                if res.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the header read timeout",
                    )));
                }
            } else {
                this.detect_deadline = None;
            }
        }
        if let Poll::Ready(Ok(())) = res {
            if this.sniffer.log.stopped() {
                this.sniffer.state = State::Passthrough;
                this.sniffer.head = Vec::new();
            }
            if !matches!(this.sniffer.state, State::Passthrough) {
                this.sniffer.feed(&buf.filled()[before..]);
            }
            if !matches!(this.sniffer.state, State::Start) {
                this.detect_deadline = None;
            }
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SniffedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniff(chunks: &[&[u8]]) -> Vec<Framing> {
        let log = Arc::new(FramingLog::default());
        let mut s =
            Sniffer { state: State::Start, head: Vec::new(), max_head: 64 * 1024, max_headers: 100, log: log.clone() };
        for c in chunks {
            s.feed(c);
        }
        let mut out = Vec::new();
        while let Some(v) = log.take() {
            out.push(v);
        }
        out
    }

    #[test]
    fn clean_pipelined_requests_with_bodies() {
        let all: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(sniff(&[all]), vec![Framing::Clean; 4]);
        // The same bytes one at a time give the same verdicts.
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(sniff(&bytes), vec![Framing::Clean; 4]);
    }

    #[test]
    fn smuggling_shapes_are_flagged() {
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
        ];
        for c in cases {
            let v = sniff(&[c]);
            assert!(matches!(v.as_slice(), [Framing::Ambiguous(_)]), "{:?} -> {v:?}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn h2_preface_passes_through() {
        let mut p = H2_PREFACE.to_vec();
        p.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00GET / HTTP/1.1\r\n\r\n");
        assert!(sniff(&[&p]).is_empty());
        // A request line starting like the preface but diverging is still checked.
        assert_eq!(sniff(&[b"PRI /x HTTP/1.1\r\nHost: x\r\n\r\n"]), vec![Framing::Clean]);
    }
}

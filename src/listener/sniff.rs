//! An HTTP/1 framing check that sees the raw request head before hyper normalises it.
//!
//! hyper quietly resolves some ambiguous framings (it drops `Content-Length` when
//! `Transfer-Encoding` is present, and merges duplicate equal `Content-Length`s), so the request
//! the proxy receives no longer shows the ambiguity a different server behind us might resolve the
//! other way (request smuggling). [`SniffedIo`] wraps a connection, parses each request head it
//! reads with `httparse` (the parser hyper uses), follows the body framing to find the next head,
//! and records one [`Framing`] verdict per request in a [`FramingLog`]; the proxy takes the verdict
//! for each request and refuses ambiguous ones before anything is sent upstream (invariant 1).
//!
//! HTTP/2 connections (the prior-knowledge preface) are passed through untouched.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

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
}

impl FramingLog {
    /// Takes the verdict of the next request; `None` if the head could not be checked.
    pub fn take(&self) -> Option<Framing> {
        self.verdicts.lock().ok()?.pop_front()
    }
    fn push(&self, f: Framing) {
        if let Ok(mut v) = self.verdicts.lock() {
            v.push_back(f);
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
                State::Head => {
                    let scan_from = self.head.len().saturating_sub(3);
                    self.head.extend_from_slice(data);
                    data = &[];
                    // Leading CRLFs before a request line are ignored by hyper; drop them too.
                    while self.head.starts_with(b"\r\n") {
                        self.head.drain(..2);
                    }
                    let Some(end) = find_head_end(&self.head, scan_from) else {
                        if self.head.len() > self.max_head {
                            self.state = State::Passthrough; // hyper refuses it
                            self.head = Vec::new();
                        }
                        continue;
                    };
                    let rest = self.head.split_off(end);
                    let head = std::mem::take(&mut self.head);
                    self.state = self.judge(&head);
                    if !rest.is_empty() {
                        self.feed(&rest);
                    }
                    return;
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
                            self.state = if *size == 0 { State::Trailers { line_len: 0 } } else { State::ChunkData(*size) };
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
    fn judge(&mut self, head: &[u8]) -> State {
        let mut headers = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return State::Passthrough, // hyper answers 400/431 and closes
        }
        let http10 = req.version == Some(0);
        let mut cl: Option<u64> = None;
        let mut cl_count = 0;
        let mut te_count = 0;
        let mut te_chunked = false;
        let mut verdict = Framing::Clean;
        let mut upgrade = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl_count += 1;
                let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                match v.parse::<u64>() {
                    Ok(n) if !v.starts_with('+') => cl = Some(n),
                    _ => verdict = Framing::Ambiguous("the Content-Length header is not a single decimal number"),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te_count += 1;
                let v = std::str::from_utf8(h.value).unwrap_or("").trim();
                te_chunked = v.eq_ignore_ascii_case("chunked");
                if !te_chunked {
                    verdict = Framing::Ambiguous("the only Transfer-Encoding accepted is `chunked`");
                }
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if cl_count > 1 {
            verdict = Framing::Ambiguous("the request has more than one Content-Length header");
        }
        if te_count > 1 {
            verdict = Framing::Ambiguous("the request has more than one Transfer-Encoding header");
        }
        if te_count > 0 && cl_count > 0 {
            verdict = Framing::Ambiguous("the request has both Content-Length and Transfer-Encoding");
        }
        if te_count > 0 && http10 {
            verdict = Framing::Ambiguous("HTTP/1.0 requests cannot use Transfer-Encoding");
        }
        self.log.push(verdict);
        if upgrade {
            // After a 101 the bytes are another protocol; hyper only calls the service for the
            // upgrade request itself, so nothing after it needs a verdict.
            return State::Passthrough;
        }
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
                _ => State::Head,
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
}

impl<T> SniffedIo<T> {
    /// Wraps `inner`; heads longer than `max_head` bytes or with more than `max_headers` fields are
    /// left to hyper's own limits.
    pub fn new(inner: T, max_head: usize, max_headers: usize) -> (SniffedIo<T>, Arc<FramingLog>) {
        let log = Arc::new(FramingLog::default());
        let sniffer = Sniffer { state: State::Start, head: Vec::new(), max_head, max_headers, log: log.clone() };
        (SniffedIo { inner, sniffer }, log)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SniffedIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            if !matches!(this.sniffer.state, State::Passthrough) {
                this.sniffer.feed(&buf.filled()[before..]);
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
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
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
        let mut s = Sniffer { state: State::Start, head: Vec::new(), max_head: 64 * 1024, max_headers: 100, log: log.clone() };
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

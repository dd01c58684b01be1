//! HTTP/1.x framing for the hello-world servers, without I/O: requests in,
//! responses out, and whether the connection ends after them. HTTP/1.1's
//! connection rules are kept: a request with `Connection: close`, or an
//! HTTP/1.0 one without `Connection: keep-alive`, gets `Connection: close`
//! in its response, and nothing after it is answered. `Content-Length`
//! bodies are skipped; a chunked body gets 400 and the close.

use std::io::Write;

/// The body of every 200 response.
pub const BODY: &[u8] = b"Hello world\n";
/// No request head is longer: a connection that sends one is dropped.
pub const MAX_HEAD: usize = 64 * 1024;

/// One connection's requests, as its bytes arrive.
#[derive(Default)]
pub struct Session {
    /// Bytes of a request not yet complete.
    input: Vec<u8>,
    /// Body bytes of the current request still to skip.
    skip: usize,
    /// The last response said `Connection: close`: once it is written, the
    /// connection ends and no further request on it is read.
    closing: bool,
}

impl Session {
    /// Takes bytes read from the connection and appends to `out` the
    /// response to every request they complete (pipelining), up to one
    /// that ends the connection. Returns false when the connection must be
    /// dropped at once (a request head longer than [`MAX_HEAD`]).
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        if self.closing {
            return true; // what follows a closing request is not answered
        }
        self.input.extend_from_slice(data);
        while !self.closing {
            let skipped = self.skip.min(self.input.len());
            self.input.drain(..skipped);
            self.skip -= skipped;
            if self.skip > 0 {
                break;
            }
            let Some(end) = find(&self.input, b"\r\n\r\n") else { break };
            let head = parse_head(&self.input[..end]);
            self.input.drain(..end + 4);
            self.skip = head.body;
            respond(out, &head);
            self.closing = !head.keep_alive;
        }
        self.input.len() <= MAX_HEAD
    }

    /// True once a response said `Connection: close`: write what is
    /// pending, then end the connection.
    pub fn closing(&self) -> bool {
        self.closing
    }
}

/// What the server needs of a request head.
pub struct Head {
    /// Whether the connection stays open after the response: HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with
    /// `Connection: keep-alive`. A head that does not parse closes it.
    pub keep_alive: bool,
    /// Body bytes that follow the head (`Content-Length`).
    pub body: usize,
    /// The status to answer with: 200, or 400 for a head it cannot frame.
    pub status: u16,
    /// The response's protocol version: the request's, or 1.1.
    pub version: &'static str,
}

/// Parses a request head (without its final blank line).
pub fn parse_head(raw: &[u8]) -> Head {
    let bad = Head { keep_alive: false, body: 0, status: 400, version: "HTTP/1.1" };
    let Ok(text) = std::str::from_utf8(raw) else { return bad };
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let version = match request_line.rsplit(' ').next() {
        Some("HTTP/1.1") => "HTTP/1.1",
        Some("HTTP/1.0") => "HTTP/1.0",
        _ => return bad,
    };
    let (mut close, mut keep_alive, mut body) = (false, false, 0);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { return bad };
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) => body = n,
                Err(_) => return bad,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // A chunked body cannot be skipped without decoding it: refuse
            // it and close rather than misread the body as requests.
            return Head { version, ..bad };
        }
    }
    let keep_alive = !close && (version == "HTTP/1.1" || keep_alive);
    Head { keep_alive, body, status: 200, version }
}

/// Appends the response to `head`: says `Connection: close` when the
/// connection ends after it, and `Connection: keep-alive` to an HTTP/1.0
/// client whose connection stays open.
pub fn respond(out: &mut Vec<u8>, head: &Head) {
    let (status, body): (&str, &[u8]) = match head.status {
        200 => ("200 OK", BODY),
        _ => ("400 Bad Request", b"bad request\n"),
    };
    let connection = match (head.keep_alive, head.version) {
        (false, _) => "Connection: close\r\n",
        (true, "HTTP/1.0") => "Connection: keep-alive\r\n",
        (true, _) => "",
    };
    let _ = write!(
        out,
        "{} {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{connection}\r\n",
        head.version,
        body.len()
    );
    out.extend_from_slice(body);
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

//! The Redis node's ingest connection: a plain socket that speaks the part of
//! RESP2 pub/sub needs (AUTH, SELECT, (P)(UN)SUBSCRIBE and their pushes).
//!
//! Why not the `redis` crate's `PubSub`: it parses one message per call
//! through a generic parser into owned values (the channel and payload copied
//! out of its buffer, then cloned into a `Msg`). Here one `read` takes
//! whatever Redis has sent, up to the buffer's size, and every complete
//! message in it is handed out as slices of the buffer: the payload is copied
//! once, into the frame that is built from it.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};

/// Bytes asked for per `read`; the buffer grows beyond it only for a
/// message that does not fit.
const READ_BYTES: usize = 256 << 10;

enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(read)).and_then(|_| s.set_write_timeout(Some(write))),
            #[cfg(unix)]
            Stream::Unix(s) => s.set_read_timeout(Some(read)).and_then(|_| s.set_write_timeout(Some(write))),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.write_all(buf),
        }
    }
}

/// One reply or push from Redis, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// A `message` or `pmessage` push.
    Message { channel: &'a [u8], payload: &'a [u8] },
    /// A (P)(UN)SUBSCRIBE confirmation: one per channel or pattern named.
    Confirmation,
    /// `+…`
    Status(&'a [u8]),
    /// `-…`
    Error(&'a [u8]),
    /// Anything else (an integer, a bulk string, another array).
    Other,
}

/// A pub/sub connection to Redis.
pub(crate) struct Ingest {
    stream: Stream,
    buf: Vec<u8>,
    /// The unparsed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    timeout: Duration,
}

impl Ingest {
    /// Connects (TCP or a Unix socket; TLS is not built in), authenticates
    /// and selects the database as `info` says. `timeout` bounds the
    /// connect and every read and write until [`Ingest::set_read_timeout`].
    pub fn connect(info: &ConnectionInfo, timeout: Duration) -> io::Result<Ingest> {
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}:{port} has no address"));
                let mut connected = None;
                for addr in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = connected.ok_or(last)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            other => {
                return Err(io::Error::new(io::ErrorKind::Unsupported, format!("redis address {other} needs TLS")));
            }
        };
        stream.set_timeouts(timeout, timeout)?;
        let mut conn = Ingest { stream, buf: vec![0; READ_BYTES], start: 0, end: 0, timeout };
        let redis = info.redis_settings();
        if let Some(password) = redis.password() {
            match redis.username() {
                Some(user) => conn.command(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
                None => conn.command(&[b"AUTH", password.as_bytes()])?,
            }
        }
        if redis.db() != 0 {
            conn.command(&[b"SELECT", redis.db().to_string().as_bytes()])?;
        }
        Ok(conn)
    }

    /// How long [`Ingest::fill`] waits for bytes.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.stream.set_timeouts(timeout, self.timeout)
    }

    /// Sends one command.
    pub fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        let mut cmd = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        cmd.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            cmd.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            cmd.extend_from_slice(arg);
            cmd.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&cmd)
    }

    /// Sends a command that answers `+OK` (before subscribing: no push
    /// can come first).
    fn command(&mut self, args: &[&[u8]]) -> io::Result<()> {
        self.send(args)?;
        let name = String::from_utf8_lossy(args[0]).into_owned();
        loop {
            let mut answer = None;
            self.drain(|reply| {
                if answer.is_none() {
                    answer = Some(match reply {
                        Reply::Status(_) => Ok(()),
                        Reply::Error(e) => Err(format!("{name}: {}", String::from_utf8_lossy(e))),
                        other => Err(format!("{name}: unexpected reply {other:?}")),
                    });
                }
            })?;
            match answer {
                Some(result) => return result.map_err(io::Error::other),
                None if !self.fill()? => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no reply to {name}")));
                }
                None => {}
            }
        }
    }

    /// Reads what Redis has sent, waiting up to the read timeout. False when
    /// nothing came in time (or a signal interrupted the wait); an error
    /// when the connection failed or Redis closed it.
    pub fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.buf.len() - self.end < READ_BYTES / 4 {
            // Move a partial reply to the front; grow if it fills the buffer.
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "redis closed the connection")),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Hands every complete reply read so far to `f`, in order. A malformed
    /// reply is an error (the connection is out of step).
    pub fn drain(&mut self, mut f: impl FnMut(Reply<'_>)) -> io::Result<()> {
        let mut at = self.start;
        let result = loop {
            match parse(&self.buf[at..self.end]) {
                Ok(Some((reply, used))) => {
                    at += used;
                    f(reply);
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.start = at;
        result
    }
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("redis protocol: {what}"))
}

/// The line at the start of `buf` (without `\r\n`) and the bytes it takes;
/// `None` when incomplete.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let cr = memchr::memchr(b'\r', buf)?;
    (buf.len() > cr + 1).then(|| (&buf[..cr], cr + 2))
}

fn number(text: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or_else(|| protocol_error("bad length"))
}

/// An array element (a nil bulk string is `None`) and the bytes it takes.
type Element<'a> = (Option<&'a [u8]>, usize);

/// One element of an array: a bulk string, an integer or a simple string
/// as its text. `None` when incomplete.
fn element(buf: &[u8]) -> io::Result<Option<Element<'_>>> {
    let Some((head, used)) = line(buf) else { return Ok(None) };
    match head.first() {
        Some(b'$') => {
            let len = number(&head[1..])?;
            if len < 0 {
                return Ok(Some((None, used)));
            }
            let end = used + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(protocol_error("bulk string without its line end"));
            }
            Ok(Some((Some(&buf[used..end]), end + 2)))
        }
        Some(b':' | b'+') => Ok(Some((Some(&head[1..]), used))),
        _ => Err(protocol_error("unexpected element in a push")),
    }
}

/// The reply at the start of `buf` and the bytes it takes; `None` when
/// incomplete.
pub(crate) fn parse(buf: &[u8]) -> io::Result<Option<(Reply<'_>, usize)>> {
    let Some(&kind) = buf.first() else { return Ok(None) };
    match kind {
        b'+' | b'-' | b':' => Ok(line(buf).map(|(head, used)| {
            let text = &head[1..];
            let reply = match kind {
                b'+' => Reply::Status(text),
                b'-' => Reply::Error(text),
                _ => Reply::Other,
            };
            (reply, used)
        })),
        b'$' => Ok(element(buf)?.map(|(_, used)| (Reply::Other, used))),
        b'*' => {
            let Some((head, mut used)) = line(buf) else { return Ok(None) };
            let n = number(&head[1..])?;
            let mut items: [Option<&[u8]>; 4] = [None; 4];
            for i in 0..n.max(0) as usize {
                let Some((item, took)) = element(&buf[used..])? else { return Ok(None) };
                if let Some(slot) = items.get_mut(i) {
                    *slot = item;
                }
                used += took;
            }
            let reply = match (n, items) {
                (3, [Some(b"message"), Some(channel), Some(payload), _]) => Reply::Message { channel, payload },
                (4, [Some(b"pmessage"), Some(_), Some(channel), Some(payload)]) => Reply::Message { channel, payload },
                (3, [Some(b"subscribe" | b"unsubscribe" | b"psubscribe" | b"punsubscribe"), ..]) => Reply::Confirmation,
                _ => Reply::Other,
            };
            Ok(Some((reply, used)))
        }
        _ => Err(protocol_error("unexpected reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$13\r\ntimeline:1234\r\n:1\r\n\
*3\r\n$7\r\nmessage\r\n$13\r\ntimeline:1234\r\n$10\r\n{\"a\":\"\r\n\"}\r\n\
*4\r\n$8\r\npmessage\r\n$10\r\ntimeline:*\r\n$15\r\ntimeline:public\r\n$0\r\n\r\n\
+OK\r\n-ERR wrong\r\n:7\r\n$-1\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n\
*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n";

    fn expected() -> Vec<(Reply<'static>, usize)> {
        vec![
            (Reply::Confirmation, 43),
            (Reply::Message { channel: b"timeline:1234", payload: b"{\"a\":\"\r\n\"}" }, 54),
            (Reply::Message { channel: b"timeline:public", payload: b"" }, 63),
            (Reply::Status(b"OK"), 5),
            (Reply::Error(b"ERR wrong"), 12),
            (Reply::Other, 4),
            (Reply::Other, 5),
            (Reply::Other, 20),
            (Reply::Confirmation, 31),
        ]
    }

    #[test]
    fn replies_are_parsed_whole_and_only_when_complete() {
        let mut at = 0;
        for (want, len) in expected() {
            let rest = &STREAM[at..];
            // Every proper prefix of the reply is incomplete.
            for cut in 0..len {
                assert!(parse(&rest[..cut]).unwrap().is_none(), "{want:?} cut at {cut}");
            }
            let (got, used) = parse(rest).unwrap().unwrap();
            assert_eq!((got, used), (want, len));
            at += len;
        }
        assert_eq!(at, STREAM.len());
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [&b"?x\r\n"[..], b"*1\r\n*0\r\n", b"$3\r\nabcd\r\n", b"*x\r\n", b"$-x\r\n"] {
            assert_eq!(parse(bad).unwrap_err().kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
    }

    /// A real socket pair: replies split across reads at every byte and
    /// messages larger than the buffer come out whole and in order.
    #[test]
    fn drain_hands_out_what_fill_read_across_reads() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut conn =
            Ingest { stream: Stream::Unix(a), buf: vec![0; 64], start: 0, end: 0, timeout: Duration::from_secs(1) };
        let big = vec![b'x'; 300];
        let mut sent = STREAM.to_vec();
        sent.extend_from_slice(format!("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n${}\r\n", big.len()).as_bytes());
        sent.extend_from_slice(&big);
        sent.extend_from_slice(b"\r\n");
        let writer = std::thread::spawn(move || {
            for byte in sent.chunks(7) {
                b.write_all(byte).unwrap();
            }
            b
        });
        let mut got = Vec::new();
        while got.len() < expected().len() + 1 {
            assert!(conn.fill().unwrap(), "the writer sends everything within the timeout");
            conn.drain(|r| {
                got.push(match r {
                    Reply::Message { payload, .. } if payload.len() == 300 => "big".to_string(),
                    other => format!("{other:?}"),
                })
            })
            .unwrap();
        }
        let mut want: Vec<String> = expected().into_iter().map(|(r, _)| format!("{r:?}")).collect();
        want.push("big".into());
        assert_eq!(got, want);
        drop(writer.join().unwrap());
        assert_eq!(conn.fill().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}

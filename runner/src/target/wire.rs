//! HTTP/1.1 over a plain TCP connection, for the hot path of `http://` targets. A request is bytes prepared before
//! the clock starts; the response is parsed with httparse in a buffer the connection keeps, its body counted (and
//! kept only when a response check needs it), framed by Content-Length, chunked encoding or the connection's close.
//! hyper's client runs each connection as a task of its own behind a channel; per request that costs more user
//! CPU than the rest of the engine together (measured in `benches/engine.py`, see the #4 note), so plain-http
//! HTTP/1.1 takes this path and HTTP/2 and TLS stay on hyper.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::openai::TokenReader;

/// A response head larger than this is refused: no model server sends one, and it bounds the buffer.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// What went wrong in one exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// The server closed the connection before a byte of the response: on a reused connection, it had closed an
    /// idle keep-alive connection, and the request can go again on a new one.
    ClosedBeforeResponse,
    /// The body passed `max_body_bytes`.
    TooLarge,
    /// Not HTTP/1.x as RFC 9112 frames it, or the connection failed mid-response.
    Broken,
}

pub struct Response {
    pub status: u16,
    /// The body when asked to keep it, else empty.
    pub body: Vec<u8>,
}

/// A connection over TCP; over any other stream only in the fuzz targets, which feed responses in chosen pieces.
pub struct Connection<S = TcpStream> {
    stream: S,
    buffer: Vec<u8>,
}

impl Connection {
    pub async fn connect(address: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self::over(stream))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn over(stream: S) -> Self {
        Self { stream, buffer: vec![0; READ_CHUNK] }
    }

    /// Sends `request` (head and body, as prepared) and reads the whole response, its bytes also to `tokens` as
    /// they arrive when the response is a language model's. The flag is false when the server asked to close the
    /// connection after this response (or framed the body by closing it).
    pub async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
        max_body_bytes: u64,
        keep_body: bool,
        tokens: Option<&mut TokenReader>,
    ) -> Result<(Response, bool), WireError> {
        self.stream.write_all(request).await.map_err(|_| WireError::ClosedBeforeResponse)?;
        let mut filled = 0;
        let Head { length: head_len, status, framing, keep_alive, event_stream } = loop {
            match parse_head(&self.buffer[..filled], head_request)? {
                // Interim responses (100 Continue) come before the final one.
                Some(Head { length, status, .. }) if (100..200).contains(&status) && status != 101 => {
                    self.buffer.copy_within(length..filled, 0);
                    filled -= length;
                }
                Some(head) => break head,
                None if filled >= MAX_HEAD_BYTES => return Err(WireError::Broken),
                None => {
                    if self.read_more(&mut filled).await? == 0 {
                        return Err(if filled == 0 { WireError::ClosedBeforeResponse } else { WireError::Broken });
                    }
                }
            }
        };
        let mut body = BodyReader::new(max_body_bytes, keep_body);
        if let Some(tokens) = tokens {
            body.read_tokens(tokens, event_stream);
        }
        let mut decoder = match framing {
            // A declared length past the cap is refused before its bytes are read.
            Framing::Length(length) if length > max_body_bytes => return Err(WireError::TooLarge),
            Framing::Length(length) => Decoder::Length(length),
            Framing::Chunked => Decoder::Chunked(Chunked::default()),
            Framing::UntilClose => Decoder::UntilClose,
            Framing::Empty => Decoder::Length(0),
        };
        let mut start = head_len;
        loop {
            let (used, done) = decoder.feed(&self.buffer[start..filled], &mut body)?;
            start += used;
            if done {
                // Bytes beyond the response are a server speaking out of turn: the connection is not reused.
                break;
            }
            (filled, start) = (0, 0);
            if self.read_more(&mut filled).await? == 0 {
                match decoder {
                    Decoder::UntilClose => break,
                    _ => return Err(WireError::Broken),
                }
            }
        }
        let keep_alive = keep_alive && !matches!(decoder, Decoder::UntilClose) && start == filled;
        Ok((Response { status, body: body.into_kept() }, keep_alive))
    }

    /// Reads what has arrived after the first `filled` bytes of the buffer, growing it when full.
    async fn read_more(&mut self, filled: &mut usize) -> Result<usize, WireError> {
        if *filled == self.buffer.len() {
            self.buffer.resize(self.buffer.len() * 2, 0);
        }
        let read = self
            .stream
            .read(&mut self.buffer[*filled..])
            .await
            .map_err(|_| if *filled == 0 { WireError::ClosedBeforeResponse } else { WireError::Broken })?;
        *filled += read;
        Ok(read)
    }
}

/// How the body after a head ends (RFC 9112, section 6.3).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A response's head, as far as the exchange needs it.
struct Head {
    length: usize,
    status: u16,
    framing: Framing,
    /// The connection stays open after the response.
    keep_alive: bool,
    /// The body is server-sent events.
    event_stream: bool,
}

/// The head, `None` while incomplete.
fn parse_head(bytes: &[u8], head_request: bool) -> Result<Option<Head>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(WireError::Broken),
    };
    let status = response.code.ok_or(WireError::Broken)?;
    let mut keep_alive = response.version == Some(1);
    let (mut length, mut chunked, mut event_stream) = (None, false, false);
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| WireError::Broken)?.trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().map_err(|_| WireError::Broken)?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if header.name.eq_ignore_ascii_case("content-type") {
            event_stream = is_event_stream(value);
        } else if header.name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head { length: head_len, status, framing, keep_alive, event_stream }))
}

/// A `Content-Type` value that says server-sent events.
pub fn is_event_stream(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Where a body ends.
enum Decoder {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunked),
    /// At the connection's close.
    UntilClose,
}

impl Decoder {
    /// Consumes what belongs to the body in `input`; returns how much it used and whether the body is complete.
    fn feed(&mut self, input: &[u8], body: &mut BodyReader) -> Result<(usize, bool), WireError> {
        match self {
            Decoder::Length(remaining) => {
                let take = input.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                body.take(&input[..take])?;
                *remaining -= take as u64;
                Ok((take, *remaining == 0))
            }
            Decoder::Chunked(chunked) => chunked.feed(input, body),
            Decoder::UntilClose => {
                body.take(input)?;
                Ok((input.len(), false))
            }
        }
    }
}

/// Counts body bytes against the cap and keeps them when asked (hyper's responses go through it too); a language
/// model's stream goes to its token reader as it arrives.
pub struct BodyReader<'a> {
    received: u64,
    max_body_bytes: u64,
    kept: Option<Vec<u8>>,
    tokens: Option<&'a mut TokenReader>,
}

impl<'a> BodyReader<'a> {
    pub fn new(max_body_bytes: u64, keep: bool) -> Self {
        Self { received: 0, max_body_bytes, kept: keep.then(Vec::new), tokens: None }
    }

    /// The body is a language model's response: an event stream is read by `tokens` as it arrives, a whole
    /// response kept for it to read at the end.
    pub fn read_tokens(&mut self, tokens: &'a mut TokenReader, event_stream: bool) {
        tokens.event_stream(event_stream);
        if !event_stream {
            self.kept.get_or_insert_with(Vec::new);
        }
        self.tokens = Some(tokens);
    }

    /// The body, when it was kept; else empty.
    pub fn into_kept(self) -> Vec<u8> {
        self.kept.unwrap_or_default()
    }

    pub fn take(&mut self, data: &[u8]) -> Result<(), WireError> {
        self.received += data.len() as u64;
        if self.received > self.max_body_bytes {
            return Err(WireError::TooLarge);
        }
        if let Some(kept) = &mut self.kept {
            kept.extend_from_slice(data);
        }
        if let Some(tokens) = self.tokens.as_deref_mut().filter(|tokens| tokens.is_event_stream()) {
            tokens.feed(data, std::time::Instant::now());
        }
        Ok(())
    }
}

/// A chunked body decoder that takes its input in whatever pieces it arrives.
#[derive(Default)]
struct Chunked {
    state: ChunkState,
    size: u64,
    /// Bytes of the current size or trailer line, so that a line split between reads is still seen whole.
    line_length: usize,
}

#[derive(Default, PartialEq, Eq, Debug)]
enum ChunkState {
    /// Hex digits of a chunk size, then an optional extension, up to the line's end.
    #[default]
    Size,
    SizeExtension,
    Data,
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to an empty one.
    Trailer,
}

impl Chunked {
    /// Consumes what it can of `input`; returns how much it used and whether the body is complete.
    fn feed(&mut self, input: &[u8], body: &mut BodyReader) -> Result<(usize, bool), WireError> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                ChunkState::Size | ChunkState::SizeExtension => {
                    let byte = input[at];
                    at += 1;
                    match byte {
                        b'\n' => {
                            self.state = if self.size == 0 { ChunkState::Trailer } else { ChunkState::Data };
                            self.line_length = 0;
                        }
                        b'\r' => {}
                        _ if self.state == ChunkState::SizeExtension => {}
                        b';' | b' ' | b'\t' => self.state = ChunkState::SizeExtension,
                        _ => {
                            let digit = (byte as char).to_digit(16).ok_or(WireError::Broken)?;
                            self.size = self.size.checked_mul(16).ok_or(WireError::Broken)? + u64::from(digit);
                        }
                    }
                }
                ChunkState::Data => {
                    let take = (input.len() - at).min(self.size as usize);
                    body.take(&input[at..at + take])?;
                    at += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::DataEnd => {
                    let byte = input[at];
                    at += 1;
                    if byte == b'\n' {
                        self.state = ChunkState::Size;
                    } else if byte != b'\r' {
                        return Err(WireError::Broken);
                    }
                }
                ChunkState::Trailer => {
                    let byte = input[at];
                    at += 1;
                    match byte {
                        b'\n' if self.line_length == 0 => return Ok((at, true)),
                        b'\n' => self.line_length = 0,
                        b'\r' => {}
                        _ => self.line_length += 1,
                    }
                }
            }
        }
        Ok((at, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request it reads with the next of `responses`, written in pieces of `piece`
    /// bytes, and closes the connection after it when told to; an empty response closes it without answering.
    async fn server(responses: Vec<(&'static [u8], bool)>, piece: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut responses = responses.into_iter();
            'connections: loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = vec![0; 4096];
                loop {
                    if stream.read(&mut request).await.unwrap_or(0) == 0 {
                        continue 'connections;
                    }
                    let Some((response, close)) = responses.next() else { return };
                    for part in response.chunks(piece) {
                        stream.write_all(part).await.unwrap();
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    }
                    if close || response.is_empty() {
                        continue 'connections;
                    }
                }
            }
        });
        address
    }

    const REQUEST: &[u8] = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}";

    async fn exchange(connection: &mut Connection, keep: bool) -> Result<(u16, Vec<u8>, bool), WireError> {
        let (response, keep_alive) = connection.exchange(REQUEST, false, 1000, keep, None).await?;
        Ok((response.status, response.body, keep_alive))
    }

    #[tokio::test]
    async fn reads_bodies_by_length_by_chunks_and_until_close_in_any_pieces() {
        for piece in [1, 7, 4096] {
            let address = server(
                vec![
                    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false),
                    (
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;name=value\r\nabc\r\n\
                          A\r\n0123456789\r\n0\r\ntrailer: x\r\n\r\n",
                        false,
                    ),
                    (b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", true),
                    (b"HTTP/1.0 200 OK\r\n\r\nuntil close", true),
                ],
                piece,
            )
            .await;
            let mut connection = Connection::connect(&address).await.unwrap();
            assert_eq!(exchange(&mut connection, true).await, Ok((200, b"hello".to_vec(), true)), "piece {piece}");
            assert_eq!(
                exchange(&mut connection, true).await,
                Ok((200, b"abc0123456789".to_vec(), true)),
                "piece {piece}"
            );
            assert_eq!(exchange(&mut connection, false).await, Ok((503, Vec::new(), false)), "piece {piece}");
            let mut connection = Connection::connect(&address).await.unwrap();
            assert_eq!(exchange(&mut connection, true).await, Ok((200, b"until close".to_vec(), false)));
        }
    }

    #[tokio::test]
    async fn a_closed_connection_an_oversized_body_and_garbage_are_told_apart() {
        let address = server(
            vec![
                (b"", true),
                (b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n", true),
                (b"SMTP ready\r\n\r\n", true),
                (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", true),
            ],
            4096,
        )
        .await;
        let mut connection = Connection::connect(&address).await.unwrap();
        assert_eq!(exchange(&mut connection, false).await, Err(WireError::ClosedBeforeResponse));
        let mut connection = Connection::connect(&address).await.unwrap();
        assert_eq!(exchange(&mut connection, false).await, Err(WireError::TooLarge));
        let mut connection = Connection::connect(&address).await.unwrap();
        assert_eq!(exchange(&mut connection, false).await, Err(WireError::Broken));
        let mut connection = Connection::connect(&address).await.unwrap();
        let server_gone = tokio::time::timeout(std::time::Duration::from_secs(2), exchange(&mut connection, false));
        assert_eq!(server_gone.await, Ok(Err(WireError::Broken)), "a body cut short by the server leaving");
    }
}

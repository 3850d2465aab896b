//! Server-sent events (the `text/event-stream` framing of WHATWG HTML, "interpreting an event stream") read
//! incrementally from a response body as its bytes arrive. It sits on the hot path of every streamed LLM response:
//! a line inside one read is parsed in place; only a line split between reads, and an event's data, are copied,
//! into buffers the parser keeps, so after the first events it allocates nothing.
//!
//! Only what plateau reads is kept: an event's data and whether its type is `error`. `id` and `retry` serve a
//! browser reconnecting, which a benchmark never does.

/// Why a stream cannot be read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event or line passed {limit_bytes} bytes")]
    TooLarge { limit_bytes: usize },
}

/// One dispatched event, borrowed from the parser until the next is read.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// `event: error` (TGI and some gateways signal a failure mid-stream this way).
    pub is_error: bool,
    /// The data lines joined by `\n`.
    pub data: &'a [u8],
}

pub struct SseParser {
    /// A line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The data of the event being read, each line followed by `\n`.
    data: Vec<u8>,
    has_data: bool,
    is_error: bool,
    /// The previous input ended in `\r`: a `\n` at the start of the next is the same line end.
    after_cr: bool,
    /// Bytes the stream has carried so far, to strip a byte-order mark only at its start.
    seen_bytes: u64,
    limit_bytes: usize,
}

impl SseParser {
    /// A parser for one stream; an event (or a line) longer than `limit_bytes` is an error.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            partial: Vec::new(),
            data: Vec::new(),
            has_data: false,
            is_error: false,
            after_cr: false,
            seen_bytes: 0,
            limit_bytes,
        }
    }

    /// Ready for the next stream, keeping the buffers' memory.
    pub fn reset(&mut self) {
        self.partial.clear();
        self.data.clear();
        (self.has_data, self.is_error, self.after_cr, self.seen_bytes) = (false, false, false, 0);
    }

    /// No line or event is begun: the next bytes start an event, which a caller may read itself (`read_outside`).
    pub fn between_events(&self) -> bool {
        self.partial.is_empty() && !self.has_data && !self.is_error && !self.after_cr
    }

    /// `bytes` of whole events were read by the caller, between events.
    pub fn read_outside(&mut self, bytes: usize) {
        self.seen_bytes += bytes as u64;
    }

    /// Reads `input`, the next bytes of the stream in whatever pieces they came, calling `on_event` for each event
    /// it completes.
    pub fn feed(&mut self, input: &[u8], mut on_event: impl FnMut(Event<'_>)) -> Result<(), SseError> {
        self.read(input, &mut on_event, false).map(|_| ())
    }

    /// Reads lines of `input` as `feed` does until it is between events again (after an event, a comment, or a
    /// field outside an event), so that its caller may read what follows itself: how many bytes it read.
    pub fn feed_some(&mut self, input: &[u8], mut on_event: impl FnMut(Event<'_>)) -> Result<usize, SseError> {
        self.read(input, &mut on_event, true)
    }

    fn read(
        &mut self,
        mut input: &[u8],
        on_event: &mut impl FnMut(Event<'_>),
        until_between_events: bool,
    ) -> Result<usize, SseError> {
        let given = input.len();
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = input {
                input = rest;
                self.seen_bytes += 1;
            }
        }
        while !input.is_empty() {
            // An event's blank line ends it: no search for that one.
            let found = if input[0] == b'\n' { Some(0) } else { line_end(input) };
            let Some(end) = found else {
                if self.partial.len() + input.len() > self.limit_bytes {
                    return Err(SseError::TooLarge { limit_bytes: self.limit_bytes });
                }
                self.partial.extend_from_slice(input);
                self.seen_bytes += input.len() as u64;
                return Ok(given);
            };
            // Nearly every event of a token stream is one `data:` line and its blank line, in one read: dispatched
            // from the read itself, not copied into the event's buffer.
            let one_line_event = input.get(end + 1) == Some(&b'\n') && input[end] == b'\n';
            if one_line_event
                && self.partial.is_empty()
                && !self.has_data
                && let Some(value) = input[..end].strip_prefix(b"data:")
            {
                let value = value.strip_prefix(b" ").unwrap_or(value);
                if value.len() + 1 > self.limit_bytes {
                    return Err(SseError::TooLarge { limit_bytes: self.limit_bytes });
                }
                on_event(Event { is_error: self.is_error, data: value });
                self.is_error = false;
                self.seen_bytes += end as u64 + 2;
                input = &input[end + 2..];
                if until_between_events {
                    return Ok(given - input.len());
                }
                continue;
            }
            let mut consumed = end + 1;
            if input[end] == b'\r' {
                match input.get(end + 1) {
                    Some(b'\n') => consumed += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let at_start = self.seen_bytes == self.partial.len() as u64;
            self.seen_bytes += consumed as u64;
            // The same limit whether the line came in one read or several.
            if self.partial.len() + end > self.limit_bytes {
                return Err(SseError::TooLarge { limit_bytes: self.limit_bytes });
            }
            if self.partial.is_empty() {
                self.line(strip_bom(&input[..end], at_start), on_event)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&input[..end]);
                let result = self.line(strip_bom(&line, at_start), on_event);
                line.clear();
                self.partial = line;
                result?;
            }
            input = &input[consumed..];
            if until_between_events && self.between_events() {
                return Ok(given - input.len());
            }
        }
        Ok(given)
    }

    /// One line without its end: a field, a comment, or the blank line that dispatches the event.
    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(Event<'_>)) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data {
                self.data.pop(); // the last line's `\n`
                on_event(Event { is_error: self.is_error, data: &self.data });
            }
            self.data.clear();
            (self.has_data, self.is_error) = (false, false);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // a comment: keep-alives
        }
        // Nearly every line of a token stream is `data: {...}`: read without searching for its colon.
        let (field, value) = match line.strip_prefix(b"data:") {
            Some(value) => (&b"data"[..], value),
            None => match memchr::memchr(b':', line) {
                Some(colon) => (&line[..colon], &line[colon + 1..]),
                None => (line, &b""[..]),
            },
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.limit_bytes {
                    return Err(SseError::TooLarge { limit_bytes: self.limit_bytes });
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"event" => self.is_error = value == b"error",
            _ => {} // id, retry, and fields the standard ignores
        }
        Ok(())
    }
}

/// Where the first line of `input` ends. On x86-64, memchr's SSE2 searcher directly: a line of a token stream is
/// about a hundred bytes, too short for its run-time choice of AVX2 to pay for itself (measured with the chunk scan
/// in `openai`, which the same change made twice as fast).
#[cfg(target_arch = "x86_64")]
pub(super) fn line_end(input: &[u8]) -> Option<usize> {
    memchr::arch::x86_64::sse2::memchr::Two::new(b'\n', b'\r').expect("SSE2 is part of x86-64").find(input)
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn line_end(input: &[u8]) -> Option<usize> {
    memchr::memchr2(b'\n', b'\r', input)
}

/// The UTF-8 byte-order mark a stream may begin with.
fn strip_bom(line: &[u8], at_start: bool) -> &[u8] {
    if at_start { line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line) } else { line }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_of(pieces: &[&[u8]]) -> Result<Vec<(bool, String)>, SseError> {
        let mut parser = SseParser::new(1024);
        let mut events = Vec::new();
        for piece in pieces {
            parser.feed(piece, |event| events.push((event.is_error, String::from_utf8_lossy(event.data).into())))?;
        }
        Ok(events)
    }

    #[test]
    fn every_split_of_a_stream_reads_the_same_events() {
        let stream: &[u8] =
            b"\xEF\xBB\xBF: keep-alive\r\ndata: {\"a\":1}\r\n\r\nevent: error\ndata:first\ndata: second\n\n\
              id: 7\nretry: 10\ndata\n\ndata: [DONE]\r\r";
        let whole = events_of(&[stream]).unwrap();
        assert_eq!(
            whole,
            vec![
                (false, "{\"a\":1}".into()),
                (true, "first\nsecond".into()),
                (false, "".into()),
                (false, "[DONE]".into())
            ]
        );
        for split in 0..=stream.len() {
            assert_eq!(events_of(&[&stream[..split], &stream[split..]]).unwrap(), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(events_of(&bytes).unwrap(), whole);
    }

    #[test]
    fn an_event_without_its_blank_line_is_not_dispatched_and_a_huge_one_is_refused() {
        assert_eq!(events_of(&[b"data: half"]).unwrap(), vec![]);
        let huge = vec![b'x'; 2000];
        assert_eq!(events_of(&[b"data: ", &huge]), Err(SseError::TooLarge { limit_bytes: 1024 }));
        let many_lines = b"data: 0123456789\n".repeat(100);
        assert_eq!(events_of(&[&many_lines]), Err(SseError::TooLarge { limit_bytes: 1024 }));
    }
}

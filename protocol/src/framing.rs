//! Newline-delimited framing with a hard size cap.
//!
//! Every message on the socket is one line of UTF-8 JSON ending in `\n`. The decoder keeps
//! "incomplete" (wait for more bytes) apart from "invalid" (the line is over the cap), and it
//! never buffers more than the cap plus one read: an over-long line is reported once as
//! [`Frame::TooLong`] and its remaining bytes are skipped up to the next `\n`, so a hostile peer
//! cannot make the reader grow without bound.
//!
//! Two conveniences for people typing into `socat`: one trailing `\r` is stripped, and blank
//! lines (empty or only spaces and tabs) are ignored rather than answered with a parse error.
//!
//! The same state machine backs three front ends: [`LineDecoder`] (sans-IO, push bytes in and
//! pull frames out), [`LineCodec`] (a `tokio_util` codec) and [`LineReader`] (blocking `Read`).

use std::io::{self, Read};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Longest accepted line, in bytes, not counting the `\n` (nor a `\r` before it).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// One unit produced by the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete, non-blank line without its terminator.
    Line(Bytes),
    /// A line longer than the cap. The rest of it is discarded up to its `\n`.
    TooLong,
    /// The stream ended in the middle of a line; that many bytes were dropped.
    TruncatedEof {
        /// How many bytes of the unfinished line were dropped.
        bytes: usize,
    },
}

/// The decoding state, independent of where the bytes are stored.
#[derive(Debug, Clone)]
struct LineState {
    max: usize,
    /// Bytes at the front of the buffer already searched for `\n`.
    scanned: usize,
    /// Inside an over-long line: drop bytes until the next `\n`.
    discarding: bool,
}

impl LineState {
    fn new(max: usize) -> Self {
        Self {
            max,
            scanned: 0,
            discarding: false,
        }
    }

    fn decode(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            let Some(offset) = memchr::memchr(b'\n', &buf[self.scanned..]) else {
                if self.discarding {
                    buf.clear();
                    self.scanned = 0;
                    return None;
                }
                // One extra byte of slack: a `\r` that turns out to precede the `\n`.
                if buf.len() > self.max + 1 {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Some(Frame::TooLong);
                }
                self.scanned = buf.len();
                return None;
            };
            let newline = self.scanned + offset;
            self.scanned = 0;
            if self.discarding {
                buf.advance(newline + 1);
                self.discarding = false;
                continue;
            }
            let mut line = buf.split_to(newline + 1);
            line.truncate(newline);
            if line.last() == Some(&b'\r') {
                line.truncate(newline - 1);
            }
            if line.len() > self.max {
                return Some(Frame::TooLong);
            }
            if line.iter().all(|b| *b == b' ' || *b == b'\t') {
                continue;
            }
            return Some(Frame::Line(line.freeze()));
        }
    }

    /// Called once the input has ended and `decode` returned `None`.
    fn finish(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        let discarding = std::mem::replace(&mut self.discarding, false);
        self.scanned = 0;
        if buf.is_empty() || discarding {
            buf.clear();
            return None;
        }
        let bytes = buf.len();
        buf.clear();
        Some(Frame::TruncatedEof { bytes })
    }
}

/// Sans-IO line decoder: feed it bytes with [`push`](Self::push), take frames with
/// [`next_frame`](Self::next_frame) until it returns `None`, and call
/// [`finish`](Self::finish) at end of input.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    buf: BytesMut,
    state: LineState,
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl LineDecoder {
    /// A decoder with the protocol's 1 MiB cap.
    pub fn new() -> Self {
        Self::with_max(MAX_LINE_BYTES)
    }

    /// A decoder with another cap (tests, or formats with their own limit).
    pub fn with_max(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            state: LineState::new(max),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.state.decode(&mut self.buf)
    }

    /// Ends the input: `Some(TruncatedEof)` if an unfinished line was pending.
    pub fn finish(&mut self) -> Option<Frame> {
        self.state.finish(&mut self.buf)
    }

    /// Bytes held while waiting for the end of a line (never more than the cap plus one read).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// `tokio_util` codec: decodes [`Frame`]s and encodes one message as one line.
#[derive(Debug, Clone)]
pub struct LineCodec {
    state: LineState,
}

impl Default for LineCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl LineCodec {
    /// A codec with the protocol's 1 MiB cap.
    pub fn new() -> Self {
        Self::with_max(MAX_LINE_BYTES)
    }

    /// A codec with another cap.
    pub fn with_max(max: usize) -> Self {
        Self {
            state: LineState::new(max),
        }
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        Ok(self.state.decode(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, io::Error> {
        match self.state.decode(buf) {
            Some(frame) => Ok(Some(frame)),
            None => Ok(self.state.finish(buf)),
        }
    }
}

impl Encoder<Bytes> for LineCodec {
    type Error = io::Error;

    /// Writes the message followed by `\n`. The message must not contain a raw `\n`; serde_json
    /// never emits one outside pretty printing.
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), io::Error> {
        dst.reserve(item.len() + 1);
        dst.put(item);
        dst.put_u8(b'\n');
        Ok(())
    }
}

/// Blocking reader of frames over any `Read`.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: BytesMut,
    state: LineState,
    eof: bool,
}

impl<R: Read> LineReader<R> {
    /// Reads frames with the protocol's 1 MiB cap.
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_LINE_BYTES)
    }

    /// Reads frames with another cap.
    pub fn with_max(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
            state: LineState::new(max),
            eof: false,
        }
    }

    /// The next frame; `Ok(None)` at a clean end of input.
    pub fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(frame) = self.state.decode(&mut self.buf) {
                return Ok(Some(frame));
            }
            if self.eof {
                return Ok(self.state.finish(&mut self.buf));
            }
            match self.inner.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

/// Serialises one message as a line (with its `\n`).
pub fn encode_line<T: serde::Serialize + ?Sized>(
    message: &T,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = serde_json::to_vec(message)?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(decoder: &mut LineDecoder) -> Vec<Frame> {
        std::iter::from_fn(|| decoder.next_frame()).collect()
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn splits_lines_and_waits_for_the_rest() {
        let mut d = LineDecoder::new();
        d.push(b"{\"a\":1}\n{\"b\"");
        assert_eq!(frames(&mut d), vec![line("{\"a\":1}")]);
        d.push(b":2}\n");
        assert_eq!(frames(&mut d), vec![line("{\"b\":2}")]);
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn strips_one_carriage_return_and_skips_blank_lines() {
        let mut d = LineDecoder::new();
        d.push(b"\n  \r\n\t\nx\r\r\ny\r\n");
        assert_eq!(frames(&mut d), vec![line("x\r"), line("y")]);
    }

    #[test]
    fn reports_a_truncated_tail_at_eof() {
        let mut d = LineDecoder::new();
        d.push(b"done\npartial");
        assert_eq!(frames(&mut d), vec![line("done")]);
        assert_eq!(d.finish(), Some(Frame::TruncatedEof { bytes: 7 }));
        assert_eq!(d.finish(), None);
    }

    #[test]
    fn a_line_at_the_cap_passes_and_one_over_does_not() {
        let mut d = LineDecoder::with_max(4);
        d.push(b"abcd\nabcd\r\nabcde\nok\n");
        assert_eq!(
            frames(&mut d),
            vec![line("abcd"), line("abcd"), Frame::TooLong, line("ok")]
        );
    }

    #[test]
    fn an_over_long_line_arriving_in_pieces_is_reported_once_and_skipped() {
        let mut d = LineDecoder::with_max(8);
        d.push(b"0123456789");
        assert_eq!(frames(&mut d), vec![Frame::TooLong]);
        assert_eq!(d.buffered(), 0);
        d.push(b"still the same line");
        assert_eq!(frames(&mut d), vec![]);
        assert_eq!(d.buffered(), 0);
        d.push(b" end\nnext\n");
        assert_eq!(frames(&mut d), vec![line("next")]);
    }

    #[test]
    fn memory_stays_bounded_by_the_cap() {
        let mut d = LineDecoder::with_max(1024);
        for _ in 0..1000 {
            d.push(&[b'x'; 700]);
            let _ = frames(&mut d);
            assert!(d.buffered() <= 1024 + 700);
        }
    }

    #[test]
    fn blocking_reader_yields_the_same_frames() {
        let input: &[u8] = b"a\n\nbb\r\ncc";
        let mut r = LineReader::new(input);
        assert_eq!(r.read_frame().unwrap(), Some(line("a")));
        assert_eq!(r.read_frame().unwrap(), Some(line("bb")));
        assert_eq!(
            r.read_frame().unwrap(),
            Some(Frame::TruncatedEof { bytes: 2 })
        );
        assert_eq!(r.read_frame().unwrap(), None);
    }

    #[tokio::test]
    async fn codec_decodes_over_an_async_reader() {
        use futures_util::StreamExt;
        let input: &[u8] = b"one\ntwo\nthr";
        let mut framed = tokio_util::codec::FramedRead::new(input, LineCodec::new());
        let mut got = Vec::new();
        while let Some(frame) = framed.next().await {
            got.push(frame.unwrap());
        }
        assert_eq!(
            got,
            vec![line("one"), line("two"), Frame::TruncatedEof { bytes: 3 }]
        );
    }

    #[test]
    fn encode_line_appends_exactly_one_newline() {
        let bytes = encode_line(&serde_json::json!({"text": "a\nb"})).unwrap();
        assert_eq!(bytes, b"{\"text\":\"a\\nb\"}\n");
    }

    proptest! {
        /// However the input is cut into chunks, the decoder yields the same frames.
        #[test]
        fn chunking_does_not_change_the_frames(
            lines in proptest::collection::vec("[a-z{}\":, ]{0,40}", 0..20),
            cuts in proptest::collection::vec(0usize..64, 0..20),
        ) {
            let joined: Vec<u8> = lines.iter().flat_map(|l| l.bytes().chain([b'\n'])).collect();
            let mut whole = LineDecoder::with_max(32);
            whole.push(&joined);
            let expected = frames(&mut whole);

            let mut pieces = LineDecoder::with_max(32);
            let mut got = Vec::new();
            let mut rest = &joined[..];
            for cut in cuts {
                let (head, tail) = rest.split_at(cut.min(rest.len()));
                pieces.push(head);
                got.extend(frames(&mut pieces));
                rest = tail;
            }
            pieces.push(rest);
            got.extend(frames(&mut pieces));
            prop_assert_eq!(got, expected);
        }

        /// Arbitrary bytes never panic the decoder and never grow its buffer past the bound.
        #[test]
        fn arbitrary_bytes_are_safe(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..30)) {
            let mut d = LineDecoder::with_max(64);
            for chunk in &chunks {
                d.push(chunk);
                for frame in frames(&mut d) {
                    if let Frame::Line(l) = frame {
                        prop_assert!(l.len() <= 64);
                        prop_assert!(!l.contains(&b'\n'));
                    }
                }
                prop_assert!(d.buffered() <= 64 + 1 + 200);
            }
            let _ = d.finish();
        }
    }
}

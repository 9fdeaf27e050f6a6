//! Bytes from a client, cut into arbitrary reads: the line decoder must never hold more than
//! its cap plus one read, and every complete line must reach the JSON-RPC parser, which must
//! answer without panicking.
#![no_main]

use atlasbridge_protocol::framing::{Frame, LineDecoder};
use atlasbridge_protocol::jsonrpc::parse_incoming;
use libfuzzer_sys::fuzz_target;

const CAP: usize = 4096;

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (data, cuts) = input;
    let mut decoder = LineDecoder::with_max(CAP);
    let mut rest = data.as_slice();
    let mut sizes = cuts.iter().map(|&c| usize::from(c) + 1).cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (read, tail) = rest.split_at(n);
        rest = tail;
        decoder.push(read);
        while let Some(frame) = decoder.next_frame() {
            if let Frame::Line(line) = frame {
                assert!(line.len() <= CAP);
                let _ = parse_incoming(&line);
            }
        }
        assert!(decoder.buffered() <= CAP + 1 + 256);
    }
    let _ = decoder.finish();
});

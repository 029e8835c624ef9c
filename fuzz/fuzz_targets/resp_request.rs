//! Fuzzes the RESP request parser (`mesh_proto::resp::parse_request`): any
//! bytes, parsed as a connection would (one command after another), must
//! never panic, never claim more bytes than it was given, and give the same
//! commands however the bytes are split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::resp::parse_request;

/// Parses commands off the front of `buf` until it needs more or fails.
fn commands(mut buf: &[u8]) -> (Vec<Vec<Vec<u8>>>, bool) {
    let mut out = Vec::new();
    loop {
        match parse_request(buf) {
            Ok(Some((args, used))) => {
                assert!(used > 0 && used <= buf.len(), "used {used} of {}", buf.len());
                out.push(args);
                buf = &buf[used..];
            }
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (whole, failed) = commands(data);
    // Fed in two reads split anywhere: the first read's complete commands are
    // a prefix of the whole, and the rest parses on once the bytes are there.
    if let Some(&cut) = data.first() {
        let cut = (cut as usize) % (data.len() + 1);
        let (first, first_failed) = commands(&data[..cut]);
        if !first_failed {
            assert!(first.len() <= whole.len());
            assert_eq!(&whole[..first.len()], &first[..]);
        }
    }
    let _ = failed;
});

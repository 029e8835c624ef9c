//! Fuzzes the RESP request parser (`mesh_proto::resp::RequestParser`): any
//! bytes, parsed as a connection would (one command after another, one parser
//! kept across reads), must never panic, never claim more bytes than it was
//! given, and give the same commands however the bytes are split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_proto::resp::RequestParser;

/// Parses commands off `data` as a connection that receives it in reads
/// ending at `cuts`: (commands, whether it failed).
fn commands(data: &[u8], cuts: &[usize]) -> (Vec<Vec<Vec<u8>>>, bool) {
    let mut parser = RequestParser::default();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([&data.len()]) {
        let end = end.clamp(start, data.len());
        loop {
            let buf = &data[start..end];
            match parser.parse(buf) {
                Ok(Some((args, used))) => {
                    assert!(used > 0 && used <= buf.len(), "used {used} of {}", buf.len());
                    out.push(args);
                    start += used;
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let whole = commands(data, &[]);
    // Fed in reads split anywhere: the same commands, and the same failure.
    if data.len() >= 2 {
        let a = data[0] as usize % (data.len() + 1);
        let b = a + data[1] as usize % (data.len() + 1 - a);
        let split = commands(data, &[a, b]);
        let bytewise: Vec<usize> = (0..data.len()).collect();
        assert_eq!(split, whole);
        assert_eq!(commands(data, &bytewise), whole);
    }
});

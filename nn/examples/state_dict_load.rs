//! Times `StateDict::load` on a file, for scripts/compare_state_dict.py.
//!
//! ```text
//! cargo run --release -p kiln-nn --example state_dict_load -- FILE [REPEATS [WARMUPS]]
//! ```
//!
//! Loads FILE WARMUPS times untimed (default 1, to warm the page cache),
//! then REPEATS times (default 7), and prints one JSON line: `{"seconds": [...], "tensors": N,
//! "bytes": B}`. Each timed load builds the whole state dict (every tensor
//! copied into owned storage) and drops it after the clock stops.

use std::time::Instant;

use kiln_nn::state_dict::StateDict;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: state_dict_load FILE [REPEATS [WARMUPS]]")?;
    let repeats: usize = match args.next() {
        Some(r) => r.parse()?,
        None => 7,
    };
    let warmups: usize = match args.next() {
        Some(w) => w.parse()?,
        None => 1,
    };
    for _ in 0..warmups {
        drop(StateDict::load(&path)?);
    }
    let mut tensors = 0;
    let mut bytes = 0;
    let mut seconds = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        let sd = StateDict::load(&path)?;
        seconds.push(start.elapsed().as_secs_f64());
        tensors = sd.len();
        bytes = sd.iter().map(|(_, t)| t.storage_bytes()).sum::<usize>();
        drop(sd);
    }
    println!("{{\"seconds\": {seconds:?}, \"tensors\": {tensors}, \"bytes\": {bytes}}}");
    Ok(())
}

//! Shared by the self-timed benches (`models`, `autograd`, `adamw`): which
//! cases to run, and one line per result, as text or as JSON for the
//! comparison scripts in `scripts/`.

/// Command-line choices of a self-timed bench: `[--json] [CASE…]`.
pub struct Cases {
    json: bool,
    wanted: Vec<String>,
    threads: usize,
}

impl Cases {
    /// Reads the arguments cargo passes through (`cargo bench --bench X -- …`).
    /// Also sets the allocator up as the `kiln` binary does.
    pub fn from_args() -> Cases {
        crate::alloc::keep_freed_memory();
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--bench"))
            .collect();
        Cases {
            json: args.iter().any(|a| a == "--json"),
            wanted: args.into_iter().filter(|a| !a.starts_with("--")).collect(),
            threads: kiln::tensor::parallel::num_threads(),
        }
    }

    /// Whether `case` was asked for (all are, when none is named).
    pub fn run(&self, case: &str) -> bool {
        self.wanted.is_empty() || self.wanted.iter().any(|w| w == case)
    }

    /// Prints one result.
    pub fn report(&self, case: &str, value: f64, unit: &str) {
        if self.json {
            println!("{{\"case\": \"{case}\", \"value\": {value}, \"unit\": \"{unit}\", \"threads\": {}}}", self.threads);
        } else {
            println!(
                "{case:<16} {value:>10.3} {unit}  ({} threads)",
                self.threads
            );
        }
    }
}

/// The median of some timings.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

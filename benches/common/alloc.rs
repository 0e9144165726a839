//! The allocator every bench runs with: the one the `kiln` binary uses
//! (see `src/main.rs`), so benches measure Kiln as shipped.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

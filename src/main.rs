//! The `interlock` binary: see [`interlock::cli`].

#![forbid(unsafe_code)]

/// mimalloc instead of the system allocator: translation (jq programs allocate per step) runs
/// about a third faster, measured in `benches/hot_paths.rs` (`translate`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    interlock::cli::main()
}

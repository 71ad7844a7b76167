//! The `interlock` binary: see [`interlock::cli`].

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    interlock::cli::main()
}

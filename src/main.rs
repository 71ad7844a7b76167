//! The `interlock` binary: see [`interlock::cli`].

fn main() -> std::process::ExitCode {
    interlock::cli::main()
}

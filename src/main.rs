//! The `dreamstream` binary: the control node and its CLI (`dreamstream::cli`).

fn main() -> std::process::ExitCode {
    dreamstream::cli::main()
}

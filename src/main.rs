fn main() -> std::process::ExitCode {
    dreamstream::cli::main()
}

fn main() -> std::process::ExitCode {
    gpu_node::cli::main()
}

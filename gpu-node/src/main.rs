//! The `gpu-node` binary: a worker node and its tools (`gpu_node::cli`).

fn main() -> std::process::ExitCode {
    gpu_node::cli::main()
}

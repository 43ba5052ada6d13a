//! The `settlegate` binary: all behaviour lives in the library.

fn main() -> std::process::ExitCode {
    settlegate::cli::main()
}

fn main() -> std::process::ExitCode {
    cortex::cli::main()
}

fn main() -> std::process::ExitCode {
    plateau::cli::main().into()
}

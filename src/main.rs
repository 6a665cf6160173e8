fn main() -> std::process::ExitCode {
    firma::cli::run()
}

fn main() -> std::process::ExitCode {
    atlasbridge_server::cli::main()
}

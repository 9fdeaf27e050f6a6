fn main() -> std::process::ExitCode {
    atlasbridged::cli::main()
}

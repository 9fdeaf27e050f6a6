fn main() -> std::process::ExitCode {
    atlasbridge::cli::main()
}

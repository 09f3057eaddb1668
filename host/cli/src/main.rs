fn main() {
    std::process::exit(simlab::cli::main());
}

fn main() -> std::process::ExitCode {
    firma::cli::run()
}

/// mimalloc: cheaper than glibc malloc when one thread frees what another allocated — every
/// audit record does that in the Sidecar (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

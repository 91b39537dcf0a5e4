//! The shim as a standalone binary, for the container integration tests (the real entry point
//! is `skiff shim`): `shim --pod-dir DIR --socket PATH --state-root DIR [--foreground]`.

fn main() -> std::process::ExitCode {
    runtime::container::shim_main(std::env::args().skip(2))
}

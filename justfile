# Build and run the proxy with its defaults.
run:
    cargo run --release -p linkerd-app

# Every test: unit, end-to-end, and (as root) the network-namespace test.
test:
    cargo test --workspace --locked

# Formatting and lints, as CI expects them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

fmt:
    cargo fmt --all

# One entry point for the checks CI runs, and for the demo and drills.
.PHONY: demo test check bench peers
demo:
	scripts/demo
test:
	scripts/test
check:
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets -- -D warnings
bench:
	cargo bench -p switchyard-router --bench routing_decision
peers:
	loadtests/peers/run.sh

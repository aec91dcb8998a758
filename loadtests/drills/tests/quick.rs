//! CI runs every fault drill in its quick mode against the real binaries
//! (built beside this one by the workspace's tests): each must meet its
//! goal-0 figures.

use std::path::PathBuf;
use std::process::Command;

fn drill(name: &str) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_fault-drill"));
    let router = bin.with_file_name("switchyard");
    assert!(
        router.exists(),
        "{} is missing: build the workspace (cargo build --release --workspace)",
        router.display()
    );
    let out = Command::new(&bin)
        .args([name, "--quick"])
        .output()
        .expect("fault-drill runs");
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!("{table}");
    assert!(
        out.status.success(),
        "{name}: a goal-0 figure is not 0\n{table}"
    );
    assert!(table.contains("goal 0: ok"), "{table}");
}

#[test]
fn sigkill_mid_write_loses_no_acknowledged_write() {
    drill("sigkill");
}

#[test]
fn an_upgrade_under_load_fails_no_request() {
    drill("upgrade");
}

#[test]
fn reloads_and_dial_changes_under_load_fail_no_request() {
    drill("reload");
}

#[test]
fn nats_away_and_back_loses_and_duplicates_nothing() {
    drill("nats");
}

#[test]
fn a_full_disk_refuses_writes_and_loses_none() {
    drill("disk-full");
}

#[test]
fn a_partitioned_region_fails_no_read_once_detected() {
    drill("partition");
}

#[test]
fn a_killed_owner_loses_no_acknowledged_write_after_the_reconciler() {
    drill("owner-killed");
}

#[test]
fn a_router_cut_off_from_etcd_never_writes_beside_the_new_owner() {
    drill("split-brain");
}

#[test]
fn dry_runs_count_writes_at_risk_under_lag_and_load() {
    drill("writes-at-risk");
}

#[test]
fn hedging_limits_and_panic_mode_hold_under_load() {
    drill("overload");
}

//! Every generated module assembles with `ptxas` for sm_80 and sm_90a, and no
//! kernel spills or uses a stack frame.

// Each test crate uses a different subset of the shared helpers.
#[allow(dead_code)]
mod common;

use jagged_codegen::{Arch, lower, ptxas};

#[test]
fn every_module_assembles_without_spills() {
    let Some(ptxas_path) = ptxas::find() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "ptxas not found and CI is set: run scripts/install-tools.sh"
        );
        eprintln!("SKIPPED: ptxas not found (set JAGGED_PTXAS or run scripts/install-tools.sh)");
        return;
    };
    let mut checked = 0;
    for arch in Arch::ALL {
        for spec in common::specs(arch) {
            for prim in common::primitives() {
                let compiled =
                    lower(&prim, &spec).unwrap_or_else(|e| panic!("{} {spec}: {e}", prim.name()));
                let report = ptxas::assemble_with(&ptxas_path, &compiled.ptx, arch)
                    .unwrap_or_else(|e| panic!("{} {spec}: {e}\n{}", prim.name(), compiled.ptx));
                for k in &report.kernels {
                    eprintln!(
                        "{arch} {:<70} regs {:>3} spill {}/{} stack {} smem {}",
                        k.name,
                        k.registers,
                        k.spill_stores,
                        k.spill_loads,
                        k.stack_frame,
                        k.shared_bytes
                    );
                }
                assert_eq!(
                    report.kernels.len(),
                    compiled.launches.len(),
                    "{} {spec}: report {:#?}",
                    prim.name(),
                    report.lines
                );
                assert!(
                    report.offenders().is_empty(),
                    "{} {spec}: spills or stack frame:\n{}",
                    prim.name(),
                    report.lines.join("\n")
                );
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked,
        2 * common::specs(Arch::Sm80).len() * common::primitives().len()
    );
}

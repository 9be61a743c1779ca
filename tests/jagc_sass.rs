//! `jagc stats --sass` through the built binary on the attention kernels:
//! the steady-state loop is found, its counts are consistent with its span
//! and with each other, and the PTX-file path counts what the op path does;
//! on sm_90a the forward's loop is HGMMA with no HMMA.
//! Needs ptxas and nvdisasm (skipped without them, unless required: see
//! `common::tools`).

mod common;

use std::process::Command;

use common::tools;

/// One kernel's row of the `--sass` table.
#[derive(Debug, PartialEq)]
struct Row {
    /// First and last byte offset of the loop (`None`: no loop).
    span: Option<(u32, u32)>,
    /// Column name to cell.
    cells: Vec<(String, String)>,
    /// Kernel name.
    kernel: String,
    /// Instructions in the whole kernel.
    total: u32,
}

impl Row {
    fn cell(&self, column: &str) -> &str {
        let found = self.cells.iter().find(|(c, _)| c == column);
        &found
            .unwrap_or_else(|| panic!("no column {column} in {self:?}"))
            .1
    }

    fn count(&self, column: &str) -> u32 {
        let cell = self.cell(column);
        cell.parse()
            .unwrap_or_else(|_| panic!("{column} = {cell} is not a count"))
    }
}

/// Both tools, or the skip.
fn tools_present(test: &str) -> bool {
    tools::ptxas(test).is_some() && tools::nvdisasm(test).is_some()
}

fn jagc(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_jagc"))
        .args(args)
        .output()
        .expect("jagc runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "jagc {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The title lines and rows of a `--sass` report.
fn parse(report: &str) -> (Vec<String>, Vec<Row>) {
    let mut titles = Vec::new();
    let mut rows = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    for line in report.lines() {
        if let Some(title) = line.strip_prefix("# ") {
            titles.push(title.to_string());
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"loop") {
            // loop, the columns, then "kernel (instructions)".
            columns = fields[1..fields.len() - 2]
                .iter()
                .map(|s| s.to_string())
                .collect();
            continue;
        }
        let (span, rest) = if line.starts_with("no loop") {
            (None, &fields[2..])
        } else {
            let (a, b) = fields[0].split_once('-').expect("a span a-b");
            let hex = |s| u32::from_str_radix(s, 16).expect("hex offsets");
            (Some((hex(a), hex(b))), &fields[1..])
        };
        assert_eq!(rest.len(), columns.len() + 2, "{line}");
        let cells = columns
            .iter()
            .zip(rest)
            .map(|(c, v)| (c.clone(), v.to_string()))
            .collect();
        let total = rest[columns.len() + 1]
            .trim_matches(|c| c == '(' || c == ')')
            .parse()
            .expect("the kernel's instruction count");
        rows.push(Row {
            span,
            cells,
            kernel: rest[columns.len()].to_string(),
            total,
        });
    }
    (titles, rows)
}

/// The facts every MMA loop row must satisfy; returns its HMMA count.
fn check_mma_row(row: &Row) -> u32 {
    let (first, last) = row.span.expect("an MMA kernel has a loop");
    let instrs = row.count("instrs");
    // SASS instructions are 16 bytes: the span holds exactly the counted ones.
    assert_eq!((last - first) / 16 + 1, instrs, "{row:?}");
    assert!(instrs <= row.total, "{row:?}");
    let hmma = row.count("HMMA");
    let parts: u32 = ["HMMA", "HGMMA", "LDSM", "LDGSTS", "UTMALDG", "BAR", "EX2"]
        .iter()
        .chain(&["SHFL", "FFMA", "FMUL", "FADD"])
        .map(|c| row.count(c))
        .sum();
    assert!(parts <= instrs, "{row:?}");
    let (ratio, kind) = row
        .cell("instr/MMA")
        .split_once('/')
        .expect("instr/MMA is X/KIND");
    let ratio: f64 = ratio.parse().expect("a number");
    let mma = row.count("HMMA") + row.count("HGMMA");
    assert!(ratio.is_finite() && mma > 0, "{row:?}");
    assert!(
        (ratio - f64::from(instrs) / f64::from(mma)).abs() < 0.006,
        "{row:?}"
    );
    let expected_kind = if row.count("HGMMA") > 0 {
        "HGMMA"
    } else {
        "HMMA"
    };
    assert_eq!(kind, expected_kind, "{row:?}");
    hmma
}

#[test]
fn the_forward_loop_is_found_and_counted_on_sm80() {
    if !tools_present("the_forward_loop_is_found_and_counted_on_sm80") {
        return;
    }
    for d in ["64", "128"] {
        let head_dim = format!("head_dim={d}");
        let args = [
            "stats",
            "--sass",
            "jagged_flash_attention",
            "--attr",
            &head_dim,
            "--arch",
            "sm_80",
        ];
        let report = jagc(&args);
        let (titles, rows) = parse(&report);
        assert_eq!(titles.len(), 1, "{report}");
        assert!(
            titles[0].starts_with("jagged_flash_attention for sm_80: 1 kernel(s)"),
            "{report}"
        );
        assert_eq!(rows.len(), 1, "{report}");
        let row = &rows[0];
        assert!(row.kernel.contains(&format!("_d{d}_")), "{row:?}");
        let hmma = check_mma_row(row);
        assert!(hmma > 0, "mma.sync on sm_80 is HMMA: {row:?}");
        assert_eq!(row.count("HGMMA"), 0, "{row:?}");
        // On sm_80 one HMMA.16816 is the unit: both ratios agree.
        let per_work: f64 = row.cell("instr/16816").parse().expect("a number");
        let per_mma = f64::from(row.count("instrs")) / f64::from(hmma);
        assert!((per_work - per_mma).abs() < 0.006, "{row:?}");
        // The tile loop loads through ldmatrix and cp.async and synchronizes.
        assert!(row.count("LDSM") > 0 && row.count("LDGSTS") > 0, "{row:?}");
        assert!(row.count("BAR") > 0 && row.count("EX2") > 0, "{row:?}");

        // The same PTX from a file is counted the same.
        let ptx = jagc(&["emit", "jagged_flash_attention", "--attr", &head_dim]);
        let path = std::env::temp_dir().join(format!("jagc-sass-{}-d{d}.ptx", std::process::id()));
        std::fs::write(&path, ptx).expect("writes the PTX");
        let from_file = jagc(&[
            "stats",
            "--sass",
            "--ptx",
            path.to_str().expect("a UTF-8 path"),
            "--arch",
            "sm_80",
        ]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(parse(&from_file).1, rows, "{from_file}");
    }
}

/// On sm_90a the forward's tile loop (D = 32, 64, 128 and 256, the default bucket:
/// 64 keys per block) is the wgmma kernel's: one HGMMA per `wgmma` (D / 16
/// for `Q K^T`, 4 for `P V`), no HMMA and no ldmatrix (the operands are
/// read through descriptors), with its TMA copies (UTMALDG, one per column
/// block of K and of V: no LDGSTS), barriers and ex2.
#[test]
fn the_forward_loop_is_hgmma_on_sm90a() {
    if !tools_present("the_forward_loop_is_hgmma_on_sm90a") {
        return;
    }
    for d in [32u32, 64, 128, 256] {
        let head_dim = format!("head_dim={d}");
        let args = [
            "stats",
            "--sass",
            "jagged_flash_attention",
            "--attr",
            &head_dim,
            "--arch",
            "sm_90a",
        ];
        let report = jagc(&args);
        let (titles, rows) = parse(&report);
        assert_eq!(titles.len(), 1, "{report}");
        assert_eq!(rows.len(), 1, "{report}");
        let row = &rows[0];
        assert!(row.kernel.contains(&format!("_d{d}_")), "{row:?}");
        assert_eq!(check_mma_row(row), 0, "no HMMA on the wgmma path: {row:?}");
        assert_eq!(row.count("HGMMA"), d / 16 + 4, "{row:?}");
        assert_eq!(row.count("LDSM"), 0, "{row:?}");
        assert_eq!(row.count("LDGSTS"), 0, "{row:?}");
        assert_eq!(row.count("UTMALDG"), 2 * (2 * d).div_ceil(128), "{row:?}");
        assert!(row.count("BAR") > 0, "{row:?}");
        assert!(row.count("EX2") > 0, "{row:?}");
    }
}

/// With max_len 1024 (D = 64, 128 and 256) the sm_90a forward is
/// warp-specialized and `jagc stats` picks a consumer warpgroup's key loop
/// (the producer's has no MMA): one HGMMA per `wgmma` (D / 16 for `Q K^T`,
/// 8 for `P V` of 128 keys, 4 of 64 at D = 256), no copy (the producer warpgroup's UTMALDG lie outside it) and
/// two barriers, the ping-pong's named ones (its turn to issue, the other's
/// turn once issued; the stages are handed over on mbarriers).
#[test]
fn the_warp_specialized_forward_loop_is_a_consumers() {
    if !tools_present("the_warp_specialized_forward_loop_is_a_consumers") {
        return;
    }
    for d in [64u32, 128, 256] {
        let head_dim = format!("head_dim={d}");
        let args = [
            "stats",
            "--sass",
            "jagged_flash_attention",
            "--attr",
            &head_dim,
            "--attr",
            "max_len=1024",
            "--arch",
            "sm_90a",
        ];
        let report = jagc(&args);
        let (_, rows) = parse(&report);
        assert_eq!(rows.len(), 1, "{report}");
        let row = &rows[0];
        assert_eq!(check_mma_row(row), 0, "no HMMA on the wgmma path: {row:?}");
        let pv = if d == 256 { 4 } else { 8 };
        assert_eq!(row.count("HGMMA"), d / 16 + pv, "{row:?}");
        assert_eq!(row.count("UTMALDG"), 0, "{row:?}");
        assert_eq!(row.count("LDGSTS"), 0, "{row:?}");
        assert_eq!(row.count("BAR"), 2, "{row:?}");
        assert!(row.count("EX2") > 0, "{row:?}");
    }
}

#[test]
fn skipped_blocks_lie_inside_the_loop() {
    if !tools_present("skipped_blocks_lie_inside_the_loop") {
        return;
    }
    let args = [
        "stats",
        "--sass",
        "--skips",
        "jagged_flash_attention",
        "--arch",
        "sm_80",
    ];
    let report = jagc(&args);
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| !l.starts_with("  skip "))
        .collect();
    let (_, parsed) = parse(&rows.join("\n"));
    let (first, last) = parsed[0].span.expect("a loop");
    let hex = |s: &str| u32::from_str_radix(s, 16).expect("hex offsets");
    for line in report.lines().filter_map(|l| l.strip_prefix("  skip ")) {
        // "A-B:  N instrs (M MMA, L LDGSTS) when the @P0 jump at J is taken"
        let (span, rest) = line.split_once(':').expect("span: counts");
        let (a, b) = span.split_once('-').expect("a span a-b");
        let (a, b) = (hex(a), hex(b));
        let n: u32 = rest
            .split_whitespace()
            .next()
            .expect("a count")
            .parse()
            .expect("a count");
        let jump = hex(rest.rsplit(' ').nth(2).expect("the jump's offset"));
        assert!(first <= jump && jump < a && a <= b && b <= last, "{line}");
        assert_eq!((b - a) / 16 + 1, n, "{line}");
    }
}

#[test]
fn the_backward_kernels_are_counted_on_both_archs() {
    if !tools_present("the_backward_kernels_are_counted_on_both_archs") {
        return;
    }
    let report = jagc(&["stats", "--sass", "--backward", "jagged_flash_attention"]);
    let (titles, rows) = parse(&report);
    assert_eq!(titles.len(), 2, "{report}");
    for arch in ["sm_80", "sm_90a"] {
        let title = format!("jagged_flash_attention (backward) for {arch}: ");
        assert!(titles.iter().any(|t| t.starts_with(&title)), "{report}");
    }
    // Each arch: the kernels of the backward, one of which multiplies:
    // with HMMA on sm_80, with HGMMA only on sm_90a (the wgmma kernel).
    assert_eq!(rows.len() % 2, 0, "{report}");
    let per_arch = rows.len() / 2;
    for (arch_rows, wgmma) in rows.chunks(per_arch).zip([false, true]) {
        let mma: Vec<&Row> = arch_rows
            .iter()
            .filter(|r| r.count("HMMA") + r.count("HGMMA") > 0)
            .collect();
        assert_eq!(mma.len(), 1, "{report}");
        let hmma = check_mma_row(mma[0]);
        assert_eq!(hmma == 0, wgmma, "{report}");
        assert_eq!(mma[0].count("HGMMA") > 0, wgmma, "{report}");
        for row in arch_rows.iter().filter(|r| r.span.is_none()) {
            assert_eq!(row.count("instrs"), 0, "{row:?}");
            assert_eq!(row.cell("instr/MMA"), "-", "{row:?}");
        }
    }
}

#[test]
fn stats_takes_exactly_one_input() {
    // Neither an op, a graph, a PTX file nor a cubin; or two of them: clap's
    // usage error (exit 2).
    for args in [
        vec!["stats"],
        vec!["stats", "--sass"],
        vec!["stats", "--sass", "--ptx", "a.ptx", "--cubin", "a.cubin"],
        vec!["stats", "--sass", "jagged_softmax", "--cubin", "a.cubin"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_jagc"))
            .args(&args)
            .output()
            .expect("jagc runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_missing_cubin_is_an_error_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_jagc"))
        .args(["stats", "--sass", "--cubin", "/nonexistent/k.cubin"])
        .output()
        .expect("jagc runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/k.cubin"), "{stderr}");
}

//! Parses PTX files and lists their kernels (a quick check of the parser on real PTX).
fn main() {
    for path in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        let t = std::time::Instant::now();
        match jagged_emu::Module::parse(&text) {
            Ok(m) => println!(
                "{path}: ok in {:?}: {:?}",
                t.elapsed(),
                m.kernel_names().collect::<Vec<_>>()
            ),
            Err(e) => println!("{path}: {e}"),
        }
    }
}

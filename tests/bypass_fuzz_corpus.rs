//! Replays the fuzz corpus (`fuzz/corpus/`) and every former fuzz finding
//! (`fuzz/regressions/`) through the properties the fuzz targets check (`firma::fuzzing`), so
//! the stable toolchain and CI keep them true without running a fuzzer.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            // A fuzzer running on the corpus may replace a file between listing and reading.
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{} fails the {target} properties",
                path.display()
            );
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no {target} corpus under {}", root.display());
}

#[test]
fn request_target_corpus_holds() {
    replay("request_target", firma::fuzzing::request_target);
}

#[test]
fn audit_line_corpus_holds() {
    replay("audit_line", firma::fuzzing::audit_line);
}

#[test]
fn capability_token_corpus_holds() {
    replay("capability_token", firma::fuzzing::capability_token);
}

//! The model's filters keep what `go tool pprof` keeps with the same flags,
//! on Go's own heap fixtures (numeric `bytes` labels). The example's CPU
//! profile (string `thread` labels) is checked in `examples/tests`.

use std::path::Path;

use profscope_test_support::assert_filters_agree_with_go;

#[test]
fn filters_agree_with_go_on_the_heap_fixtures() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    for fixture in ["go-heap-after.pb.gz", "go-allocs.pb.gz"] {
        for sample_type in ["alloc_space", "inuse_space"] {
            assert_filters_agree_with_go(
                &testdata.join(fixture),
                sample_type,
                &[
                    ("focus", "compress/flate"),
                    ("ignore", "runtime\\.main"),
                    ("hide", "runtime\\."),
                    ("focus", "^main\\."),
                    ("tagfocus", "bytes=1MB"),
                    ("tagfocus", "bytes=1kB:"),
                    ("tagfocus", "bytes=:512"),
                    ("tagfocus", "bytes=8kB:1MB"),
                    ("tagignore", "bytes=1MB"),
                ],
            );
        }
    }
}

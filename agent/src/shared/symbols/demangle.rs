//! Rust symbol names as people read them.

/// A Rust symbol demangled without its hash; other names as they are.
pub(super) fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(demangled) => format!("{demangled:#}"),
        Err(_) => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_rust_without_hash_and_leaves_c_alone() {
        assert_eq!(
            demangle("_ZN3app7handler17h0123456789abcdefE"),
            "app::handler"
        );
        assert_eq!(demangle("malloc"), "malloc");
    }
}

//! Go's pruning of allocator frames: a heap profile's stacks start at the
//! code that allocated, not inside the allocator, the way Go's start above
//! `runtime.mallocgc`. The rule works on frame names and files alone, so
//! any producer that knows its frames can apply it.

/// What a frame is to the trimming rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Class {
    /// Rust's allocation glue.
    pub glue: bool,
    /// Named as jemalloc's.
    pub jemalloc: bool,
    /// Nothing could name it (a stripped object, or jemalloc's internals).
    pub unknown: bool,
}

impl Class {
    /// An address nothing could name (a stripped object, or jemalloc's
    /// internals).
    pub const UNKNOWN: Class = Class {
        glue: false,
        jemalloc: false,
        unknown: true,
    };

    /// The class of a frame named `name` in source file `file` ("" when
    /// unknown).
    pub fn of(name: &str, file: &str) -> Class {
        Class {
            glue: is_rust_alloc_glue(name, file),
            jemalloc: is_jemalloc_frame(name, file),
            unknown: false,
        }
    }
}

/// Finds where user code starts in an allocation stack, given the classes
/// of each address's frames (leaf first, each address's frames innermost
/// first): returns how many whole addresses to drop and how many inlined
/// frames to drop from the inner end of the first kept address.
///
/// Every Rust allocation passes through `__rust_alloc` & co., so everything
/// leafward of the first such glue frame is the allocator (jemalloc's own
/// frames, whatever their names), and the glue runs on through `alloc::`,
/// `std::alloc`, `<Global as Allocator>` and the like until the first frame
/// that is none of those — the way Go's heap profiles start above
/// `runtime.mallocgc`. Allocations that bypass Rust (C code calling
/// `malloc`) lose only jemalloc-named frames.
pub fn trim_allocator_frames<'c, I>(per_address: I, stack_len: usize) -> (usize, usize)
where
    I: Iterator<Item = &'c [Class]> + Clone,
{
    // (address index, frame index, class), leaf first.
    let frames = per_address
        .enumerate()
        .flat_map(|(i, c)| c.iter().enumerate().map(move |(j, &class)| (i, j, class)));
    const GLUE_WINDOW: usize = 24;
    // Leafward of the first glue frame is the allocator. Without glue, the
    // allocator is the leading run of jemalloc-named and unnamed frames, up
    // to its last jemalloc-named one: unnamed frames alone (a stripped
    // build) say nothing, and the whole stack is kept.
    let start = match frames.clone().take(GLUE_WINDOW).position(|f| f.2.glue) {
        Some(first_glue) => first_glue,
        None => frames
            .clone()
            .take_while(|f| f.2.jemalloc || f.2.unknown)
            .enumerate()
            .filter(|(_, f)| f.2.jemalloc)
            .last()
            .map_or(0, |(i, _)| i + 1),
    };
    match frames.skip(start).find(|f| !f.2.glue) {
        Some((addr_index, frame_index, _)) => (addr_index, frame_index),
        None => (stack_len, 0),
    }
}

/// Rust's allocation glue: the allocator shims, the `alloc` crate's
/// containers and raw vectors, `std::alloc`, and the jemalloc wrapper crate.
/// Judged by name and, because builds with `debug = "line-tables-only"`
/// name inlined frames without their path (`grow_impl_runtime`), by the
/// source file too.
pub fn is_rust_alloc_glue(name: &str, file: &str) -> bool {
    const FILES: &[&str] = &[
        "/library/alloc/src/",
        "/library/core/src/alloc/",
        "/library/std/src/alloc.rs",
        "/tikv-jemallocator-",
    ];
    if FILES.iter().any(|f| file.contains(f)) {
        return true;
    }
    // Recent toolchains name the shims `__rustc::__rust_alloc` and the like.
    let name = name.strip_prefix("__rustc::").unwrap_or(name);
    const PREFIXES: &[&str] = &[
        "__rust_alloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rg_",
        "__rdl_",
        "alloc::",
        "<alloc::",
        "core::alloc::",
        "<core::alloc::",
        "std::alloc::",
        "<std::alloc::",
        "tikv_jemallocator::",
        "<tikv_jemallocator::",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || name.contains(" as alloc::")
        || name.contains(" as core::alloc::")
}

/// jemalloc's own functions, for stacks that did not come through Rust.
pub fn is_jemalloc_frame(name: &str, file: &str) -> bool {
    if file.contains("/tikv-jemalloc-sys-") || file.contains("/jemalloc/src/") {
        return true;
    }
    const PREFIXES: &[&str] = &[
        "je_",
        "_rjem_",
        "prof_",
        "imalloc",
        "ialloc",
        "iralloc",
        "ipalloc",
        "malloc_default",
        "do_rallocx",
        "arena_",
        "tcache_",
        "large_",
    ];
    name.is_empty()
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || matches!(
            name,
            "malloc" | "calloc" | "realloc" | "posix_memalign" | "aligned_alloc"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One frame per address, leaf first.
    fn trim(classes: &[Class]) -> (usize, usize) {
        trim_allocator_frames(classes.iter().map(std::slice::from_ref), classes.len())
    }

    #[test]
    fn trimming_rule() {
        let glue = Class {
            glue: true,
            ..Class::default()
        };
        let jemalloc = Class {
            jemalloc: true,
            ..Class::default()
        };
        let unknown = Class {
            unknown: true,
            ..Class::default()
        };
        let user = Class::default();
        // Rust allocations: everything up to the glue's end goes.
        assert_eq!(trim(&[unknown, jemalloc, glue, glue, user, user]), (4, 0));
        // C code calling malloc: jemalloc's frames go, with the unnamed
        // internals among them.
        assert_eq!(trim(&[unknown, jemalloc, unknown, jemalloc, user]), (4, 0));
        // A stripped build names nothing: the whole stack stays.
        assert_eq!(trim(&[unknown, unknown, unknown]), (0, 0));
        assert_eq!(trim(&[unknown, unknown, user]), (0, 0));
        // Unnamed frames past jemalloc's last named one are the caller's.
        assert_eq!(trim(&[jemalloc, unknown, unknown]), (1, 0));
    }

    #[test]
    fn glue_names() {
        for glue in [
            "__rust_alloc",
            "__rustc::__rust_alloc_zeroed",
            "__rg_alloc",
            "alloc::raw_vec::RawVec<T,A>::grow_one",
            "alloc::alloc::exchange_malloc",
            "<alloc::alloc::Global as core::alloc::Allocator>::allocate",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::alloc",
            "std::alloc::alloc",
        ] {
            assert!(is_rust_alloc_glue(glue, ""), "{glue}");
        }
        for user in [
            "leak_one_mib",
            "my::alloc_pool::get",
            "hashbrown::raw::RawTable::insert",
        ] {
            assert!(!is_rust_alloc_glue(user, "/src/main.rs"), "{user}");
        }
        // Short inlined names of line-tables-only builds, judged by file.
        assert!(is_rust_alloc_glue(
            "grow_impl_runtime",
            "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/alloc/src/raw_vec/mod.rs"
        ));
    }
}

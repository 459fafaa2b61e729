//! The jemalloc heap backend (`heap` feature): control through
//! tikv-jemalloc-ctl's raw API, and the one-line allocator setup.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

pub use tikv_jemallocator::Jemalloc;

use crate::Error;

/// jemalloc's `malloc_conf`: a pointer to a NUL-terminated option string,
/// read by jemalloc once, at start-up. Set by [`jemalloc_profiling!`](crate::jemalloc_profiling).
#[repr(transparent)]
#[derive(Debug)]
pub struct MallocConf(pub *const std::ffi::c_char);

// SAFETY: the pointer targets a `'static` string literal that nothing writes.
unsafe impl Sync for MallocConf {}

/// Installs jemalloc as the global allocator with heap profiling compiled in
/// and sampling on. Put it once in the service's binary crate:
///
/// ```ignore
/// profscope_agent::jemalloc_profiling!();                      // 512 KiB, like Go
/// profscope_agent::jemalloc_profiling!(lg_prof_sample = 14);   // every 16 KiB on average
/// ```
///
/// Options: `prof:true` (profiling compiled in and on), `prof_active:true`
/// (sampling now; [`Agent::set_heap_profiling`](crate::Agent::set_heap_profiling)
/// toggles it), `prof_accum:true` (cumulative `alloc_*` counts),
/// `prof_unbias:false` (raw sample counts, which the agent unsamples with
/// Go's formula), `lg_prof_sample:N` (average sampling interval `2^N`
/// bytes). The `_RJEM_MALLOC_CONF` environment variable can still override
/// any of them at start-up.
#[macro_export]
macro_rules! jemalloc_profiling {
    () => {
        $crate::jemalloc_profiling!(lg_prof_sample = 19);
    };
    (lg_prof_sample = $lg:literal) => {
        #[global_allocator]
        static PROFSCOPE_GLOBAL_ALLOCATOR: $crate::heap::Jemalloc = $crate::heap::Jemalloc;

        // SAFETY: jemalloc (built with the `_rjem_` prefix) reads this
        // symbol as `const char *_rjem_malloc_conf` once at start-up; the
        // value is a thin pointer to a NUL-terminated, 'static literal, and
        // no other item in the program may define this symbol.
        #[unsafe(export_name = "_rjem_malloc_conf")]
        #[used]
        static PROFSCOPE_MALLOC_CONF: $crate::heap::MallocConf = $crate::heap::MallocConf(
            concat!(
                "prof:true,prof_active:true,prof_accum:true,prof_unbias:false,lg_prof_sample:",
                stringify!($lg),
                "\0"
            )
            .as_ptr()
            .cast(),
        );
    };
}

pub(super) fn profiling_enabled() -> bool {
    // SAFETY: `opt.prof` is a bool, read by the documented name.
    unsafe { tikv_jemalloc_ctl::raw::read::<bool>(b"opt.prof\0") }.unwrap_or(false)
}

pub(super) fn is_active() -> bool {
    // SAFETY: `prof.active` is a bool.
    unsafe { tikv_jemalloc_ctl::raw::read::<bool>(b"prof.active\0") }.unwrap_or(false)
}

pub(super) fn set_active(active: bool) -> Result<(), Error> {
    if !profiling_enabled() {
        return Err(Error::NotAvailable(super::NOT_ENABLED.into()));
    }
    // SAFETY: `prof.active` takes a bool.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.active\0", active) }
        .map_err(|e| Error::Internal(format!("jemalloc prof.active: {e}")))
}

pub(super) fn dump(path: &std::path::Path) -> Result<(), Error> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Internal("heap dump path contains NUL".into()))?;
    // SAFETY: `prof.dump` takes a `const char *` file name; `c_path` is
    // NUL-terminated and outlives the call, which copies what it needs.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.dump\0", c_path.as_ptr()) }.map_err(|e| {
        Error::Internal(format!(
            "jemalloc could not write a heap dump to {}: {e}",
            path.display()
        ))
    })
}

/// Whether jemalloc serves the global allocator: a 64 KiB allocation
/// through it shows in this thread's `thread.allocated`. (Linked is not
/// enough: a build with the `heap` feature may run on another allocator.)
fn is_global_allocator() -> bool {
    static GLOBAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *GLOBAL.get_or_init(|| {
        // SAFETY: `thread.allocated` is a uint64_t.
        let read = || unsafe { tikv_jemalloc_ctl::raw::read::<u64>(b"thread.allocated\0") };
        let Ok(before) = read() else { return false };
        let block = std::hint::black_box(vec![1u8; 64 << 10]);
        let after = read().unwrap_or(before);
        drop(block);
        after.wrapping_sub(before) >= 64 << 10
    })
}

pub(super) fn stats() -> Option<super::JemallocStats> {
    use tikv_jemalloc_ctl::{epoch, stats};
    // Linked but not the global allocator: nothing to report.
    if !is_global_allocator() {
        return None;
    }
    // Statistics are cached until the epoch advances.
    epoch::advance().ok()?;
    let allocated = stats::allocated::read().ok()? as u64;
    Some(super::JemallocStats {
        allocated,
        active: stats::active::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
        mapped: stats::mapped::read().ok()? as u64,
        retained: stats::retained::read().ok()? as u64,
        metadata: stats::metadata::read().ok()? as u64,
    })
}

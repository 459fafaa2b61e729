//! Loads that cannot fault: every read the SIGPROF handler makes of the
//! interrupted thread's memory goes through [`load2`], a few instructions of
//! assembly whose address range the agent's SIGSEGV/SIGBUS handler knows.
//! A fault raised inside them resumes at their recovery point, and the load
//! reports "unreadable"; every other fault is passed on to the handler that
//! was installed before ours (Rust's stack-overflow report, the service's
//! own, or the default action), exactly as if ours were not there.
//!
//! Why: the snapshot of mappings the walk checks against can be up to 2 s
//! old, and a frame chain that leaves the thread's stack (code without frame
//! pointers leaves anything in `rbp`) can point into memory unmapped since.
//! A fault there used to take the service down. This is async-profiler's
//! `SafeAccess`; measured against the alternatives in BENCHMARKS.md.
//!
//! The fault handler must never: allocate, lock, or touch anything but the
//! saved previous dispositions and the interrupted context; resume anywhere
//! but the recovery point (and only from a pc inside the routine); swallow a
//! fault that is not the routine's. It is installed once, the first time a
//! stream starts, and never removed: removing it could clobber a handler
//! installed after it (and chaining to us) later.

use std::ffi::c_void;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Faults taken inside [`load2`] and recovered from.
pub(crate) static RECOVERED: AtomicU64 = AtomicU64::new(0);

/// Whether our fault handler is still the installed one (the aggregator
/// checks; a library that replaced it without chaining gets faults from the
/// routine, so the handler then skips every read the snapshot does not
/// vouch for twice over, see `handler.rs`).
pub(crate) static INSTALLED: AtomicBool = AtomicBool::new(false);

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection .text.profscope_guarded_load2,\"ax\",@progbits",
    ".globl profscope_guarded_load2",
    ".hidden profscope_guarded_load2",
    ".globl profscope_guarded_load2_end",
    ".hidden profscope_guarded_load2_end",
    ".globl profscope_guarded_load2_recover",
    ".hidden profscope_guarded_load2_recover",
    ".type profscope_guarded_load2,@function",
    ".p2align 4",
    // (addr: rdi, out: rsi) -> eax: 1 read, 0 faulted. The two loads are
    // the only instructions that may fault.
    "profscope_guarded_load2:",
    "    mov rax, qword ptr [rdi]",
    "    mov rdx, qword ptr [rdi + 8]",
    "profscope_guarded_load2_end:",
    "    mov qword ptr [rsi], rax",
    "    mov qword ptr [rsi + 8], rdx",
    "    mov eax, 1",
    "    ret",
    "profscope_guarded_load2_recover:",
    "    xor eax, eax",
    "    ret",
    ".size profscope_guarded_load2, .-profscope_guarded_load2",
    ".popsection",
);

#[cfg(target_arch = "aarch64")]
std::arch::global_asm!(
    ".pushsection .text.profscope_guarded_load2,\"ax\",%progbits",
    ".globl profscope_guarded_load2",
    ".hidden profscope_guarded_load2",
    ".globl profscope_guarded_load2_end",
    ".hidden profscope_guarded_load2_end",
    ".globl profscope_guarded_load2_recover",
    ".hidden profscope_guarded_load2_recover",
    ".type profscope_guarded_load2,%function",
    ".p2align 4",
    "profscope_guarded_load2:",
    "    ldr x2, [x0]",
    "    ldr x3, [x0, #8]",
    "profscope_guarded_load2_end:",
    "    stp x2, x3, [x1]",
    "    mov w0, #1",
    "    ret",
    "profscope_guarded_load2_recover:",
    "    mov w0, #0",
    "    ret",
    ".size profscope_guarded_load2, .-profscope_guarded_load2",
    ".popsection",
);

unsafe extern "C" {
    fn profscope_guarded_load2(addr: u64, out: *mut [u64; 2]) -> u32;
    static profscope_guarded_load2_end: u8;
    static profscope_guarded_load2_recover: u8;
}

/// The 16 bytes at `addr` as two words, or `None` if reading them faults.
/// Any address is allowed: unmapped, unaligned, null.
#[inline(always)]
pub(super) fn load2(addr: u64) -> Option<[u64; 2]> {
    let mut out = [0u64; 2];
    // SAFETY: the routine reads `addr` and `addr + 8` and writes `out`; a
    // fault in the reads is caught by `on_fault` (installed before any
    // handler can run this) and turned into a 0 return.
    (unsafe { profscope_guarded_load2(addr, &mut out) } == 1).then_some(out)
}

fn routine() -> (usize, usize, usize) {
    (
        profscope_guarded_load2 as *const () as usize,
        // Only the labels' addresses are taken, never their bytes.
        (&raw const profscope_guarded_load2_end) as usize,
        (&raw const profscope_guarded_load2_recover) as usize,
    )
}

/// The dispositions ours replaced, kept for chaining: written once before
/// ours is installed, read only by `on_fault`.
struct Previous {
    ready: AtomicBool,
    segv: std::cell::UnsafeCell<libc::sigaction>,
    bus: std::cell::UnsafeCell<libc::sigaction>,
}

// SAFETY: the actions are written once, before `ready` is released, and
// only read after it is acquired.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous {
    ready: AtomicBool::new(false),
    // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
    segv: std::cell::UnsafeCell::new(unsafe { std::mem::zeroed() }),
    // SAFETY: as above.
    bus: std::cell::UnsafeCell::new(unsafe { std::mem::zeroed() }),
};

/// The routine's address range and recovery point, for the handler.
static START: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);
static RECOVER: AtomicUsize = AtomicUsize::new(0);

static INSTALL: Once = Once::new();

fn our_action() -> libc::sigaction {
    // SAFETY: a zeroed sigaction is valid; the fields set make it ours.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_fault as *const () as usize;
    // SA_ONSTACK: a stack overflow must still reach Rust's report on the
    // alternate stack through us. SA_NODEFER: a fault inside a chained
    // handler is that handler's business, as it would be without us.
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
    // SIGPROF blocked while a fault is handled: a sample nested on the
    // alternate stack above the kernel's fault frame and the report being
    // written there (std's stack-overflow report runs on 8 KiB) would
    // overflow it, and the process would die by SIGSEGV with no report.
    // SAFETY: `sa_mask` is a valid sigset to fill.
    unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaddset(&mut action.sa_mask, libc::SIGPROF);
    }
    action
}

/// Installs the fault handler for SIGSEGV and SIGBUS, once per process.
pub(super) fn install() {
    INSTALL.call_once(|| {
        let (start, end, recover) = routine();
        START.store(start, Ordering::Relaxed);
        END.store(end, Ordering::Relaxed);
        RECOVER.store(recover, Ordering::Release);
        let action = our_action();
        // SAFETY: the previous actions are read into our statics before
        // ours goes in (with no handler of ours installed yet, nothing
        // reads them); then ours replaces them. A fault between the two
        // calls goes to the previous handler directly.
        unsafe {
            libc::sigaction(libc::SIGSEGV, std::ptr::null(), PREVIOUS.segv.get());
            libc::sigaction(libc::SIGBUS, std::ptr::null(), PREVIOUS.bus.get());
            PREVIOUS.ready.store(true, Ordering::Release);
            let a = libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut());
            let b = libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
            INSTALLED.store(a == 0 && b == 0, Ordering::Release);
        }
    });
}

/// Whether SIGSEGV and SIGBUS are still handled by us (a syscall each:
/// the aggregator's check, never the signal handler's).
pub(super) fn still_installed() -> bool {
    let ours = on_fault as *const () as usize;
    let is_ours = |signal: i32| -> bool {
        // SAFETY: a zeroed sigaction to receive the current one.
        let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: reads the disposition without changing it.
        let read = unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) } == 0;
        read && current.sa_sigaction == ours
    };
    let installed = is_ours(libc::SIGSEGV) && is_ours(libc::SIGBUS);
    INSTALLED.store(installed, Ordering::Release);
    installed
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn pc_of(context: *mut c_void) -> *mut u64 {
    // SAFETY: the kernel's ucontext for this signal.
    unsafe {
        (&raw mut (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize])
            .cast::<u64>()
    }
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
fn pc_of(context: *mut c_void) -> *mut u64 {
    // SAFETY: the kernel's ucontext for this signal.
    unsafe { &raw mut (*context.cast::<libc::ucontext_t>()).uc_mcontext.pc }
}

/// SIGSEGV/SIGBUS: resume a faulted guarded load at its recovery point, or
/// pass the fault on. Only atomics, the context and `sigaction` (which is
/// async-signal-safe) are touched.
extern "C" fn on_fault(signal: i32, info: *mut libc::siginfo_t, context: *mut c_void) {
    if !context.is_null() {
        let pc = pc_of(context);
        // SAFETY: `pc` points into the kernel's saved context.
        let at = unsafe { *pc } as usize;
        if at >= START.load(Ordering::Relaxed) && at < END.load(Ordering::Relaxed) {
            RECOVERED.fetch_add(1, Ordering::Relaxed);
            // SAFETY: as above; resuming at the routine's own recovery
            // point, which returns 0 to the walk.
            unsafe { *pc = RECOVER.load(Ordering::Acquire) as u64 };
            return;
        }
    }
    chain(signal, info, context);
}

/// Hands a fault that is not ours to whatever handled it before us.
fn chain(signal: i32, info: *mut libc::siginfo_t, context: *mut c_void) {
    if !PREVIOUS.ready.load(Ordering::Acquire) {
        return default_action(signal);
    }
    let previous = if signal == libc::SIGBUS {
        PREVIOUS.bus.get()
    } else {
        PREVIOUS.segv.get()
    };
    // SAFETY: written once before `ready` was released.
    let previous = unsafe { &*previous };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Ignoring a fault would re-raise it forever: the default action,
        // taken when the faulting instruction runs again on return.
        return default_action(signal);
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so
        // it has this signature; it gets the fault's own arguments.
        let f: extern "C" fn(i32, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: a plain handler takes the signal number.
        let f: extern "C" fn(i32) = unsafe { std::mem::transmute(handler) };
        f(signal);
    }
}

/// Restores the default disposition; returning re-runs the faulting
/// instruction, which then takes the default action (a core dump).
fn default_action(signal: i32) {
    // SAFETY: a zeroed sigaction is SIG_DFL; sigaction is async-signal-safe.
    unsafe {
        let action: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, &action, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_of_unmapped_memory_reports_unreadable() {
        install();
        let page = 4096;
        // SAFETY: a fresh anonymous page, then unmapped: its address is
        // known to be unreadable.
        let addr = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            p.cast::<u64>().write(7);
            p.cast::<u64>().add(1).write(9);
            assert_eq!(load2(p as u64), Some([7, 9]));
            libc::munmap(p, page);
            p as u64
        };
        let before = RECOVERED.load(Ordering::Relaxed);
        assert_eq!(load2(addr), None);
        assert_eq!(load2(0), None);
        assert_eq!(load2(u64::MAX - 3), None);
        assert!(RECOVERED.load(Ordering::Relaxed) >= before + 3);
        // Straddling into an unmapped page after a readable word.
        let word = [1u64, 2];
        assert_eq!(load2(word.as_ptr() as u64), Some([1, 2]));
    }
}

//! The sampler stays on for months without harming its host: it never
//! overwrites a SIGPROF handler it does not own, no read in its handler
//! can fault (and faults that are not its own still reach the handler
//! before it, with SIGPROF blocked), nothing of it piles onto another
//! handler on the alternate stack, `fork` leaves parent and child usable,
//! frame-pointer walks invent no caller edges, and a thousand threads are
//! all walked whole.
//!
//! One test at a time (`turn`): they share the process's one stream and
//! its signal dispositions.

#![cfg(all(target_os = "linux", target_arch = "x86_64", not(feature = "pprof-rs")))]

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use profscope_agent::Error;
use profscope_agent::cpu::{CpuCapture, CpuProfiler};
use profscope_agent::symbols::Symbolizer;

static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn capture(rt: &tokio::runtime::Runtime, duration: Duration, hz: u32) -> CpuCapture {
    rt.block_on(CpuProfiler::new().capture(duration, hz))
        .expect("capture")
}

fn counter(name: &str) -> u64 {
    profscope_agent::probes::sampler_counters()
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| v)
}

/// A capture running on `rt` while the test goes on.
fn in_background(
    rt: &tokio::runtime::Runtime,
    duration: Duration,
    hz: u32,
) -> tokio::task::JoinHandle<Result<CpuCapture, Error>> {
    rt.spawn(async move { CpuProfiler::new().capture(duration, hz).await })
}

/// Each sample as its logical stack, leaf first (inlined frames included),
/// with its thread and count.
fn stacks(capture: &CpuCapture) -> Vec<(String, Vec<String>, i64)> {
    let profile = capture.to_profile(&Symbolizer::new());
    let name = |id: u64| {
        let f = &profile.function[id as usize - 1];
        profile.string_at(f.name).to_string()
    };
    profile
        .sample
        .iter()
        .map(|s| {
            let frames = s
                .location_id
                .iter()
                .flat_map(|id| profile.location[*id as usize - 1].line.iter())
                .map(|line| name(line.function_id))
                .collect();
            let thread = s
                .label
                .iter()
                .find(|l| profile.string_at(l.key) == "thread")
                .map(|l| profile.string_at(l.str).to_string())
                .unwrap_or_default();
            (thread, frames, s.value[0])
        })
        .collect()
}

/// A loop that calls nothing, so its samples have it as leaf.
#[inline(never)]
fn spin_until(stop: &AtomicBool) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while !stop.load(Ordering::Relaxed) {
        let mut i = 0u32;
        while i < 100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i += 1;
        }
    }
    x
}

fn spinner(name: &str) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || spin_until(&s))
        .unwrap();
    (stop, handle)
}

static FOREIGN_TICKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn foreign_sigprof(_: i32) {
    FOREIGN_TICKS.fetch_add(1, Ordering::Relaxed);
}

fn sigprof_handler() -> usize {
    // SAFETY: reads the disposition into a zeroed sigaction.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut current);
        current.sa_sigaction
    }
}

fn set_itimer_prof(every: Duration) {
    let tv = libc::timeval {
        tv_sec: every.as_secs() as libc::time_t,
        tv_usec: every.subsec_micros() as libc::suseconds_t,
    };
    let spec = libc::itimerval {
        it_interval: tv,
        it_value: tv,
    };
    // SAFETY: a valid itimerval.
    unsafe { libc::setitimer(libc::ITIMER_PROF, &spec, std::ptr::null_mut()) };
}

#[test]
fn a_foreign_sigprof_handler_is_never_overwritten() {
    let _turn = turn();
    let (stop, busy) = spinner("busy");
    let rt = runtime();
    let running = in_background(&rt, Duration::from_secs(2), 99);
    std::thread::sleep(Duration::from_millis(500));
    // Another library installs its own SIGPROF handler and timer mid-stream.
    // SAFETY: a plain handler that only counts.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = foreign_sigprof as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut());
    }
    set_itimer_prof(Duration::from_millis(10));
    let result = rt.block_on(running).unwrap();
    let Err(Error::Conflict(reason)) = &result else {
        panic!("the capture must fail with 409, got {result:?}");
    };
    assert!(reason.contains("another SIGPROF handler"), "{reason}");
    // The stream is gone and left the foreign handler where it was; the
    // process lives through that handler's own ticks.
    let ticks = FOREIGN_TICKS.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(sigprof_handler(), foreign_sigprof as *const () as usize);
    let later = FOREIGN_TICKS.load(Ordering::Relaxed);
    assert!(later > ticks + 50, "foreign ticks {ticks} → {later}");
    assert!(counter("signal_taken") >= 1);
    // A capture now answers 409 at once, and still takes nothing.
    let refused = rt.block_on(CpuProfiler::new().capture(Duration::from_millis(100), 99));
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    assert_eq!(sigprof_handler(), foreign_sigprof as *const () as usize);
    // Hand SIGPROF back for the other tests: no timer, then the default.
    set_itimer_prof(Duration::ZERO);
    // SAFETY: plain dispositions; pending ticks are discarded by SIG_IGN.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_IGN;
        libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut());
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut());
    }
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    // And the sampler works again once SIGPROF is free.
    let (stop, busy) = spinner("busy-again");
    let again = capture(&rt, Duration::from_millis(300), 997);
    assert!(again.sample_count() > 0);
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
}

/// Spins `rounds` times with the stack pointer at `stack_top` (a mapping
/// of the test's) and the frame pointer at `fake_fp`.
#[inline(never)]
fn spin_on_fake_frames(stack_top: u64, fake_fp: u64, rounds: u64) {
    // SAFETY: rsp moves to a stack of ours and back and rbp is saved and
    // restored; the loop touches no memory, and a signal taken in it runs
    // on the thread's alternate stack (or on ours, which has room).
    unsafe {
        std::arch::asm!(
            "push rbp",
            "mov {saved}, rsp",
            "mov rsp, {top}",
            "mov rbp, {fp}",
            "2:",
            "dec {n}",
            "jnz 2b",
            "mov rsp, {saved}",
            "pop rbp",
            top = in(reg) stack_top,
            fp = in(reg) fake_fp,
            n = inout(reg) rounds => _,
            saved = out(reg) _,
        );
    }
}

/// An alternate signal stack of the test's, painted, to measure how much
/// of it signal handlers used.
struct PaintedAltStack {
    base: *mut u8,
    size: usize,
    previous: libc::stack_t,
}

const PAINT: u8 = 0xa5;

impl PaintedAltStack {
    /// Installs a painted stack of `size` bytes as this thread's.
    fn install(size: usize) -> Self {
        // SAFETY: a fresh private anonymous mapping, checked and painted,
        // becomes this thread's alternate stack; the previous one is kept.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            std::ptr::write_bytes(base.cast::<u8>(), PAINT, size);
            let stack = libc::stack_t {
                ss_sp: base,
                ss_flags: 0,
                ss_size: size,
            };
            let mut previous: libc::stack_t = std::mem::zeroed();
            assert_eq!(libc::sigaltstack(&stack, &mut previous), 0);
            Self {
                base: base.cast(),
                size,
                previous,
            }
        }
    }

    /// How deep any handler went, in bytes from the top; puts the previous
    /// alternate stack back.
    fn used(self) -> usize {
        // SAFETY: the previous stack goes back first, so no handler runs on
        // ours while it is read and unmapped.
        unsafe {
            assert_eq!(libc::sigaltstack(&self.previous, std::ptr::null_mut()), 0);
            let bytes = std::slice::from_raw_parts(self.base, self.size);
            let first = bytes.iter().position(|b| *b != PAINT).unwrap_or(self.size);
            libc::munmap(self.base.cast(), self.size);
            self.size - first
        }
    }
}

/// The alternate stack std gives each thread it starts (and the main
/// thread): `SIGSTKSZ`, or the kernel's minimum for this CPU if larger.
fn std_alt_stack_size() -> usize {
    // SAFETY: getauxval has no preconditions.
    let minimum = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
    libc::SIGSTKSZ.max(minimum)
}

#[test]
fn a_frame_chain_into_memory_unmapped_since_the_snapshot_cannot_fault() {
    let _turn = turn();
    const STACK: usize = 256 * 1024;
    const PAGE: usize = 4096;
    // One mapping: a stack, then a page of (zeroed) fake frames above it.
    // SAFETY: a fresh private anonymous mapping, checked.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK + PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(base, libc::MAP_FAILED);
    let base = base as u64;
    let (top, fake) = (base + STACK as u64 - 64, base + STACK as u64);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name("fake-frames".into())
        .spawn(move || {
            let painted = PaintedAltStack::install(64 * 1024);
            while !s.load(Ordering::Relaxed) {
                spin_on_fake_frames(top, fake, 20_000_000);
            }
            painted.used()
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let recovered = counter("faults_recovered");
    let rt = runtime();
    let running = in_background(&rt, Duration::from_secs(3), 997);
    // The stream's snapshot now holds the whole mapping: take the page of
    // fake frames away under it.
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: the page above the stack, part of our own mapping.
    assert_eq!(unsafe { libc::munmap(fake as *mut libc::c_void, PAGE) }, 0);
    let capture = rt.block_on(running).unwrap().expect("capture");
    stop.store(true, Ordering::Relaxed);
    let used = thread.join().unwrap();
    let faults = counter("faults_recovered") - recovered;
    let mine: Vec<_> = stacks(&capture)
        .into_iter()
        .filter(|(thread, frames, _)| {
            thread == "fake-frames"
                && frames
                    .first()
                    .is_some_and(|f| f.ends_with("spin_on_fake_frames"))
        })
        .collect();
    let samples: i64 = mine.iter().map(|(_, _, n)| n).sum();
    let std_size = std_alt_stack_size();
    eprintln!(
        "{samples} samples on fake frames, {faults} faults recovered; \
         alternate stack used: {used} of the {std_size} bytes std gives a thread"
    );
    assert!(samples > 200, "{samples} samples");
    assert!(faults > 0, "the guard did no work: no fault recovered");
    assert!(used > 0, "no handler ran on the painted alternate stack");
    // The deepest a sample goes: the kernel's SIGPROF frame, the handler,
    // the kernel's SIGSEGV frame and the recovery. It must fit std's
    // alternate stack with room to spare, in unoptimized builds too.
    assert!(
        used + 512 <= std_size,
        "a recovering walk used {used} bytes of the alternate stack; std gives {std_size}"
    );
    for (_, frames, _) in &mine {
        assert_eq!(
            frames.len(),
            1,
            "the walk went past the fake frame: {frames:?}"
        );
    }
    // SAFETY: the rest of our mapping.
    unsafe { libc::munmap(base as *mut libc::c_void, STACK) };
}

const CHILD: &str = "PROFSCOPE_FAULT_CHILD";

/// The service's own fault handler: exits 42 if SIGPROF is blocked while
/// it runs (so no sample can pile onto it), 43 if not.
extern "C" fn own_segv_handler(_: i32) {
    // SAFETY: reads this thread's signal mask, then an async-signal-safe
    // exit with a code the parent looks for.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
        let blocked = libc::sigismember(&mask, libc::SIGPROF) == 1;
        libc::_exit(if blocked { 42 } else { 43 });
    }
}

#[inline(never)]
#[allow(unconditional_recursion)] // The stack overflow is the point.
fn overflow(depth: u64) -> u64 {
    let buffer = std::hint::black_box([depth; 64]);
    overflow(depth + 1) + buffer[3]
}

/// In a child process: the guard installed by a capture, then a fault
/// that is not the guard's.
fn fault_in_child(mode: &str) -> ! {
    if mode == "own-handler" {
        // SAFETY: a plain handler that exits.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = own_segv_handler as *const () as usize;
            libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut());
        }
    }
    let rt = runtime();
    let (stop, busy) = spinner("busy");
    let _ = capture(&rt, Duration::from_millis(200), 997);
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    // The fault comes while a capture runs: SIGPROF ticks reach this thread
    // as it recurses, and would reach the fault's handler if not blocked.
    let _live = in_background(&rt, Duration::from_secs(10), 997);
    std::thread::sleep(Duration::from_millis(150));
    if mode == "overflow" {
        std::hint::black_box(overflow(0));
    }
    // SAFETY: not safe at all: the null read this test is about.
    let value = unsafe { std::ptr::read_volatile(std::ptr::null::<u64>()) };
    println!("read {value}: no fault?");
    std::process::exit(0);
}

#[test]
fn a_fault_that_is_not_the_samplers_reaches_the_handler_before_it() {
    if let Ok(mode) = std::env::var(CHILD) {
        fault_in_child(&mode);
    }
    use std::os::unix::process::ExitStatusExt;
    for mode in ["own-handler", "default", "overflow"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_fault_that_is_not_the_samplers_reaches_the_handler_before_it",
                "--nocapture",
            ])
            .env(CHILD, mode)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        match mode {
            // The service's own handler got it, with SIGPROF blocked.
            "own-handler" => assert_eq!(
                out.status.code(),
                Some(42),
                "43: SIGPROF was not blocked in the fault handler; {:?} {stderr}",
                out.status
            ),
            // The default action: killed by SIGSEGV.
            "default" => assert_eq!(
                out.status.signal(),
                Some(libc::SIGSEGV),
                "{:?} {stderr}",
                out.status
            ),
            // Rust's stack-overflow report, through our handler.
            _ => {
                assert!(
                    stderr.contains("has overflowed its stack"),
                    "{:?} {stderr}",
                    out.status
                );
                assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{stderr}");
            }
        }
    }
}

const NESTED_CHILD: &str = "PROFSCOPE_NESTED_CHILD";

/// Spins 0.5 s inside a signal handler, on the alternate stack (the
/// clock is the vDSO's: async-signal-safe).
extern "C" fn spin_in_handler(_: i32) {
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(500) {
        std::hint::spin_loop();
    }
}

/// In a child process: under a 997 Hz capture, a thread runs a long
/// handler of its own on std's alternate stack; SIGPROF ticks arrive in it.
fn spin_in_handler_in_child() -> ! {
    let rt = runtime();
    let running = in_background(&rt, Duration::from_secs(10), 997);
    std::thread::sleep(Duration::from_millis(200));
    let before = counter("dropped_in_signal_handler");
    std::thread::Builder::new()
        .name("in-handler".into())
        .spawn(|| {
            // SAFETY: a plain SA_ONSTACK handler that only spins, raised
            // on this thread.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = spin_in_handler as *const () as usize;
                action.sa_flags = libc::SA_ONSTACK;
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
                libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1);
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let left = counter("dropped_in_signal_handler") - before;
    running.abort();
    println!("left alone in the handler: {left}");
    std::process::exit(if left > 0 { 0 } else { 3 });
}

#[test]
fn a_sample_never_piles_onto_another_handler_on_the_alternate_stack() {
    if std::env::var(NESTED_CHILD).is_ok() {
        spin_in_handler_in_child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_sample_never_piles_onto_another_handler_on_the_alternate_stack",
            "--nocapture",
        ])
        .env(NESTED_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
    // Before: the walk on top of the kernel's frame and the other handler
    // ran off std's 8 KiB alternate stack, and the child died by SIGSEGV.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:?} (3: no sample was left alone){stdout}{stderr}",
        out.status
    );
}

/// Waits for `pid` at most `limit`; `None` if it did not exit.
fn wait_for(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: our own child; WNOHANG never blocks.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            return Some(status);
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// In a forked child (no exec): a capture of its own work.
fn capture_in_forked_child() -> i32 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stop, busy) = spinner("child-busy");
    let capture = rt.block_on(CpuProfiler::new().capture(Duration::from_secs(1), 997));
    stop.store(true, Ordering::Relaxed);
    let _ = busy.join();
    let Ok(capture) = capture else { return 2 };
    let child: i64 = capture
        .stacks
        .iter()
        .filter(|s| s.thread == "child-busy")
        .map(|s| s.count)
        .sum();
    if child >= 20 { 0 } else { 3 }
}

#[test]
fn fork_during_a_capture_leaves_parent_and_child_usable() {
    let _turn = turn();
    let (stop, busy) = spinner("parent-busy");
    let rt = runtime();
    let running = in_background(&rt, Duration::from_secs(2), 997);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: the child runs only `capture_in_forked_child` and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = std::panic::catch_unwind(capture_in_forked_child).unwrap_or(4);
        // SAFETY: leaves the child without running the parent's exit code.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0);
    let status = wait_for(pid, Duration::from_secs(30)).expect("the forked child hung");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x} (2: capture failed, 3: no samples of its own thread)"
    );
    let parent = rt.block_on(running).unwrap().expect("parent capture");
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    let parent_busy: i64 = parent
        .stacks
        .iter()
        .filter(|s| s.thread == "parent-busy")
        .map(|s| s.count)
        .sum();
    assert!(parent_busy > 100, "parent samples {parent_busy}");
}

#[test]
fn fork_and_exec_under_a_fast_capture_never_hangs() {
    let _turn = turn();
    let (stop, busy) = spinner("busy");
    let rt = runtime();
    let running = in_background(&rt, Duration::from_secs(30), 997);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    for round in 0..100 {
        // SAFETY: the child only execs (or exits).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: NUL-terminated paths and a null-terminated argv.
            unsafe {
                let argv = [c"true".as_ptr(), std::ptr::null()];
                libc::execv(c"/bin/true".as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        let status = wait_for(pid, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("fork {round}: the child hung"));
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
    eprintln!("100 fork+exec in {:?}", started.elapsed());
    running.abort();
    let _ = rt.block_on(running);
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    // The stream still serves a capture.
    let (stop, busy) = spinner("busy");
    assert!(capture(&rt, Duration::from_millis(300), 997).sample_count() > 0);
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
}

// A call graph of tiny functions (no calls inside the leaves: debug builds
// would not inline even `wrapping_mul`), so many samples land in a
// prologue or an epilogue, where `[rbp + 8]` is not the leaf's caller.
#[inline(never)]
fn leaf_x(v: u64) -> u64 {
    (v ^ (v << 7)) >> 1
}
#[inline(never)]
fn leaf_y(v: u64) -> u64 {
    (v ^ (v >> 9)) << 1
}
#[inline(never)]
fn leaf_z(v: u64) -> u64 {
    v ^ 0x5555
}
#[inline(never)]
fn mid_a(mut v: u64) -> u64 {
    let mut i = 0;
    while i < 64 {
        v = leaf_x(v) ^ leaf_y(v);
        i += 1;
    }
    v
}
#[inline(never)]
fn mid_b(mut v: u64) -> u64 {
    let mut i = 0;
    while i < 64 {
        v = leaf_y(v) ^ leaf_z(v);
        i += 1;
    }
    v
}
#[inline(never)]
fn call_graph(stop: &AtomicBool) -> u64 {
    let mut v = 1;
    while !stop.load(Ordering::Relaxed) {
        v = mid_a(v) ^ mid_b(v);
    }
    v
}

/// The share of samples in the call graph whose (leaf, caller) pair the
/// graph allows.
fn allowed_pair_share(capture: &CpuCapture) -> (f64, i64) {
    let allowed: HashMap<&str, &[&str]> = HashMap::from([
        ("leaf_x", &["mid_a"][..]),
        ("leaf_y", &["mid_a", "mid_b"][..]),
        ("leaf_z", &["mid_b"][..]),
        ("mid_a", &["call_graph"][..]),
        ("mid_b", &["call_graph"][..]),
    ]);
    let short = |f: &str| f.rsplit("::").next().unwrap_or(f).to_string();
    let (mut good, mut all) = (0, 0);
    let mut others: HashMap<String, i64> = HashMap::new();
    for (thread, frames, n) in stacks(capture) {
        if thread != "call-graph" {
            continue;
        }
        let Some(leaf) = frames.first().map(|f| short(f)) else {
            continue;
        };
        let Some(callers) = allowed.get(leaf.as_str()) else {
            *others.entry(leaf).or_default() += n;
            continue;
        };
        all += n;
        if frames
            .get(1)
            .is_some_and(|c| callers.contains(&short(c).as_str()))
        {
            good += n;
        }
    }
    eprintln!("other leaves on the call-graph thread: {others:?}");
    (good as f64 / all.max(1) as f64, all)
}

#[test]
fn no_invented_caller_edges_at_prologues_and_epilogues() {
    let _turn = turn();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let graph = std::thread::Builder::new()
        .name("call-graph".into())
        .spawn(move || call_graph(&s))
        .unwrap();
    let rt = runtime();
    // Before: the frame-pointer walk alone.
    profscope_agent::probes::set_sampler_reads(true, false);
    let (before, n_before) = allowed_pair_share(&capture(&rt, Duration::from_secs(2), 997));
    profscope_agent::probes::set_sampler_reads(true, true);
    let (after, n_after) = allowed_pair_share(&capture(&rt, Duration::from_secs(2), 997));
    stop.store(true, Ordering::Relaxed);
    graph.join().unwrap();
    eprintln!(
        "samples with an allowed (leaf, caller) pair: frame pointers alone {:.2} % of {n_before}, \
         with the leaf fix-up {:.2} % of {n_after}",
        before * 100.0,
        after * 100.0
    );
    assert!(n_after > 200, "{n_after} samples");
    assert!(after >= 0.99, "{:.2} %", after * 100.0);
}

/// Waits in a futex until released: blocked in a syscall, the way most
/// threads of a service spend their life.
#[inline(never)]
fn thread_entry(word: &std::sync::atomic::AtomicU32) {
    while word.load(Ordering::Acquire) == 0 {
        // SAFETY: FUTEX_WAIT on a live u32 with the value it must hold to
        // sleep; spurious and signal wake-ups loop.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0u32,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }
}

#[test]
fn a_thousand_threads_are_all_walked_to_their_entry() {
    let _turn = turn();
    let truncated = counter("ranges_truncated");
    let release = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..1000)
        .map(|i| {
            let (release, tx) = (release.clone(), tx.clone());
            std::thread::Builder::new()
                .name(format!("t{i}"))
                .stack_size(128 * 1024)
                .spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    let _ = tx.send(unsafe { libc::gettid() });
                    thread_entry(&release);
                })
                .unwrap()
        })
        .collect();
    let tids: Vec<i32> = rx.iter().take(1000).collect();
    std::thread::sleep(Duration::from_millis(50));
    // One directed sample of each (the stream runs with no timer armed).
    let samples = profscope_agent::probes::directed_samples(&tids, Duration::from_secs(20))
        .expect("directed samples");
    release.store(1, Ordering::Release);
    for t in &threads {
        // SAFETY: wakes every waiter of the word.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                release.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
            )
        };
        t.thread().unpark();
    }
    for t in threads {
        t.join().unwrap();
    }
    let symbolizer = Symbolizer::new();
    let mut whole = std::collections::HashSet::new();
    let mut short = Vec::new();
    for (tid, frames) in &samples {
        let reaches = frames.iter().enumerate().any(|(i, &a)| {
            let lookup = if i == 0 { a } else { a - 1 };
            symbolizer
                .resolve(lookup)
                .iter()
                .any(|f| f.function.ends_with("thread_entry"))
        });
        if reaches {
            whole.insert(*tid);
        } else if short.len() < 3 {
            let names: Vec<_> = frames
                .iter()
                .map(|&a| {
                    symbolizer
                        .resolve(a.saturating_sub(1))
                        .first()
                        .map(|f| f.function.to_string())
                })
                .collect();
            short.push((*tid, names));
        }
    }
    eprintln!(
        "{} directed samples, {} of 1000 threads walked to thread_entry",
        samples.len(),
        whole.len()
    );
    assert_eq!(whole.len(), 1000, "stacks that stop short, e.g. {short:?}");
    assert_eq!(
        counter("ranges_truncated"),
        truncated,
        "snapshot ranges truncated"
    );
}

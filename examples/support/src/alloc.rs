//! Threads that allocate and free as hard as they can: the load under
//! which allocator locks are most often held when a signal lands.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::rng::XorShift;

/// `threads` threads, each keeping up to `keep` live blocks whose sizes
/// `size` draws from the thread's own seeded stream; stopped on
/// [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct AllocationStorm {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl AllocationStorm {
    /// Starts the threads. `size` maps a random value to a block size.
    pub fn start(threads: usize, keep: usize, size: fn(u64) -> usize) -> AllocationStorm {
        let stop = Arc::new(AtomicBool::new(false));
        let keep = keep.max(1);
        let threads = (0..threads as u64)
            .map(|seed| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut rng = XorShift::new(0x9e37_79b9 + seed);
                    let mut held: Vec<Vec<u8>> = Vec::with_capacity(keep + 1);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let x = rng.next();
                        held.push(vec![seed as u8; size(x).max(1)]);
                        if held.len() > keep {
                            held.swap_remove((x % keep as u64) as usize);
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        AllocationStorm { stop, threads }
    }

    /// Stops the threads; returns how many allocations they made.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.drain(..).map(|t| t.join().unwrap_or(0)).sum()
    }
}

impl Drop for AllocationStorm {
    fn drop(&mut self) {
        self.halt();
    }
}

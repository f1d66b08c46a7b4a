//! Memory budgets for work that cannot be interrupted from outside.
//!
//! Some node work runs third-party code that builds values we cannot see or cap: a minijinja
//! template doubles a string with `~`, captures a macro's output, or grows a list, all inside
//! the engine with no hook between steps. Fuel bounds its steps, not its bytes, and on the
//! threaded strategy an allocation that fails aborts the whole server.
//!
//! [`Budgeted`] wraps the binary's global allocator. A thread that [`enter`]s an [`Account`]
//! has every allocation it makes charged to it (and every release credited) until the guard
//! drops. An allocation that would take the account past its limit is never made: the
//! allocator marks the account as *tripped* and parks the thread for good. Returning null
//! instead would abort the process (`handle_alloc_error`), and unwinding out of an allocator
//! is undefined behaviour, so parking is the one safe way to stop the work: the thread keeps
//! what it already holds (at most the limit), the caller sees [`Account::tripped`] and fails
//! the task, and everything else goes on. [`parked`] counts parked threads so a caller can
//! refuse new work once too much memory is held by them.
//!
//! Without `Budgeted` installed as the global allocator, [`enter`] charges nothing and
//! [`installed`] says so; callers then rely on their other caps.
//!
//! Contract for callers:
//! - A budgeted thread MUST run only work whose abandonment is safe: it must hold no lock
//!   or resource another thread waits for, since a tripped thread never releases them.
//! - The caller MUST watch [`Account::tripped`] while it waits, since a tripped task never
//!   finishes.

#![allow(unsafe_code)] // A `GlobalAlloc` impl is unsafe by definition; nothing else here is.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What one budgeted task may hold at once, and what it holds now.
#[derive(Debug)]
pub struct Account {
    limit: isize,
    used: AtomicIsize,
    peak: AtomicIsize,
    tripped: AtomicBool,
}

impl Account {
    /// An account that may hold `limit` bytes at once.
    pub fn new(limit: usize) -> Arc<Account> {
        Arc::new(Account {
            limit: isize::try_from(limit).unwrap_or(isize::MAX),
            used: AtomicIsize::new(0),
            peak: AtomicIsize::new(0),
            tripped: AtomicBool::new(false),
        })
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit.unsigned_abs()
    }

    /// Whether an allocation was refused: the thread that made it is parked for good.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// Most bytes held at once so far (allocations made before [`enter`] and released inside
    /// count as credit, so this can under-count a task that frees what it was given).
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed).max(0).unsigned_abs()
    }

    /// Charges `size` bytes; `false` (and tripped) when that would pass the limit.
    fn charge(&self, size: usize) -> bool {
        let size = isize::try_from(size).unwrap_or(isize::MAX);
        let before = self.used.fetch_add(size, Ordering::Relaxed);
        let now = before.saturating_add(size);
        if now > self.limit {
            self.used.fetch_sub(size, Ordering::Relaxed);
            self.tripped.store(true, Ordering::Release);
            return false;
        }
        self.peak.fetch_max(now, Ordering::Relaxed);
        true
    }

    fn credit(&self, size: usize) {
        let size = isize::try_from(size).unwrap_or(isize::MAX);
        self.used.fetch_sub(size, Ordering::Relaxed);
    }
}

thread_local! {
    // A raw pointer, not an `Arc`: the allocator must not touch reference counts (or anything
    // that allocates). The guard keeps the account alive while the pointer is set.
    static CURRENT: Cell<*const Account> = const { Cell::new(ptr::null()) };
}

static PARKED: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Threads parked for good by a tripped account since the process started.
pub fn parked() -> usize {
    PARKED.load(Ordering::Relaxed)
}

/// Whether the process's global allocator is [`Budgeted`] (known once it has allocated).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// While the returned guard lives, this thread's allocations are charged to `account`.
pub fn enter(account: &Arc<Account>) -> Entered {
    let previous = CURRENT.with(|c| c.replace(Arc::as_ptr(account)));
    Entered {
        _account: account.clone(),
        previous,
    }
}

/// The scope [`enter`] opened; dropping it stops the charging.
#[derive(Debug)]
#[must_use = "charging stops when the guard drops"]
pub struct Entered {
    _account: Arc<Account>,
    previous: *const Account,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let previous = self.previous;
        let _ = CURRENT.try_with(|c| c.set(previous));
    }
}

/// The current thread's account, if it has one. Never allocates.
fn current() -> Option<&'static Account> {
    let p = CURRENT.try_with(Cell::get).unwrap_or(ptr::null());
    // SAFETY: a non-null pointer was set by `enter` from an `Arc` the live `Entered` guard
    // holds, and is cleared (to the outer account) before that guard releases it. A parked
    // thread's guard never drops, so its account outlives the pointer too.
    unsafe { p.as_ref() }
}

/// Stops this thread for good: the only way out of an allocation we must refuse that neither
/// aborts the process nor unwinds through the allocator. Allocates nothing.
fn park_forever() -> ! {
    CURRENT.with(|c| c.set(ptr::null()));
    PARKED.fetch_add(1, Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A global allocator that charges budgeted threads (see the crate docs).
#[derive(Debug)]
pub struct Budgeted<A>(pub A);

impl<A> Budgeted<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Budgeted<A> {
        Budgeted(inner)
    }

    fn admit(size: usize) {
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
        if let Some(account) = current() {
            if !account.charge(size) {
                park_forever();
            }
        }
    }

    fn release(size: usize) {
        if let Some(account) = current() {
            account.credit(size);
        }
    }
}

// SAFETY: every call is forwarded to `A` with the caller's arguments unchanged; the wrapper
// only counts sizes and, past a budget, never returns (it does not unwind or return null).
unsafe impl<A: GlobalAlloc> GlobalAlloc for Budgeted<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::admit(layout.size());
        // SAFETY: forwarded as is (the caller upholds `alloc`'s contract).
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::admit(layout.size());
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::release(layout.size());
        // SAFETY: as above.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            Self::admit(new_size - layout.size());
        } else {
            Self::release(layout.size() - new_size);
        }
        // SAFETY: as above.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: Budgeted<std::alloc::System> = Budgeted::new(std::alloc::System);

    #[test]
    fn a_thread_within_its_budget_runs_and_is_charged() {
        let account = Account::new(64 << 20);
        let a = account.clone();
        let held = std::thread::spawn(move || {
            let _in = enter(&a);
            let v = vec![1u8; 8 << 20];
            v.len()
        })
        .join()
        .expect("joined");
        assert_eq!(held, 8 << 20);
        assert!(installed());
        assert!(!account.tripped());
        assert!(account.peak() >= 8 << 20, "peak {}", account.peak());
    }

    #[test]
    fn a_thread_past_its_budget_is_parked_and_the_process_goes_on() {
        let account = Account::new(16 << 20);
        let before = parked();
        let a = account.clone();
        std::thread::spawn(move || {
            let _in = enter(&a);
            // Doubles past 16 MiB: the allocation that would pass it never happens.
            let mut s = String::from("x");
            loop {
                s = format!("{s}{s}");
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !account.tripped() {
            assert!(std::time::Instant::now() < deadline, "never tripped");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(account.peak() <= 16 << 20, "peak {}", account.peak());
        // The parker counts itself just after tripping.
        while parked() == before {
            std::thread::sleep(Duration::from_millis(1));
        }
        // This thread was never charged and allocates freely.
        let big = vec![0u8; 64 << 20];
        assert_eq!(big.len(), 64 << 20);
    }

    #[test]
    fn charging_stops_when_the_guard_drops() {
        let account = Account::new(1 << 20);
        {
            let _in = enter(&account);
            let small = vec![0u8; 1000];
            drop(small);
        }
        let big = vec![0u8; 8 << 20];
        assert_eq!(big.len(), 8 << 20);
        assert!(!account.tripped());
    }
}

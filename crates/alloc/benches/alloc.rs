//! What `Budgeted` adds to an allocation: the same allocate-and-free pairs through the bare
//! allocator and through the wrapper, side by side in one run (unbudgeted thread: the path
//! every allocation of the server takes; budgeted thread: a template render's).

#![allow(unsafe_code)] // Calls `GlobalAlloc` methods directly, as the wrapper's callers do.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use nodetool_alloc::{enter, Account, Budgeted};

fn pair<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: the layout is non-zero; the pointer is freed with the layout it was made with.
    unsafe {
        let p = a.alloc(layout);
        black_box(p);
        if !p.is_null() {
            a.dealloc(p, layout);
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc+free 64 B");
    let layout = Layout::from_size_align(64, 8).expect("layout");
    let system = System;
    let budgeted = Budgeted::new(System);
    g.bench_function("system", |b| b.iter(|| pair(&system, layout)));
    g.bench_function("budgeted, no account", |b| {
        b.iter(|| pair(&budgeted, layout))
    });
    let account = Account::new(1 << 30);
    let _in = enter(&account);
    g.bench_function("budgeted, in an account", |b| {
        b.iter(|| pair(&budgeted, layout))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

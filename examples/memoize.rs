//! Memoising an expensive function in a chest: a first run computes, a rerun is served from
//! the chest, a version bump recomputes, and a parallel map over a few hundred inputs draws a
//! progress bar. `cargo run --release --example memoize`

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use spillchest::memo::Progress;
use spillchest::{Chest, Memo, MemoKey};

/// Something slow: the n-th prime, by trial division.
fn nth_prime(n: &u64) -> u64 {
    let mut found = 0;
    let mut candidate = 1u64;
    while found < *n {
        candidate += 1;
        if (2..)
            .take_while(|d| d * d <= candidate)
            .all(|d| !candidate.is_multiple_of(d))
        {
            found += 1;
        }
    }
    candidate
}

fn bar(p: Progress) {
    let width = 40;
    let filled = p.done * width / p.total.max(1);
    eprint!(
        "\r[{}{}] {}/{} ({} from the chest)",
        "#".repeat(filled),
        " ".repeat(width - filled),
        p.done,
        p.total,
        p.from_cache
    );
    let _ = std::io::stderr().flush();
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let chest: Arc<Chest<MemoKey, u64>> = Arc::new(Chest::with_budget(1 << 20)?);
    let primes = Memo::new(Arc::clone(&chest), "nth_prime", 1);

    let start = Instant::now();
    let p = primes.call(&60_000u64, nth_prime)?;
    println!("60000th prime = {p}, computed in {:?}", start.elapsed());
    let start = Instant::now();
    let p = primes.call(&60_000u64, nth_prime)?;
    println!(
        "60000th prime = {p}, served from the chest in {:?}",
        start.elapsed()
    );

    let bumped = Memo::new(Arc::clone(&chest), "nth_prime", 2);
    let start = Instant::now();
    bumped.call(&60_000u64, nth_prime)?;
    println!("version 2 recomputes: {:?}", start.elapsed());

    let inputs: Vec<u64> = (1..=400).map(|i| i * 50).collect();
    let start = Instant::now();
    let results = primes.par_map(&inputs, nth_prime, bar)?;
    eprintln!();
    println!(
        "par_map over {} inputs: {:?}",
        inputs.len(),
        start.elapsed()
    );
    let start = Instant::now();
    let again = primes.par_map(&inputs, nth_prime, bar)?;
    eprintln!();
    println!(
        "the same map again, all from the chest: {:?}",
        start.elapsed()
    );
    assert_eq!(results, again);
    println!("{:?}", chest.stats());
    Ok(())
}

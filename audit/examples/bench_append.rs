//! Prints the spool's append rate: `cargo run --release -p airlock-audit --example
//! bench_append [N]`.

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let (rate, bytes) = airlock_audit::bench_append(n);
    println!("append (sync each): {n} records, {rate:.0} records/s, {bytes:.0} bytes/record");
    for batch in [16, 256] {
        let (rate, bytes) = airlock_audit::bench_append_many(n * 10, batch);
        println!(
            "append_many (batch {batch}): {} records, {rate:.0} records/s, {bytes:.0} bytes/record",
            n * 10
        );
    }
}

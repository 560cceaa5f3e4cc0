//! RSS per idle subscriber with one subscription (issue 5's memory target).
//! `cargo run --release --example idle_memory [N]` (default 1,000,000):
//! half on `public`, half on one of 100k hashtags, no frames queued.

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    s.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}
fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let engine = evroute::Engine::default();
    let before = rss();
    let subs: Vec<_> = (0..n)
        .map(|i| {
            let s = engine.subscriber(Default::default());
            let tag = format!(r#"{{"stream":"hashtag","tag":"t{}"}}"#, i % 100_000);
            s.subscribe(if i % 2 == 0 { br#"{"stream":"public"}"# } else { tag.as_bytes() }).unwrap();
            s
        })
        .collect();
    println!("{} bytes per idle subscriber", (rss() - before) / subs.len());
}

//! RSS per idle subscriber with one subscription (issue 13's memory target:
//! at most 300 B, so 1M subscribers in 300 MB). No frames are queued.
//! `cargo run --release --example idle_memory [N] [mixed|public|hashtag]`:
//! N subscribers (default 1,000,000), all on `public`, all on one of 100k
//! hashtags, or half and half (the default, and what `evroute bench` runs).

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    s.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).expect("statm's resident pages") * 4096
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000).max(1);
    let mode = args.next().unwrap_or_else(|| "mixed".into());
    let public = |i: usize| match mode.as_str() {
        "public" => true,
        "hashtag" => false,
        "mixed" => i.is_multiple_of(2),
        other => panic!("unknown mode {other:?}: mixed, public or hashtag"),
    };
    let engine = evroute::Engine::default();
    let before = rss();
    let subs: Vec<_> = (0..n)
        .map(|i| {
            let s = engine.subscriber(Default::default());
            let tag = format!(r#"{{"stream":"hashtag","tag":"t{}"}}"#, i % 100_000);
            s.subscribe(if public(i) { br#"{"stream":"public"}"# } else { tag.as_bytes() }).unwrap();
            s
        })
        .collect();
    println!("{} bytes per idle subscriber ({n} subscribers, {mode})", (rss() - before) / subs.len());
}

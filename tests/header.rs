//! The committed C header must be exactly what build.rs generates from
//! `src/ffi` with the pinned cbindgen (regenerate: `EVR_REGEN_HEADER=1 cargo build`).

#[test]
fn committed_header_matches_the_generated_one() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/evroute.h"));
    let committed = include_str!("../include/evroute.h");
    assert!(generated == committed, "include/evroute.h is stale: run `EVR_REGEN_HEADER=1 cargo build` and commit it");
}

#[test]
fn header_version_macro_matches_cargo_toml() {
    let header = include_str!("../include/evroute.h");
    let line = format!("#define EVR_VERSION \"{}\"\n", env!("CARGO_PKG_VERSION"));
    assert!(header.contains(&line), "missing {line:?}");
}

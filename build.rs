//! Generates the C header from `src/ffi` with the pinned cbindgen.
//!
//! The header always goes to `$OUT_DIR/evroute.h`; `tests/header.rs` fails
//! when it differs from the committed `include/evroute.h`. Set
//! `EVR_REGEN_HEADER=1` to rewrite the committed file instead.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=EVR_REGEN_HEADER");

    // The shared library's soname carries the ABI (major) version, so programs
    // linked against libevroute.so.0 keep working when 1.x is installed beside it.
    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("CARGO_PKG_VERSION_MAJOR");
    match env::var("CARGO_CFG_TARGET_OS").as_deref() {
        Ok("macos") => println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libevroute.{major}.dylib"),
        Ok("windows") => {}
        _ => println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libevroute.so.{major}"),
    }

    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("reading cbindgen.toml");
    // The version macros come from Cargo.toml, so a version bump changes the
    // header and the header check asks for a regeneration.
    let version = env::var("CARGO_PKG_VERSION").expect("CARGO_PKG_VERSION");
    let part = |name: &str| env::var(name).expect("CARGO_PKG_VERSION_*");
    config.after_includes = Some(format!(
        "\n/** The version of evroute this header belongs to; equals evr_version(). */\n\
         #define EVR_VERSION \"{version}\"\n\
         #define EVR_VERSION_MAJOR {}\n\
         #define EVR_VERSION_MINOR {}\n\
         #define EVR_VERSION_PATCH {}",
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH"),
    ));

    let mut header = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen could not generate the header")
        .write(&mut header);

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("evroute.h");
    fs::write(&out, &header).expect("writing $OUT_DIR/evroute.h");
    if env::var_os("EVR_REGEN_HEADER").is_some_and(|v| v == "1") {
        fs::write(root.join("include/evroute.h"), &header).expect("writing include/evroute.h");
    }
}

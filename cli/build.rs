//! Leaves a layout where `target/<profile>/runanywhere` finds the workspace's plugins
//! with no flags: every `manifests/*.toml` is copied to `target/<profile>/plugins/`
//! with its `library` rewritten to point at the cdylib cargo builds into
//! `target/<profile>/`. (Test fixtures stay out of it: the tests copy the manifests they
//! need into temporary directories.)

use std::path::{Path, PathBuf};
use std::{env, fs};

#[path = "../host/src/libname.rs"]
#[allow(dead_code, unreachable_pub)]
mod libname;

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ lives inside the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR = target/<profile>/build/<crate>-<hash>/out
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        return;
    };
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_else(|_| "linux".into());
    let src = workspace.join("manifests");
    println!("cargo:rerun-if-changed={}", src.display());
    copy_manifests(&src, &profile_dir.join("plugins"), &os);
}

fn copy_manifests(src: &Path, dst: &Path, os: &str) {
    let Ok(entries) = fs::read_dir(src) else {
        return;
    };
    if fs::create_dir_all(dst).is_err() {
        return;
    }
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        // Broken manifests (test fixtures) are copied as they are.
        let out = match text.parse::<toml::Table>() {
            Ok(mut table) => {
                if let Some(toml::Value::String(lib)) = table.get("library") {
                    let file = libname::library_file_name(lib, os);
                    if Path::new(&file).is_relative() {
                        table.insert("library".into(), toml::Value::String(format!("../{file}")));
                    }
                }
                toml::to_string(&table).unwrap_or(text)
            }
            Err(_) => text,
        };
        let target = dst.join(entry.file_name());
        if fs::read_to_string(&target).ok().as_deref() != Some(out.as_str()) {
            let _ = fs::write(target, out);
        }
    }
}

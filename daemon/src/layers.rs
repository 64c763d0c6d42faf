//! The crate's layering, checked: a module uses only modules of lower layers, so the crate
//! has no import cycles. DEVELOPERS.md explains the layers; this test keeps them true.

use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use the modules of any layer below its own, and no
/// other (its own submodules aside).
const LAYERS: &[&[&str]] = &[
    // The process and the rules for what comes from outside; they know nothing of tokend.
    &["limits", "fsperm", "clock", "logging", "sdnotify", "harden", "desktop"],
    &["seal", "cli", "config"],
    // Talking to the world: OAuth servers, notify commands.
    &["oauth", "notify"],
    &["held", "expiry", "login"],
    &["persist"],
    // One profile: its machine, its actor, its handle.
    &["profile"],
    &["endpoints"],
    &["daemon"],
    // What faces clients and the system: the socket server, signals.
    &["server", "signals"],
    // The HTTP API: served like the protocol socket, and answers token requests the same way.
    &["http"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Every source file of the library but its unit tests, with the top-level module it belongs to.
fn sources(dir: &Path, top: Option<&str>, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).expect("the source directory is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        if name == "tests" || path.file_name().is_some_and(|n| n == "layers.rs") {
            continue;
        }
        let module = top.map_or_else(|| name.clone(), str::to_owned);
        if path.is_dir() {
            sources(&path, Some(&module), out);
        } else if path.extension().is_some_and(|e| e == "rs") && !(top.is_none() && (name == "lib" || name == "main")) {
            out.push((module, path));
        }
    }
}

/// The top-level modules `source` names as `crate::…`, outside comments and unit tests.
fn uses(source: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
    let mut found = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn modules_use_only_lower_layers() {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), None, &mut files);
    assert!(files.len() > 20, "the sources were found: {files:?}");
    let mut wrong = Vec::new();
    for (module, path) in &files {
        let Some(own) = layer(module) else {
            wrong.push(format!("{module} ({}) is in no layer; add it to LAYERS", path.display()));
            continue;
        };
        let source = std::fs::read_to_string(path).expect("a readable source file");
        for used in uses(&source) {
            if used == *module {
                continue;
            }
            match layer(&used) {
                Some(theirs) if theirs < own => {}
                _ => wrong.push(format!("{} uses crate::{used}, which is not below {module}", path.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_a_use_and_skips_comments_and_tests() {
    let source = "use crate::daemon::Daemon;\n//! see [`crate::server`]\nfn f() { crate::limits::after(a, b); }\n#[cfg(test)]\nmod tests {\n    use crate::signals;\n}\n";
    assert_eq!(uses(source), vec!["daemon", "limits"]);
}

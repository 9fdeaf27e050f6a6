//! The man pages in `docs/man/` are rendered from the clap definitions of both binaries:
//! `atlasbridge.1`, one page per subcommand (`atlasbridge-trace.1`,
//! `atlasbridge-trace-integrity-check.1`, …) and `atlasbridged.8`. This test renders them
//! again and fails when the checked-in pages differ, so a flag cannot change without its page;
//! with `ATLASBRIDGE_REGENERATE_MAN=1` it writes them instead (and removes pages of commands that
//! are gone). The output has no date and depends only on the definitions and the version.

// A test fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use clap_mangen::Man;

const REGENERATE: &str = "ATLASBRIDGE_REGENERATE_MAN";

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man")
}

fn render(man: &Man) -> Vec<u8> {
    let mut page = Vec::new();
    man.render(&mut page).unwrap();
    page
}

/// A page for `command` and, depth first, for each of its visible subcommands — the walk of
/// `clap_mangen::generate_to`, into memory.
fn walk(command: clap::Command, pages: &mut BTreeMap<String, Vec<u8>>) {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        walk(sub.clone(), pages);
    }
    let man = Man::new(command).source(source());
    pages.insert(man.get_filename(), render(&man));
}

/// The footer's source: the project and its version (`doctor 0.1.0` otherwise).
fn source() -> String {
    format!("AtlasBridge {}", env!("CARGO_PKG_VERSION"))
}

/// Every page, by file name.
fn pages() -> BTreeMap<String, Vec<u8>> {
    let mut pages = BTreeMap::new();
    // As `generate_to` does: no `help` pseudo-subcommand pages.
    let mut cli = atlasbridge::cli::Args::command().disable_help_subcommand(true);
    cli.build();
    walk(cli, &mut pages);
    let daemon = Man::new(atlasbridged::cli::Args::command())
        .section("8")
        .source(source());
    pages.insert(daemon.get_filename(), render(&daemon));
    pages
}

/// The page files in `dir` (`*.1`, `*.8`).
fn checked_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".1") || name.ends_with(".8"))
        .collect();
    names.sort();
    names
}

#[test]
fn man_pages_match_the_clap_definitions() {
    let dir = man_dir();
    let pages = pages();
    if std::env::var_os(REGENERATE).is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for stale in checked_in(&dir) {
            if !pages.contains_key(&stale) {
                std::fs::remove_file(dir.join(stale)).unwrap();
            }
        }
        for (name, page) in &pages {
            std::fs::write(dir.join(name), page).unwrap();
        }
        eprintln!("wrote {} man pages to {}", pages.len(), dir.display());
        return;
    }
    let mut problems = Vec::new();
    for (name, page) in &pages {
        match std::fs::read(dir.join(name)) {
            Ok(existing) if existing == *page => {}
            Ok(_) => problems.push(format!("docs/man/{name} differs from the clap definitions")),
            Err(_) => problems.push(format!("docs/man/{name} is missing")),
        }
    }
    for name in checked_in(&dir) {
        if !pages.contains_key(&name) {
            problems.push(format!("docs/man/{name} belongs to no command"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nrun `{REGENERATE}=1 cargo test -p atlasbridge-e2e man_pages` to update",
        problems.join("\n")
    );
}

#[test]
fn man_pages_cover_every_command_and_carry_no_date() {
    let pages = pages();
    for name in [
        "atlasbridge.1",
        "atlasbridge-doctor.1",
        "atlasbridge-completions.1",
        "atlasbridge-trace.1",
        "atlasbridge-trace-integrity-check.1",
        "atlasbridge-trace-checkpoint-export.1",
        "atlasbridge-policy-validate.1",
        "atlasbridged.8",
    ] {
        assert!(
            pages.contains_key(name),
            "no {name} among {:?}",
            pages.keys()
        );
    }
    assert!(
        !pages.keys().any(|name| name.contains("-help")),
        "{:?}",
        pages.keys()
    );
    for (name, page) in &pages {
        let text = String::from_utf8(page.clone()).unwrap();
        let title = text.lines().find(|l| l.starts_with(".TH ")).unwrap();
        // .TH title section date source manual: the date stays empty.
        assert!(
            title.contains(" \"\" ") || title.contains("  "),
            "{name}: {title}"
        );
    }
}

#[test]
fn man_pages_format_without_warnings() {
    let Ok(probe) = Command::new("groff").arg("--version").output() else {
        eprintln!("skipped: groff is not installed");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().unwrap();
    for (name, page) in pages() {
        let file = dir.path().join(&name);
        std::fs::write(&file, page).unwrap();
        let out = Command::new("groff")
            // -k: the pages are UTF-8, as man(1) reads them.
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff on {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

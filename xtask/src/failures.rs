//! `cargo test` with its failures repeated at the very end of the output.
//!
//! A CI log is often read (or kept) only by its head and its tail; the
//! test harness prints each failure in the middle, under its suite, minutes
//! of output before the end. So the test output is passed through as it
//! comes, and the failing tests' names with the first lines of what each
//! printed are collected and said again last.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result};

/// How many lines of a failing test's output are repeated at the end.
const LINES_PER_FAILURE: usize = 12;

/// Runs `command` (a `cargo test`), its stdout passed through, and answers
/// its status with the failures it printed.
pub fn run(mut command: Command) -> Result<(ExitStatus, Vec<Failure>)> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let mut collector = Collector::default();
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        let _ = writeln!(out, "{line}");
        collector.line(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    Ok((status, collector.failures))
}

/// Says the failures again, last: a name and the first lines of each.
pub fn report(failures: &[Failure]) {
    if failures.is_empty() {
        return;
    }
    eprintln!("xtask: {} failing tests, as printed above:", failures.len());
    for failure in failures {
        eprintln!("  ---- {}", failure.test);
        for line in &failure.first_lines {
            eprintln!("  | {line}");
        }
    }
}

/// One failing test, as the test harness printed it.
#[derive(Debug, PartialEq)]
pub struct Failure {
    /// The test's name.
    pub test: String,
    /// The first [`LINES_PER_FAILURE`] lines it printed.
    pub first_lines: Vec<String>,
}

/// Reads the harness's output line by line: a failure's section starts at
/// `---- NAME stdout ----` and ends at the next such line or at the
/// `failures:` list of names that follows them all.
#[derive(Default)]
struct Collector {
    failures: Vec<Failure>,
    in_section: bool,
}

impl Collector {
    fn line(&mut self, line: &str) {
        if let Some(test) = section_start(line) {
            self.failures.push(Failure {
                test: test.to_owned(),
                first_lines: Vec::new(),
            });
            self.in_section = true;
        } else if line == "failures:" || line.starts_with("test result:") {
            self.in_section = false;
        } else if self.in_section {
            let failure = self.failures.last_mut().expect("a section was started");
            if failure.first_lines.len() < LINES_PER_FAILURE && !line.trim().is_empty() {
                failure.first_lines.push(line.to_owned());
            }
        }
    }
}

/// `Some(NAME)` for the harness's `---- NAME stdout ----`.
fn section_start(line: &str) -> Option<&str> {
    line.strip_prefix("---- ")?.strip_suffix(" stdout ----")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_collected_with_their_first_lines() {
        let output = "\
running 2 tests
test a ... ok
test b ... FAILED

failures:

---- b stdout ----

thread 'b' panicked at tests/x.rs:3:5:
it broke
---- c::d stdout ----
thread 'c::d' panicked at tests/x.rs:9:5:
also

failures:
    b
    c::d

test result: FAILED. 1 passed; 2 failed
";
        let mut collector = Collector::default();
        for line in output.lines() {
            collector.line(line);
        }
        assert_eq!(
            collector.failures,
            vec![
                Failure {
                    test: "b".into(),
                    first_lines: vec![
                        "thread 'b' panicked at tests/x.rs:3:5:".into(),
                        "it broke".into()
                    ],
                },
                Failure {
                    test: "c::d".into(),
                    first_lines: vec![
                        "thread 'c::d' panicked at tests/x.rs:9:5:".into(),
                        "also".into()
                    ],
                },
            ]
        );
    }

    #[test]
    fn a_long_failure_is_cut_and_passing_output_ignored() {
        let mut collector = Collector::default();
        collector.line("test a ... ok");
        collector.line("---- e stdout ----");
        for n in 0..100 {
            collector.line(&format!("line {n}"));
        }
        collector.line("test result: FAILED. 0 passed; 1 failed");
        collector.line("line after");
        assert_eq!(collector.failures.len(), 1);
        assert_eq!(collector.failures[0].first_lines.len(), LINES_PER_FAILURE);
        assert_eq!(collector.failures[0].first_lines[0], "line 0");
    }
}

//! Printing above the line being edited: a thread that hands each line to rustyline's
//! `ExternalPrinter`, which clears the prompt line, prints, and redraws the prompt with the
//! text typed so far. A thread of its own, since printing can wait for the editor.

use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::Duration;

use rustyline::ExternalPrinter;

/// A job for the printing thread.
enum Job {
    Line(String),
    /// Answered once every line before it was handed to the editor.
    Flush(std_mpsc::Sender<()>),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Line(l) => f.debug_tuple("Line").field(l).finish(),
            Job::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// Prints above the prompt; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Printer {
    jobs: std_mpsc::Sender<Job>,
}

impl Printer {
    /// Starts the printing thread on the editor's printer; `None` if the thread cannot start.
    pub fn start(mut external: impl ExternalPrinter + Send + 'static) -> Option<Printer> {
        let (jobs, job_rx) = std_mpsc::channel::<Job>();
        thread::Builder::new()
            .name("printer".into())
            .spawn(move || {
                for job in job_rx {
                    match job {
                        Job::Line(mut line) => {
                            // Without the newline, a line printed while the editor is between
                            // two reads would run into the next prompt.
                            line.push('\n');
                            if external.print(line).is_err() {
                                break;
                            }
                        }
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok()?;
        Some(Printer { jobs })
    }

    /// Prints one line (or several, if it holds line breaks) above the prompt.
    pub fn print(&self, line: String) {
        let _ = self.jobs.send(Job::Line(line));
    }

    /// Waits (at most a second) until every line printed so far reached the editor.
    pub fn flush(&self) {
        let (tx, rx) = std_mpsc::channel();
        if self.jobs.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
    }
}

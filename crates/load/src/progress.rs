//! Progress on stderr: indicatif bars on a terminal, a plain line every few seconds otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const LINE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum Mode {
    Off,
    Bars(Option<ProgressBar>),
    Lines { last: Option<Instant> },
}

/// Shows one stage at a time (connecting, running, draining).
#[derive(Debug)]
pub(crate) struct Progress {
    mode: Mode,
    stage: &'static str,
    len: u64,
    started: Instant,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        let mode = if !enabled {
            Mode::Off
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(None)
        } else {
            Mode::Lines { last: None }
        };
        Self {
            mode,
            stage: "",
            len: 0,
            started: Instant::now(),
        }
    }

    /// Starts a stage whose position runs to `len` (`unit` names it in the bar).
    pub fn stage(&mut self, stage: &'static str, len: u64, unit: &str) {
        self.finish();
        self.stage = stage;
        self.len = len;
        if let Mode::Bars(bar) = &mut self.mode {
            let template = format!(
                "{{prefix:>10}} [{{bar:32.cyan/blue}}] {{pos}}/{{len}} {unit} {{elapsed}} · {{msg}}"
            );
            let style = ProgressStyle::with_template(&template)
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            let pb =
                ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(8));
            pb.set_style(style);
            pb.set_prefix(stage);
            *bar = Some(pb);
        }
        if let Mode::Lines { last } = &mut self.mode {
            *last = None;
        }
    }

    /// Updates the current stage; `message` is only built when it is shown.
    pub fn update(&mut self, pos: u64, message: impl FnOnce() -> String) {
        match &mut self.mode {
            Mode::Off => {}
            Mode::Bars(Some(bar)) => {
                bar.set_position(pos.min(self.len));
                bar.set_message(message());
            }
            Mode::Bars(None) => {}
            Mode::Lines { last } => {
                if last.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
                    *last = Some(Instant::now());
                    eprintln!(
                        "[liveclass-load {:>6.1}s] {}: {}/{} · {}",
                        self.started.elapsed().as_secs_f64(),
                        self.stage,
                        pos,
                        self.len,
                        message()
                    );
                }
            }
        }
    }

    /// Ends the current stage (a bar stays on screen with its last figures).
    pub fn finish(&mut self) {
        if let Mode::Bars(bar) = &mut self.mode
            && let Some(bar) = bar.take()
        {
            bar.finish();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

//! `profscope PROFILE`: the prompt a `go tool pprof` user expects — `top`,
//! `list`, `peek`, `traces`, `tags`, and `focus=`/`ignore=`/`hide=`/
//! `tagfocus=`/`tagignore=`/`sample_index=`/`diff_base=` settings that
//! shape every report after them. Line editing and history on a terminal;
//! otherwise one command per line from standard input, until `quit` or the
//! end of input.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use profscope::app::{self, Input, Prepared, Report};
use profscope::diff::{self, DiffOptions};
use profscope::render::TopOptions;
use profscope::store::Store;
use profscope_profile::Profile;

const HELP: &str = "commands: top [N] [-cum] | list REGEX | peek REGEX | traces | tags | \
focus=RE | ignore=RE | hide=RE | tagfocus=KEY=VALUE | tagignore=KEY=VALUE | \
sample_index=NAME | diff_base=PROFILE | full_names=true|false | web (the view in the web UI) | help | quit";

struct Shell<'s> {
    store: &'s Store,
    spec: String,
    raw: Profile,
    input: Input,
    base: Option<Profile>,
    /// The web UI's address, once `web` started it.
    web: Option<std::net::SocketAddr>,
}

/// What a line asked for.
enum Outcome {
    Print(String),
    Quit,
}

impl Shell<'_> {
    /// Starts the web UI on a loopback port (once) on a thread of its own.
    fn web_ui(&mut self) -> Result<std::net::SocketAddr> {
        if let Some(addr) = self.web {
            return Ok(addr);
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let store = self.store.clone();
        let token = self.input.token.clone();
        std::thread::Builder::new()
            .name("profscope-web".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                        let options = profscope::serve::ServeOptions::with_token(token);
                        let _ = profscope::serve::serve_until_with(
                            store,
                            listener,
                            options,
                            std::future::pending(),
                        )
                        .await;
                    }
                });
            })?;
        self.web = Some(addr);
        Ok(addr)
    }

    fn prepared(&self, profile: &Profile) -> Result<Prepared> {
        Ok(app::prepare_loaded(&self.input, profile.clone())?)
    }

    fn report(&self, report: Report) -> Result<String> {
        let p = self.prepared(&self.raw)?;
        if let (Report::Top(opts), Some(base)) = (&report, &self.base) {
            let b = self.prepared(base)?;
            let pairing = diff::pair(&b.profile, &p.profile, &DiffOptions::default())?;
            return Ok(diff::diff_top(&b.profile, &p.profile, &pairing, opts).render());
        }
        Ok(app::render_report(&p, &report, self.input.full_names)?)
    }

    fn handle(&mut self, line: &str) -> Result<Outcome> {
        let line = line.trim();
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim();
            let set = |v: &str| (!v.is_empty()).then(|| v.to_string());
            match key.trim() {
                "focus" => self.input.focus = set(value),
                "ignore" => self.input.ignore = set(value),
                "hide" => self.input.hide = set(value),
                "tagfocus" => self.input.tags = set(value).into_iter().collect(),
                "tagignore" => self.input.tag_ignore = set(value),
                "sample_index" => self.input.sample_type = set(value),
                "full_names" => self.input.full_names = value == "true",
                "diff_base" => {
                    self.base = match set(value) {
                        Some(spec) => Some(self.input.load_spec(&spec, Some(self.store))?),
                        None => None,
                    }
                }
                other => anyhow::bail!("unknown setting {other:?}; {HELP}"),
            }
            // Check the settings now, not at the next report.
            self.input.filters()?;
            return Ok(Outcome::Print(String::new()));
        }
        let mut words = line.split_whitespace();
        let command = words.next().unwrap_or("");
        let rest: Vec<&str> = words.collect();
        let regex = || -> Result<String> {
            rest.first()
                .map(|r| r.to_string())
                .ok_or_else(|| anyhow::anyhow!("{command} needs a REGEX; {HELP}"))
        };
        Ok(Outcome::Print(match command {
            "top" | "topN" => {
                let n = rest.iter().find_map(|w| w.parse().ok()).unwrap_or(10);
                let cum = rest.contains(&"-cum");
                self.report(Report::Top(TopOptions::new(n, cum)))?
            }
            "list" => self.report(Report::Source(regex()?))?,
            "peek" => self.report(Report::Peek(regex()?))?,
            "traces" => self.report(Report::Traces)?,
            "tags" => self.report(Report::Tags)?,
            "web" => {
                // The current view (filters and names applied) as a snapshot,
                // shown by the web UI, which keeps running beside the prompt.
                // Whole names saved (the page shortens them and keeps the
                // whole ones for hover); the page's switches follow the
                // shell's settings.
                let mut whole = self.input.clone();
                whole.full_names = true;
                let p = app::prepare_loaded(&whole, self.raw.clone())?;
                let bytes = profscope_profile::write_gz(&p.profile)?;
                let snapshot = self.store.save(
                    &bytes,
                    profscope::store::NewSnapshot::new(
                        Some(self.spec.clone()),
                        Some("shell".to_string()),
                    ),
                )?;
                let addr = self.web_ui()?;
                let url = format!(
                    "http://{addr}/snapshot/{}?v=1{}{}",
                    snapshot.meta.id,
                    if self.input.full_names {
                        ""
                    } else {
                        "&short=1"
                    },
                    if self.input.no_hide { "" } else { "&hide=1" },
                );
                super::serve::open_browser(&url);
                format!("the current view: {url}\n")
            }
            "help" | "?" => format!("{HELP}\n"),
            "quit" | "exit" | "q" => return Ok(Outcome::Quit),
            other => anyhow::bail!("unknown command {other:?}; {HELP}"),
        }))
    }
}

/// Runs the shell on `spec` with `input`'s options as the starting settings.
pub(super) fn run(store: &Store, spec: &str, input: Input) -> Result<()> {
    let raw = input.load_spec(spec, Some(store))?;
    let mut shell = Shell {
        store,
        spec: spec.to_string(),
        raw,
        input,
        base: None,
        web: None,
    };
    let emit = |outcome: Result<Outcome>| -> Result<bool> {
        match outcome {
            Ok(Outcome::Print(text)) => {
                super::out(text.as_bytes())?;
                Ok(true)
            }
            Ok(Outcome::Quit) => Ok(false),
            // One line, and the prompt continues.
            Err(e) => {
                let msg = format!("{e:#}");
                eprintln!(
                    "error: {}",
                    msg.split_whitespace().collect::<Vec<_>>().join(" ")
                );
                Ok(true)
            }
        }
    };
    if std::io::stdin().is_terminal() {
        eprintln!("profscope: {spec} (type help; quit or Ctrl-D to leave)");
        let mut editor = rustyline::DefaultEditor::new()?;
        let history = store.dir().join("shell_history");
        let _ = editor.load_history(&history);
        loop {
            match editor.readline("(profscope) ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                        if !emit(shell.handle(&line))? {
                            break;
                        }
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(_) => break,
            }
        }
        let _ = std::fs::create_dir_all(store.dir());
        let _ = editor.save_history(&history);
    } else {
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            if !emit(shell.handle(&line))? {
                break;
            }
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

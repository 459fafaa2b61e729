//! Subcommands and their flags (clap derive). Each subcommand maps to one
//! call into `profscope::app`; this module only parses and prints.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use profscope::app::{self, Input};
use profscope::diff::DiffOptions;
use profscope::fetch::Token;
use profscope::render::{FlameOptions, TopOptions};
use profscope::store::Store;

#[cfg(feature = "demo")]
mod demo;
mod fetch;
mod incidents;
mod progress;
mod serve;
mod shell;

/// Load pprof profiles (Go's and profscope's), print top tables, draw
/// flamegraphs, keep snapshots and diff them.
///
/// PROFILE is a file (gzipped or raw pprof, or folded stacks), `-` for
/// stdin, an http(s) URL of a pprof endpoint, or a snapshot from the store:
/// an id, a label (the newest snapshot with it), `@latest` or `@prev`.
/// The store is $PROFSCOPE_HOME, else $XDG_DATA_HOME/profscope, else
/// ~/.local/share/profscope.
#[derive(Debug, Parser)]
#[command(
    name = "profscope",
    version,
    propagate_version = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Bearer token for agents that require one (`Authorization: Bearer
    /// TOKEN`), sent by every command that reads a URL, `serve`'s captures
    /// and the shell; never printed. Prefer the environment variable: a
    /// flag shows in `ps`.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "PROFSCOPE_TOKEN",
        hide_env_values = true
    )]
    token: Option<Token>,
    /// With no subcommand: open PROFILE at an interactive prompt (top, list,
    /// peek, traces, tags, focus=…; type help), like `go tool pprof PROFILE`.
    /// Before a command that reads one profile, the profile it reads:
    /// `profscope PROFILE top` is `profscope top PROFILE`.
    profile: Option<String>,
    #[command(flatten)]
    filters: Filters,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the table `go tool pprof -top` prints: flat, flat%, sum%, cum, cum%.
    Top(TopArgs),
    /// Callers and callees of the functions matching REGEX, with their shares.
    Peek(RegexArgs),
    /// Per-line cost of the functions matching REGEX, with the source when
    /// the file is on disk (the shell's `list`).
    Source(RegexArgs),
    /// Label keys and values with their shares (as `go tool pprof -tags`).
    Tags(ProfileArgs),
    /// Every sample's labels and stack.
    Traces(ProfileArgs),
    /// Write an interactive SVG flamegraph (search, zoom).
    Flamegraph(FlameArgs),
    /// Print folded stacks (`root;…;leaf value`), for inferno, flamegraph.pl, speedscope.
    Collapse(ProfileArgs),
    /// Compare two profiles: functions ranked by change, and a differential flamegraph.
    Diff(DiffArgs),
    /// Capture a profile from a live agent URL and save it in the snapshot store.
    Fetch(FetchArgs),
    /// List the snapshots in the store, oldest first.
    List,
    /// List a live agent's flight-recorder incidents (id, trigger, state,
    /// time, figures) and store each one's profiles, labelled
    /// incident-<id>-heap, -heap-before, -cpu (and -heap-after, -cpu-after
    /// once complete); profiles already stored are skipped.
    Incidents(IncidentsArgs),
    /// Show one incident against its baseline: the heap growth by function
    /// (heap at the trigger vs before the window) and the CPU after vs
    /// before the trigger, and write their differential flamegraphs.
    Incident(IncidentArgs),
    /// Print an agent's /debug/memory page (where the resident memory goes);
    /// with --every, keep reading and draw a stacked bar per reading.
    Memory(MemoryArgs),
    /// Serve the web UI over the snapshot store and live agents.
    Serve(ServeArgs),
    /// Run a demo service with the agent, drive load, capture CPU and heap
    /// snapshots, write flamegraphs, print the top table, then serve the UI.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Default, PartialEq, Args)]
struct Filters {
    /// Sample type to show, by name (e.g. inuse_space, alloc_space, cpu) or
    /// index. Default: the profile's default type, else its last one.
    #[arg(long, value_name = "NAME|N")]
    sample_index: Option<String>,
    /// Keep only samples with a frame (function or file name) matching this regex.
    #[arg(long, value_name = "RE")]
    focus: Option<String>,
    /// Drop samples with a frame matching this regex.
    #[arg(long, value_name = "RE")]
    ignore: Option<String>,
    /// Remove frames matching this regex from stacks (values stay), on top
    /// of the built-in hide-list of runtime and framework frames.
    #[arg(long, value_name = "RE")]
    hide: Option<String>,
    /// Keep only samples with label KEY matching VALUE (a regex, or a
    /// numeric range like 1MB: as go tool pprof -tagfocus). Repeatable: all
    /// must match.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Show function names whole (default: short Rust names).
    #[arg(long)]
    full_names: bool,
    /// Keep the runtime and framework frames (tokio, hyper, tower, axum,
    /// core::future, std's wrappers) that the default view hides, and the
    /// agent's own allocations (label `profscope=agent`, left out by default).
    #[arg(long)]
    no_hide: bool,
    /// Keep only frames whose source file is under DIR (default: the
    /// current directory); binary and mapping paths never count.
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "."
    )]
    my_code: Option<std::path::PathBuf>,
}

impl Filters {
    fn input(&self, profile: &str) -> Input {
        let mut input = Input::new(profile).with(
            self.sample_index.clone(),
            self.focus.clone(),
            self.ignore.clone(),
        );
        input.hide = self.hide.clone();
        input.tags = self.tags.clone();
        input.full_names = self.full_names;
        input.no_hide = self.no_hide;
        // Absolute, as the files debug info records are.
        input.my_code = self
            .my_code
            .as_ref()
            .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone()))
            .map(|d| d.display().to_string());
        input
    }
}

#[derive(Debug, Args)]
struct ProfileArgs {
    /// File, `-`, URL, snapshot id, label, @latest or @prev.
    profile: String,
    #[command(flatten)]
    filters: Filters,
}

impl ProfileArgs {
    fn input(&self) -> Input {
        self.filters.input(&self.profile)
    }
}

#[derive(Debug, Args)]
struct RegexArgs {
    /// File, `-`, URL, snapshot id, label, @latest or @prev.
    profile: String,
    /// Functions to show (a regex over function names).
    regex: String,
    #[command(flatten)]
    filters: Filters,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: std::net::SocketAddr,
    /// Open the page in a browser.
    #[arg(long)]
    open: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Exit after the captures instead of serving the web UI.
    #[arg(long)]
    no_serve: bool,
    /// Address of the web UI served at the end.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: std::net::SocketAddr,
}

#[derive(Debug, Args)]
struct TopArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Rows to show (0 for all).
    #[arg(short = 'n', long = "nodecount", default_value_t = 20)]
    n: usize,
    /// Sort by cumulative value instead of flat.
    #[arg(long)]
    cum: bool,
    /// Break the totals down by the values of label KEY instead.
    #[arg(long, value_name = "KEY")]
    by: Option<String>,
}

#[derive(Debug, Args)]
struct FlameArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Output SVG file.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Draw an icicle graph (roots at the top).
    #[arg(long)]
    icicle: bool,
    /// Title (default: the sample type).
    #[arg(long)]
    title: Option<String>,
}

/// Values compare as absolute amounts, as `go tool pprof -diff_base` does:
/// right for heap snapshots (what grew is what leaks). For CPU profiles of
/// different lengths or load, add --normalize, which scales BASE to NEW's
/// total so only the shape is compared.
#[derive(Debug, Args)]
struct DiffArgs {
    /// The earlier profile (file, URL, id, label, @prev…). Omit with --since.
    base: Option<String>,
    /// The later profile. Omit with --since.
    new: Option<String>,
    /// Diff the newest snapshot labeled LABEL against the newest snapshot of
    /// the same source and kind.
    #[arg(long, value_name = "LABEL", conflicts_with_all = ["base", "new"])]
    since: Option<String>,
    /// Rows to show (0 for all).
    #[arg(long = "top", short = 'n', default_value_t = 20)]
    top: usize,
    /// Also write a differential flamegraph (red grew, blue shrank; widths from NEW).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Scale BASE to NEW's total first (use for CPU profiles of different lengths).
    #[arg(long)]
    normalize: bool,
    #[command(flatten)]
    filters: Filters,
}

#[derive(Debug, Args)]
struct MemoryArgs {
    /// The agent's base URL (http://host:port) or its /debug/memory URL.
    url: String,
    /// Read again every DURATION (e.g. 5s, 1m) until Ctrl-C or --count.
    #[arg(long, value_name = "DURATION", value_parser = parse_every)]
    every: Option<std::time::Duration>,
    /// Stop after this many readings.
    #[arg(long, value_name = "N")]
    count: Option<usize>,
}

/// `5s`, `500ms`, `2m` or plain seconds.
fn parse_every(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s"))?;
    let d = match unit {
        "" | "s" => std::time::Duration::from_secs(n),
        "ms" => std::time::Duration::from_millis(n),
        "m" => std::time::Duration::from_secs(n * 60),
        _ => return Err(format!("{s:?}: use ms, s or m")),
    };
    if d < std::time::Duration::from_millis(100) {
        return Err("the interval must be at least 100ms".into());
    }
    Ok(d)
}

#[derive(Debug, Args)]
struct IncidentsArgs {
    /// The agent's base address, e.g. http://127.0.0.1:3000.
    url: String,
    /// Only list; store nothing.
    #[arg(long)]
    no_fetch: bool,
}

#[derive(Debug, Args)]
struct IncidentArgs {
    /// The agent's base address (its incidents are fetched and stored
    /// first), or a stored incident by its id or a snapshot label
    /// (incident-<id>-heap); default: the newest stored incident.
    target: Option<String>,
    /// With a URL: the incident's id (default: the newest).
    id: Option<String>,
    /// Rows of each table (0 for all).
    #[arg(long = "top", short = 'n', default_value_t = 20)]
    top: usize,
    /// Where to write the flamegraphs (default: incidents/ in the store).
    #[arg(long, value_name = "DIR")]
    svg_dir: Option<PathBuf>,
    #[command(flatten)]
    filters: Filters,
}

#[derive(Debug, Args)]
struct FetchArgs {
    /// Full endpoint URL, e.g. http://127.0.0.1:6060/debug/pprof/heap or
    /// …/debug/pprof/profile?seconds=5.
    url: String,
    /// Label to find the snapshot by later (e.g. before, after).
    #[arg(long, short)]
    label: Option<String>,
}

/// Parses the command line, `profscope PROFILE COMMAND …` read as
/// `profscope COMMAND PROFILE …`.
pub fn parse() -> Result<Cli, clap::Error> {
    <Cli as Parser>::try_parse_from(profile_after_command(std::env::args_os().collect()))
}

/// Swaps a profile written before its command to after it. The usage line
/// offers `profscope PROFILE COMMAND`, but clap gives the top-level PROFILE
/// to the top level, never to the subcommand's own required one; swapping
/// the two words makes both orders one parse, hence one output. Only the
/// first word that is not an option (nor an option's value) moves, and only
/// when a command whose first argument is a profile follows it.
fn profile_after_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let mut cli = <Cli as clap::CommandFactory>::command();
    // Built, so `help` is a command too (`profscope help top` stays help).
    cli.build();
    let takes_value = |word: &str| {
        cli.get_arguments().any(|a| {
            a.get_action().takes_values()
                && (word
                    .strip_prefix("--")
                    .is_some_and(|l| a.get_long() == Some(l))
                    || word.strip_prefix('-').and_then(|s| s.parse::<char>().ok()) == a.get_short())
        })
    };
    let command = |word: &str| cli.find_subcommand(word);
    let mut i = 1;
    while let Some(word) = args.get(i).and_then(|w| w.to_str()) {
        if word == "--" {
            break;
        }
        if word.starts_with('-') && word != "-" {
            // `--token T` skips its value too; `--token=T` is one word.
            i += if takes_value(word) { 2 } else { 1 };
            continue;
        }
        let reads_profile = |c: &clap::Command| {
            c.get_positionals()
                .next()
                .is_some_and(|a| a.get_id() == "profile")
        };
        if command(word).is_none()
            && args
                .get(i + 1)
                .and_then(|w| w.to_str())
                .and_then(command)
                .is_some_and(reads_profile)
        {
            args.swap(i, i + 1);
        }
        break;
    }
    args
}

fn store() -> Result<Store> {
    Ok(Store::open_default()?)
}

fn out(text: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text).and_then(|()| stdout.flush())?;
    Ok(())
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<()> {
    let token = cli.token;
    // Every input that may be a URL carries the token.
    let tok = |mut input: Input| {
        input.token = token.clone();
        input
    };
    // `--token` is global and may come first, and a profile right before
    // its command was moved after it (`parse`); view options, or a profile
    // before a command that reads none, would be silently dropped, so they
    // are refused.
    if cli.command.is_some() && (cli.profile.is_some() || cli.filters != Filters::default()) {
        eprintln!(
            "profscope: view options go after the subcommand, a profile right \
             before or after it (profscope FILE top --focus RE, profscope top FILE \
             --focus RE); only --token may come anywhere"
        );
        std::process::exit(2);
    }
    let Some(command) = cli.command else {
        return match cli.profile {
            // A bare word that names nothing is a mistyped command, not a
            // missing file: a usage error, as clap gives one.
            Some(profile)
                if profile
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    && !std::path::Path::new(&profile).exists()
                    && profscope::load::Source::resolve(&profile, Some(&store()?)).is_err() =>
            {
                eprintln!(
                    "profscope: {profile:?} is neither a command nor a profile (file, URL, snapshot); see profscope --help"
                );
                std::process::exit(2);
            }
            Some(profile) => shell::run(&store()?, &profile, tok(cli.filters.input(&profile))),
            None => {
                let _ = <Cli as clap::CommandFactory>::command().print_help();
                std::process::exit(2);
            }
        };
    };
    match command {
        Command::Top(a) => {
            let store = store()?;
            let report = match a.by {
                Some(key) => app::Report::By(key),
                None => app::Report::Top(TopOptions::new(a.n, a.cum)),
            };
            out(app::report(&tok(a.profile.input()), Some(&store), &report)?.as_bytes())
        }
        Command::Peek(a) => {
            let report = app::Report::Peek(a.regex.clone());
            let input = tok(a.filters.input(&a.profile));
            out(app::report(&input, Some(&store()?), &report)?.as_bytes())
        }
        Command::Source(a) => {
            let report = app::Report::Source(a.regex.clone());
            let input = tok(a.filters.input(&a.profile));
            out(app::report(&input, Some(&store()?), &report)?.as_bytes())
        }
        Command::Tags(a) => {
            out(app::report(&tok(a.input()), Some(&store()?), &app::Report::Tags)?.as_bytes())
        }
        Command::Traces(a) => {
            out(app::report(&tok(a.input()), Some(&store()?), &app::Report::Traces)?.as_bytes())
        }
        Command::Collapse(a) => {
            let store = store()?;
            out(app::collapse(&tok(a.input()), Some(&store))?.as_bytes())
        }
        Command::Flamegraph(a) => {
            let store = store()?;
            let opts = FlameOptions::new(a.title, a.icicle);
            app::flamegraph_to_file(&tok(a.profile.input()), Some(&store), &opts, &a.output)?;
            out(format!("wrote {}\n", a.output.display()).as_bytes())
        }
        Command::Diff(a) => diff(a, token),
        Command::Fetch(a) => fetch::run(&store()?, &a.url, a.label, token),
        Command::List => out(app::list(&store()?)?.as_bytes()),
        Command::Incidents(a) => incidents::list(&store()?, &a.url, !a.no_fetch, token),
        Command::Incident(a) => {
            let show = incidents::Show {
                target: a.target.as_deref(),
                id: a.id.as_deref(),
                view: a.filters.input(""),
                rows: a.top,
                svg_dir: a.svg_dir,
            };
            incidents::show(&store()?, show, token)
        }
        Command::Memory(a) => memory(a, token.as_ref()),
        Command::Serve(a) => serve::run(store()?, a.addr, a.open, token),
        #[cfg(feature = "demo")]
        Command::Demo(a) => demo::run(&demo::DemoOptions {
            serve: !a.no_serve,
            addr: a.addr,
        }),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "profscope", &mut buf);
            out(&buf)
        }
    }
}

fn memory(a: MemoryArgs, token: Option<&Token>) -> Result<()> {
    use profscope::memory;
    let first = memory::read(&a.url, token)?;
    out(memory::table(&first).as_bytes())?;
    let Some(every) = a.every else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let mut readings = vec![("0s".to_string(), first)];
    while a.count.is_none_or(|n| readings.len() < n) {
        std::thread::sleep(every);
        let page = memory::read(&a.url, token)?;
        readings.push((format!("{}s", started.elapsed().as_secs()), page));
        // Keep the last screenful.
        if readings.len() > 40 {
            readings.remove(0);
        }
        out(format!("\n{}", memory::bars(&readings, 60)).as_bytes())?;
    }
    Ok(())
}

fn diff(a: DiffArgs, token: Option<Token>) -> Result<()> {
    let store = store()?;
    let (base, new) = match (&a.since, a.base, a.new) {
        (Some(label), _, _) => {
            let (b, n) = app::since(&store, label)?;
            eprintln!("BASE {} ({}), NEW {}", b.meta.id, label, n.meta.id);
            (b.meta.id, n.meta.id)
        }
        (None, Some(b), Some(n)) => (b, n),
        _ => anyhow::bail!("diff needs BASE and NEW, or --since LABEL"),
    };
    let f = &a.filters;
    let input = |spec: String| {
        let mut input = f.input(&spec);
        input.token = token.clone();
        input
    };
    let opts = DiffOptions::new(f.sample_index.clone(), a.normalize);
    let result = app::diff(
        &input(base),
        &input(new),
        Some(&store),
        &opts,
        &TopOptions::new(a.top, false),
        a.output.is_some(),
    )?;
    if let (Some(path), Some(svg)) = (&a.output, &result.svg) {
        app::write_file(path, svg).with_context(|| "writing the differential flamegraph")?;
        eprintln!("wrote {}", path.display());
    }
    out(result.table.as_bytes())
}

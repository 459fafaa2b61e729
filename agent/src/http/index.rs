//! `GET /debug/pprof/`: an HTML index of the profiles, like Go's.

use axum::response::Html;

/// Path (relative to `/debug/pprof/`), query suffix for the link, description.
const PROFILES: &[(&str, &str, &str)] = &[
    (
        "profile",
        "?seconds=30",
        "CPU profile. Add seconds=N (default 30) and format=pprof|folded|svg. \
         After you get the profile file, use the go tool pprof command to investigate it.",
    ),
    (
        "heap",
        "",
        "In-use memory by allocation stack (jemalloc sampling, unsampled to estimates of the true \
         totals), current at the time of the request. Add seconds=N for the growth over N seconds.",
    ),
    (
        "allocs",
        "",
        "The same data with allocated space (cumulative since start) as the default sample type.",
    ),
    (
        "tasks",
        "?debug=1",
        "Stack traces of all tokio tasks, counted by identical await-point stacks (task dump).",
    ),
    (
        "goroutine",
        "?debug=1",
        "The task profile under Go's name and sample type, for Pyroscope/Parca scrapers.",
    ),
    (
        "cmdline",
        "",
        "The command line invocation of the current program, NUL separated.",
    ),
];

pub(crate) async fn index() -> Html<String> {
    let mut rows = String::new();
    for (name, query, description) in PROFILES {
        rows.push_str(&format!(
            "<tr><td><a href=\"/debug/pprof/{name}{query}\">{name}</a></td><td>{description}</td></tr>\n"
        ));
    }
    Html(format!(
        "<!DOCTYPE html>\n<html><head><title>/debug/pprof/</title>\
         <style>body{{font-family:sans-serif}} td{{padding:2px 10px;vertical-align:top}}</style></head>\n\
         <body>\n<h1>/debug/pprof/</h1>\n<p>Set debug=1 as a query parameter to export in legacy text \
         format where a profile supports it.</p>\n<table>\n<tr><th>Profile</th><th>Description</th></tr>\n\
         {rows}</table>\n<p>Flamegraph of a 10-second CPU profile: \
         <a href=\"/debug/pprof/profile?seconds=10&amp;format=svg\">profile?seconds=10&amp;format=svg</a>. \
         Runtime metrics: <a href=\"/metrics\">/metrics</a> (Prometheus), \
         <a href=\"/debug/tokio\">/debug/tokio</a> (JSON).</p>\n\
         </body></html>\n"
    ))
}

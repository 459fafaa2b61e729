//! `GET /debug/pprof/`: an HTML index of the profiles, like Go's.

use axum::response::Html;
use profscope_profile::kind::agent_endpoints;

pub(crate) async fn index() -> Html<String> {
    let mut rows = String::new();
    // The profiles and pages under /debug/pprof/ (the index itself aside).
    // (Paths with a parameter, an incident's profiles, are reached from the
    // incidents list.)
    for e in agent_endpoints().filter(|e| {
        e.path.starts_with("/debug/pprof/") && e.name() != "pprof" && !e.path.contains('{')
    }) {
        let name = e.path.trim_start_matches("/debug/pprof/");
        let (path, query, description) = (e.path, e.example_query, e.description);
        rows.push_str(&format!(
            "<tr><td><a href=\"{path}{query}\">{name}</a></td><td>{description}</td></tr>\n"
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

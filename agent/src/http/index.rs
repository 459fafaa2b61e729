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
         <a href=\"/debug/pprof/profile?seconds=10&amp;format=svg\">profile?seconds=10&amp;format=svg</a></p>\n\
         </body></html>\n"
    ))
}

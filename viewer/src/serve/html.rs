//! HTML building blocks: escaping, the page frame, the top table and small
//! formatters. Pages are plain strings; every value from a profile, the
//! store or the request goes through [`esc`].

use std::fmt::Write as _;

use crate::render::TopReport;
use crate::units::percentage;

/// Escapes text for element content and double-quoted attribute values.
pub(crate) use crate::render::markup_escape as esc;

/// A whole page: head (stylesheet, script, `head_extra`), navigation, body.
pub(crate) fn page(title: &str, head_extra: &str, body: &str) -> axum::response::Html<String> {
    axum::response::Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · profscope</title>\n\
         <link rel=\"icon\" href=\"/assets/icon.svg\">\n\
         <link rel=\"stylesheet\" href=\"/assets/serve.css\">\n\
         <script src=\"/assets/serve.js\" defer></script>\n{head_extra}</head>\n<body>\n\
         <nav class=\"top\"><a class=\"brand\" href=\"/\">profscope</a>\
         <a href=\"/\">Snapshots</a><a href=\"/diff\">Diff</a><a href=\"/capture\">Capture</a></nav>\n\
         <main>\n{body}</main>\n</body>\n</html>\n",
        esc(title)
    ))
}

/// Bytes as B / KiB / MiB.
pub(crate) fn size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// A top (or diff) table as HTML: header lines, then flat, flat%, sum%,
/// cum, cum%, name. Names are links that search the flamegraph.
pub(crate) fn top_table(report: &TopReport, caption: &str) -> String {
    let value = |v: i64| {
        if report.signed {
            report.format.format_signed(v)
        } else {
            report.format.format(v)
        }
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<table class=\"toptable\" data-total=\"{}\"><caption>{}</caption>\n<thead><tr><th>flat</th><th>flat%</th>\
         <th>sum%</th><th>cum</th><th>cum%</th><th class=\"name\">function</th></tr></thead>\n<tbody>\n",
        report.total,
        esc(caption)
    );
    let mut sum = 0i64;
    for row in &report.rows {
        sum += row.flat;
        let cls = if !report.signed || row.flat == 0 {
            ""
        } else if row.flat > 0 {
            " class=\"grew\""
        } else {
            " class=\"shrank\""
        };
        let mark = row.inline.label();
        let _ = writeln!(
            out,
            "<tr{cls}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"name\"><a href=\"#\" data-search=\"{}\" title=\"{}\">{}</a>{}</td></tr>",
            esc(&value(row.flat)),
            percentage(row.flat, report.total).trim(),
            percentage(sum, report.total).trim(),
            esc(&value(row.cum)),
            percentage(row.cum, report.total).trim(),
            esc(&row.name),
            esc(&row.name),
            esc(&row.name),
            if mark.is_empty() {
                String::new()
            } else {
                format!(" <small>{mark}</small>")
            }
        );
    }
    if report.rows.is_empty() {
        out.push_str("<tr><td colspan=\"6\" class=\"empty\">no samples</td></tr>\n");
    }
    out.push_str("</tbody></table>\n<ul class=\"tophdr\">");
    for line in report.header() {
        let _ = write!(out, "<li>{}</li>", esc(line.trim()));
    }
    out.push_str("</ul>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_encodes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(size(2048), "2.0 KiB");
    }
}

//! Output: the `top` table, folded text and SVG flamegraphs. Each renderer
//! takes a loaded profile plus options and returns text or bytes; writing
//! them anywhere is the caller's business.

pub mod flame;
pub mod icicle;
pub mod top;

pub use flame::{FlameOptions, collapse, flamegraph};
pub use icicle::{Drawn, IcicleOptions, icicle_svg};
pub use top::{TopOptions, TopReport, TopRow, top};

/// Escapes text for SVG and HTML element content and double-quoted
/// attribute values: the one escaping rule of the page and its pictures.
pub(crate) fn markup_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

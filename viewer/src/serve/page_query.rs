//! What a snapshot page shows, read from its query string: the sample
//! type, icicle or flame, the search term, the zoomed-in frame path, and
//! the shell's switches — short names, the hide-list, "my code" — and its
//! label filters (`tag=KEY=REGEX`, any number; Go's `-tagfocus`) and
//! exclusion (`notag=KEY=REGEX,…`; Go's `-tagignore`).
//!
//! Checkboxes send nothing when unchecked, so the page's form carries
//! `v=1`: with it, an absent `short`/`hide`/`my` means off; without it
//! (a plain link) the defaults hold — short names and the hide-list on.

use std::fmt::Write as _;

use super::PageError;
use crate::app::Input;

/// The snapshot page's settings, as its query string carries them.
#[derive(Debug, Clone)]
pub(crate) struct PageQuery {
    /// Sample type name or index.
    pub(crate) ty: Option<String>,
    /// Roots at the top (default).
    pub(crate) icicle: bool,
    /// Initial search term.
    pub(crate) search: Option<String>,
    /// Only the stacks under this frame path, drawn in full detail.
    pub(crate) focus: Option<String>,
    /// Short Rust names (default).
    pub(crate) short: bool,
    /// The built-in hide-list (default).
    pub(crate) hide: bool,
    /// Only frames whose file is under `my_dir`.
    pub(crate) my_code: bool,
    /// The "my code" directory (default: where the server runs).
    pub(crate) my_dir: String,
    /// `KEY=REGEX` label filters, all of which a sample must match.
    pub(crate) tags: Vec<String>,
    /// `KEY=REGEX,…`: samples whose label matches are left out (Go's
    /// `-tagignore`).
    pub(crate) tag_ignore: Option<String>,
    /// The label key of the by-label table.
    pub(crate) by: Option<String>,
}

/// Longest query value accepted (a regex or a frame path).
const MAX_VALUE: usize = 4096;

impl PageQuery {
    /// Reads the query pairs; unknown keys are ignored, oversized or
    /// malformed values are a 400.
    pub(crate) fn parse(pairs: &[(String, String)]) -> Result<PageQuery, PageError> {
        let get = |k: &str| {
            pairs
                .iter()
                .rev()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some((k, _)) = pairs.iter().find(|(_, v)| v.len() > MAX_VALUE) {
            return Err(PageError::BadRequest(format!(
                "parameter {k:?} is longer than {MAX_VALUE} bytes"
            )));
        }
        let on = |k: &str| get(k).is_some_and(|v| v == "1" || v == "true" || v == "on");
        let form = on("v");
        let switch = |k: &str, default: bool| {
            if form {
                on(k)
            } else {
                get(k).map_or(default, |_| on(k))
            }
        };
        if let Some(v) =
            get("notag").filter(|v| v.split_once('=').is_none_or(|(k, _)| k.is_empty()))
        {
            return Err(PageError::BadRequest(format!(
                "notag={v:?}: a label exclusion is KEY=VALUE (VALUE a regex, as -tagignore)"
            )));
        }
        let mut tags = Vec::new();
        for (k, v) in pairs {
            if k != "tag" || v.trim().is_empty() {
                continue;
            }
            let v = v.trim();
            match v.split_once('=') {
                Some((key, _)) if !key.is_empty() => tags.push(v.to_string()),
                _ => {
                    return Err(PageError::BadRequest(format!(
                        "tag={v:?}: a label filter is KEY=VALUE (VALUE a regex, as -tagfocus)"
                    )));
                }
            }
        }
        Ok(PageQuery {
            ty: get("type"),
            icicle: get("icicle").is_none_or(|v| v != "0" && v != "false"),
            search: get("s"),
            focus: get("focus"),
            short: switch("short", true),
            hide: switch("hide", true),
            my_code: switch("my", false),
            my_dir: get("mydir").unwrap_or_else(default_dir),
            tags,
            tag_ignore: get("notag"),
            by: get("by"),
        })
    }

    /// The shell's input for these settings; names are left whole when
    /// `whole_names` (the page's flamegraph shortens them itself, keeping
    /// the full ones for hover).
    pub(crate) fn input(&self, profile: &str, whole_names: bool) -> Input {
        let mut input = Input::new(profile).with(self.ty.clone(), None, None);
        input.full_names = whole_names || !self.short;
        input.no_hide = !self.hide;
        input.my_code = self.my_code.then(|| self.my_dir.clone());
        input.tags = self.tags.clone();
        input.tag_ignore = self.tag_ignore.clone();
        input
    }

    /// These settings as a query string (no search or focus), for links
    /// and the panes' requests; `tags` replaces the label filters.
    pub(crate) fn query(&self, tags: &[String]) -> String {
        self.query_with(tags, self.tag_ignore.as_deref())
    }

    /// As [`query`](PageQuery::query), with `notag` replacing the exclusion.
    pub(crate) fn query_with(&self, tags: &[String], notag: Option<&str>) -> String {
        let mut q = String::from("v=1");
        let mut add = |k: &str, v: &str| {
            let _ = write!(q, "&{k}={}", encode(v));
        };
        if let Some(t) = &self.ty {
            add("type", t);
        }
        if !self.icicle {
            add("icicle", "0");
        }
        if self.short {
            add("short", "1");
        }
        if self.hide {
            add("hide", "1");
        }
        if self.my_code {
            add("my", "1");
        }
        add("mydir", &self.my_dir);
        for t in tags {
            add("tag", t);
        }
        if let Some(n) = notag {
            add("notag", n);
        }
        if let Some(b) = &self.by {
            add("by", b);
        }
        q
    }
}

/// Where the server runs: most often the project being profiled.
fn default_dir() -> String {
    std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

/// Percent-encodes a query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The label filter that keeps exactly `value` of `key`.
pub(crate) fn tag_exact(key: &str, value: &str) -> String {
    format!("{key}=^{}$", regex::escape(value))
}

/// The exclusion `current` (a `KEY=RE,…` or none) with `value` of `key`
/// left out too; an exclusion of another key is replaced.
pub(crate) fn exclude(current: Option<&str>, key: &str, value: &str) -> String {
    let one = format!("^{}$", regex::escape(value));
    match current.and_then(|c| c.split_once('=')) {
        Some((k, res)) if k == key && !res.split(',').any(|r| r == one) => {
            format!("{key}={res},{one}")
        }
        Some((k, res)) if k == key => format!("{key}={res}"),
        _ => format!("{key}={one}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_links_and_forms() {
        let v = PageQuery::parse(&[]).unwrap();
        assert!(v.icicle && v.short && v.hide && !v.my_code && v.tags.is_empty());
        // A link that names one switch keeps the other defaults.
        let v = PageQuery::parse(&pairs(&[("short", "0"), ("icicle", "0")])).unwrap();
        assert!(!v.short && v.hide && !v.icicle);
        // The form: unchecked boxes are absent.
        let v =
            PageQuery::parse(&pairs(&[("v", "1"), ("my", "1"), ("mydir", "/src/app")])).unwrap();
        assert!(!v.short && !v.hide && v.my_code);
        let input = v.input("x", false);
        assert!(input.full_names && input.no_hide);
        assert_eq!(input.my_code.as_deref(), Some("/src/app"));
        let v = PageQuery::parse(&pairs(&[
            ("tag", "thread=^a b$"),
            ("tag", ""),
            ("tag", "route=/x"),
        ]))
        .unwrap();
        assert_eq!(v.tags, ["thread=^a b$", "route=/x"]);
        let again = PageQuery::parse(&serde_urlencoded_pairs(&v.query(&v.tags))).unwrap();
        assert_eq!(again.tags, v.tags);
        assert!(again.short && again.hide && again.icicle);
        assert!(PageQuery::parse(&pairs(&[("tag", "novalue")])).is_err());
        assert!(PageQuery::parse(&pairs(&[("s", &"x".repeat(5000))])).is_err());
        assert_eq!(tag_exact("thread", "a.b"), "thread=^a\\.b$");
        assert_eq!(exclude(None, "thread", "a"), "thread=^a$");
        assert_eq!(exclude(Some("thread=^a$"), "thread", "b"), "thread=^a$,^b$");
        assert_eq!(exclude(Some("thread=^a$"), "thread", "a"), "thread=^a$");
        assert_eq!(exclude(Some("route=^x$"), "thread", "a"), "thread=^a$");
        let v = PageQuery::parse(&pairs(&[("notag", "thread=^a$,^b$")])).unwrap();
        assert_eq!(
            v.input("x", false).tag_ignore.as_deref(),
            Some("thread=^a$,^b$")
        );
        assert!(v.query(&[]).contains("notag=thread%3D%5Ea%24%2C%5Eb%24"));
        assert!(PageQuery::parse(&pairs(&[("notag", "=x")])).is_err());
    }

    fn serde_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), decode(v)))
            .collect()
    }

    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
}

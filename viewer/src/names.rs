//! Rust names as engineers read them, and the async plumbing folded away.
//!
//! **Short names.** `<core::future::poll_fn::PollFn<F> as
//! core::future::future::Future>::poll` reads `<PollFn as Future>::poll`,
//! `std::collections::hash::map::HashMap<K,V,S>::clone` reads
//! `HashMap::clone`: generic arguments go, and each path keeps its last two
//! segments (`Type::method`), or more where two distinct functions of one
//! profile would otherwise read the same. An impl keeps what identifies it:
//! `app::_::<impl serde::ser::Serialize for app::Todo>::serialize` (a
//! derive's) reads `<Todo as Serialize>::serialize`, `core::slice::<impl
//! [T]>::copy_from_slice` reads `<[T]>::copy_from_slice`; segments that name
//! nothing (`_`, private modules such as `inner`, `imp`) are skipped, so
//! hashbrown's `raw::alloc::inner::do_alloc` reads `alloc::do_alloc`. Full
//! names stay one flag away (`--full-names`) and on hover in the web UI.
//!
//! **The hide-list** ([`HIDE`]): frames of the tokio task harness and
//! scheduler, hyper/tower/axum dispatch, `core::future` and `futures`
//! adapters, tokio-metrics' and the agent's label wrappers, and std's panic
//! and thread-start wrappers are removed from stacks (values stay, as
//! with `go tool pprof -hide`), so the first frame under a thread's entry is
//! the application's. `--no-hide` keeps them.

use std::collections::HashMap;

use profscope_profile::Profile;

/// Frames the default view hides (a regex over function names, as
/// `-hide`): runtime and framework plumbing between a thread's entry and
/// the application's code.
pub const HIDE: &str = concat!(
    r"^(<)?(tokio::runtime::|tokio::task::|tokio::loom::|tokio::util::|",
    r"hyper::proto::|hyper::server::|hyper_util::|tower::util::|tower_service::|",
    r"axum::routing::|axum::serve|axum::handler::|axum::boxed::|axum_core::|",
    r"core::future::|core::pin::|core::panic::unwind_safe::|core::ops::function::|",
    r"std::panicking::|std::panic::|std::sys::backtrace::|std::thread::|std::sys::thread::|",
    r"std::sys::pal::unix::thread::|__rust_try|<alloc::boxed::Box<dyn core::ops::function::)",
    r"|^<F as axum::handler::Handler|^<axum::|^<tower::|^<hyper::|^<hyper_util::|^<tokio::",
    r"|^<?futures_util::|^<?futures_core::|^<F as futures_core::|^<?tokio_metrics::",
    r"|^<profscope_agent::capture::labels::Scoped|^<core::future::|^<F as core::future::"
);

/// Short forms for every function name of a profile, distinct where the
/// full names are.
#[derive(Debug, Default)]
pub struct Shortener {
    short: HashMap<String, String>,
}

impl Shortener {
    /// Short forms for `names`: two path segments each, more for names
    /// that would otherwise collide.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Shortener {
        let mut names: Vec<&str> = names.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        let mut keep: HashMap<&str, usize> = names.iter().map(|n| (*n, 2)).collect();
        for _ in 0..8 {
            let mut by_short: HashMap<String, Vec<&str>> = HashMap::new();
            for n in &names {
                by_short.entry(shorten(n, keep[n])).or_default().push(n);
            }
            let mut changed = false;
            for group in by_short.values().filter(|g| g.len() > 1) {
                for n in group {
                    let k = keep.get_mut(n).expect("known name");
                    *k += 1;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut short: HashMap<String, String> = names
            .iter()
            .map(|n| (n.to_string(), shorten(n, keep[n])))
            .collect();
        // Whatever still collides keeps its full name.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for s in short.values() {
            *seen.entry(s.clone()).or_default() += 1;
        }
        for (full, s) in short.iter_mut() {
            if seen[s.as_str()] > 1 {
                *s = full.clone();
            }
        }
        Shortener { short }
    }

    /// The short form of `name` (itself when unknown).
    pub fn get<'a>(&'a self, name: &'a str) -> &'a str {
        self.short.get(name).map_or(name, String::as_str)
    }
}

/// Rewrites every function name of `p` to its short form.
pub fn shorten_profile(p: &mut Profile) {
    let names: Vec<String> = p
        .function
        .iter()
        .map(|f| p.string_at(f.name).to_string())
        .collect();
    let shortener = Shortener::new(names.iter().map(String::as_str));
    for (f, full) in p.function.iter_mut().zip(&names) {
        let short = shortener.get(full);
        if short != full {
            p.string_table.push(short.to_string());
            f.name = p.string_table.len() as i64 - 1;
        }
    }
}

/// Path segments that identify nothing: a derive's `const _` block and
/// private implementation modules. Skipped in short names.
const NOISE: &[&str] = &[
    "_",
    "inner",
    "imp",
    "private",
    "__private",
    "internal",
    "__internal",
    "detail",
    "sealed",
];

/// `name` with generic arguments dropped and each path cut to its last
/// `keep` segments (a `<T as Trait>` qualifier's parts each so).
pub fn shorten(name: &str, keep: usize) -> String {
    let name = &*impl_as_qualified(name);
    // `<T as Trait>::rest`: shorten T and Trait, then the rest.
    if let Some(body) = name.strip_prefix('<')
        && let Some(close) = matching_angle(body)
    {
        let inner = &body[..close];
        let rest = &body[close + 1..];
        // The type keeps one segment, more when names collide
        // (`<slice::iter::Iter as Iterator>::next`, `<map::Iter as …>`).
        let inner_keep = keep.saturating_sub(1).max(1);
        let inner = match split_as(inner) {
            Some((ty, tr)) => format!("{} as {}", path_tail(ty, inner_keep), path_tail(tr, 1)),
            None => path_tail(inner, inner_keep),
        };
        let rest = strip_generics(rest);
        return format!("<{inner}>{rest}");
    }
    path_tail(name, keep)
}

/// `path::<impl Trait for Type>::rest` as `<Type as Trait>::rest`, and
/// `path::<impl Type>::rest` as `Type::rest` (`<[T]>::rest` for a type that
/// is no path): the impl's own path (often a derive's `_`) names nothing,
/// its type and trait do.
fn impl_as_qualified(name: &str) -> std::borrow::Cow<'_, str> {
    let at = if name.starts_with("<impl ") {
        Some(0)
    } else {
        top_level_find(name, "::<impl ").map(|i| i + 2)
    };
    let Some(at) = at else {
        return name.into();
    };
    let body = &name[at + 1..];
    let Some(close) = matching_angle(body) else {
        return name.into();
    };
    let inner = &body["impl ".len()..close];
    let rest = &body[close + 1..];
    match top_level_find(inner, " for ") {
        Some(i) => format!("<{} as {}>{rest}", &inner[i + 5..], &inner[..i]).into(),
        None if inner.starts_with(|c: char| c.is_alphabetic() || c == '_') => {
            format!("{inner}{rest}").into()
        }
        None => format!("<{inner}>{rest}").into(),
    }
}

/// The first index of `pat` in `s` outside any `<…>`, `(…)`, `[…]` group.
fn top_level_find(s: &str, pat: &str) -> Option<usize> {
    let mut depth = 0i32;
    for (i, b) in s.bytes().enumerate() {
        if depth == 0 && s[i..].starts_with(pat) {
            return Some(i);
        }
        match b {
            b'<' | b'(' | b'[' => depth += 1,
            b'>' | b')' | b']' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The index of the `>` closing the `<` just before `s` starts.
fn matching_angle(s: &str) -> Option<usize> {
    let mut depth = 1usize;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits `T as Trait` at its top-level ` as `.
fn split_as(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    let bytes = s.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'<' | b'(' | b'[' => depth += 1,
            b'>' | b')' | b']' => depth -= 1,
            b' ' if depth == 0 && s[i..].starts_with(" as ") => {
                return Some((&s[..i], &s[i + 4..]));
            }
            _ => {}
        }
    }
    None
}

/// `s` without its `<…>` groups (closures' `{…}` kept).
fn strip_generics(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The last `keep` `::` segments of a path, generics dropped; `{{closure}}`
/// and `{shim}` segments do not count towards `keep`.
fn path_tail(s: &str, keep: usize) -> String {
    let plain = strip_generics(s);
    let mut segments: Vec<&str> = plain.split("::").collect();
    let last = segments.len() - 1;
    let mut i = 0;
    segments.retain(|seg| {
        i += 1;
        i - 1 == last || !NOISE.contains(seg)
    });
    let mut counted = 0;
    let mut start = segments.len();
    while start > 0 {
        let seg = segments[start - 1];
        if !(seg.starts_with('{') || seg.is_empty()) {
            counted += 1;
        }
        start -= 1;
        if counted >= keep {
            break;
        }
    }
    // `<impl *const T>` segments strip to nothing: no `::::` left behind.
    segments[start..]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("::")
}

/// Cuts `s` to `width` characters with an ellipsis.
pub fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_rust_names_have_short_forms() {
        for (full, short) in [
            (
                "<core::future::poll_fn::PollFn<F> as core::future::future::Future>::poll",
                "<PollFn as Future>::poll",
            ),
            (
                "std::collections::hash::map::HashMap<K,V,S>::clone",
                "HashMap::clone",
            ),
            (
                "<axum::routing::Router<S> as tower_service::Service<http::request::Request<B>>>::call",
                "<Router as Service>::call",
            ),
            (
                "app::handler::checkout::{{closure}}",
                "handler::checkout::{{closure}}",
            ),
            (
                "core::ops::function::FnOnce::call_once{{vtable.shim}}",
                "FnOnce::call_once{{vtable.shim}}",
            ),
            (
                "<alloc::vec::Vec<T,A> as core::ops::drop::Drop>::drop",
                "<Vec as Drop>::drop",
            ),
            ("alloc::raw_vec::RawVec<T,A>::grow_one", "RawVec::grow_one"),
            (
                "<impl core::fmt::Debug for app::Order>::fmt",
                "<Order as Debug>::fmt",
            ),
            (
                "core::ptr::const_ptr::<impl *const T>::is_aligned_to",
                "<*const T>::is_aligned_to",
            ),
            ("malloc", "malloc"),
            (
                "profscope_examples::hash_work",
                "profscope_examples::hash_work",
            ),
        ] {
            let s = Shortener::new([full]);
            assert_eq!(s.get(full), short, "{full}");
        }
    }

    /// Real symbols (from the workspace's test binaries, std's hashbrown
    /// and serde's derive output): each short name keeps its type and
    /// trait, none starts with `_::` or a private module, none two alike.
    #[test]
    fn real_symbols_keep_what_identifies_them() {
        let table = [
            (
                "todos::_::<impl serde::ser::Serialize for todos::Todo>::serialize",
                "<Todo as Serialize>::serialize",
            ),
            (
                "profscope_agent::capture::heap::_::<impl serde_core::ser::Serialize for profscope_agent::capture::heap::JemallocStats>::serialize",
                "<JemallocStats as Serialize>::serialize",
            ),
            (
                "profscope_agent::capture::memory::_::<impl serde_core::ser::Serialize for profscope_agent::capture::memory::MemoryLine>::serialize",
                "<MemoryLine as Serialize>::serialize",
            ),
            (
                "serde_core::ser::impls::<impl serde_core::ser::Serialize for alloc::vec::Vec<T>>::serialize",
                "<Vec as Serialize>::serialize",
            ),
            (
                "axum::routing::_::<impl tower_service::Service<axum::serve::IncomingStream<L>> for axum::routing::Router>::call",
                "<Router as Service>::call",
            ),
            (
                "axum::handler::future::_::<impl axum::handler::future::IntoServiceFuture<F>>::project",
                "IntoServiceFuture::project",
            ),
            (
                "aho_corasick::util::primitives::<impl core::ops::index::Index<aho_corasick::util::primitives::PatternID> for alloc::vec::Vec<T>>::index",
                "<Vec as Index>::index",
            ),
            (
                "adler2::algo::<impl adler2::Adler32>::compute",
                "Adler32::compute",
            ),
            (
                "core::slice::<impl [T]>::copy_from_slice",
                "<[T]>::copy_from_slice",
            ),
            ("hashbrown::raw::alloc::inner::do_alloc", "alloc::do_alloc"),
            (
                "<flate2::crc::inner::Crc as core::default::Default>::default",
                "<Crc as Default>::default",
            ),
            (
                "<once_cell::imp::Guard as core::ops::drop::Drop>::drop::{{closure}}",
                "<Guard as Drop>::drop::{{closure}}",
            ),
            (
                "todos::todos_index::{{closure}}",
                "todos::todos_index::{{closure}}",
            ),
            (
                "<&mut serde_json::ser::Serializer<W,F> as serde_core::ser::Serializer>::serialize_bool",
                "<Serializer as Serializer>::serialize_bool",
            ),
            (
                "alloc::collections::btree::navigate::<impl alloc::collections::btree::node::Handle<alloc::collections::btree::node::NodeRef<alloc::collections::btree::node::marker::Immut,K,V,alloc::collections::btree::node::marker::Leaf>,alloc::collections::btree::node::marker::Edge>>::next_unchecked::{{closure}}",
                "Handle::next_unchecked::{{closure}}",
            ),
            (
                "<T as alloc::slice::<impl [T]>::to_vec_in::ConvertVec>::to_vec",
                "<T as ConvertVec>::to_vec",
            ),
        ];
        for (full, short) in table {
            assert_eq!(Shortener::new([full]).get(full), short, "{full}");
        }
        // Together, and with neighbours that could collide.
        let mut names: Vec<&str> = table.iter().map(|(full, _)| *full).collect();
        names.extend([
            "profscope_agent::capture::heap::_::<impl serde_core::ser::Serialize for profscope_agent::capture::memory::JemallocStats>::serialize",
            "other::_::<impl serde::ser::Serialize for other::Todo>::serialize",
            "hashbrown::raw::alloc::do_alloc",
            "core::ptr::drop_in_place<alloc::vec::Vec<u8>>",
            "core::ptr::drop_in_place<alloc::string::String>",
        ]);
        let s = Shortener::new(names.iter().copied());
        let mut seen = std::collections::HashMap::new();
        for full in &names {
            let short = s.get(full);
            assert!(
                !short.starts_with("_::") && !short.contains("::_::"),
                "{short}"
            );
            let first = short.trim_start_matches('<').split("::").next().unwrap();
            assert!(!NOISE.contains(&first), "{full} → {short}");
            if let Some(other) = seen.insert(short.to_string(), *full) {
                panic!("{other} and {full} both read {short}");
            }
        }
    }

    #[test]
    fn distinct_names_stay_distinct() {
        let iters = [
            "<core::slice::iter::Iter<T> as core::iter::traits::iterator::Iterator>::next",
            "<std::collections::hash::map::Iter<K,V> as core::iter::traits::iterator::Iterator>::next",
        ];
        let s = Shortener::new(iters);
        assert_eq!(s.get(iters[0]), "<iter::Iter as Iterator>::next");
        assert_eq!(s.get(iters[1]), "<map::Iter as Iterator>::next");
        let names = [
            "a::x::Parser::parse",
            "b::y::Parser::parse",
            "c::Parser::parse",
            "<a::Foo as core::fmt::Display>::fmt",
            "<b::Foo as core::fmt::Display>::fmt",
        ];
        let s = Shortener::new(names);
        let shorts: std::collections::HashSet<&str> = names.iter().map(|n| s.get(n)).collect();
        assert_eq!(shorts.len(), names.len(), "{shorts:?}");
        assert_eq!(s.get("c::Parser::parse"), "c::Parser::parse");
    }

    #[test]
    fn hide_list_matches_plumbing_not_applications() {
        let re = regex::Regex::new(HIDE).unwrap();
        for plumbing in [
            "tokio::runtime::task::harness::poll_future",
            "<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll",
            "<core::future::poll_fn::PollFn<F> as core::future::future::Future>::poll",
            "std::panicking::catch_unwind",
            "hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_loop",
            "<F as axum::handler::Handler<(M,T1),S>>::call::{{closure}}",
            "std::sys::backtrace::__rust_begin_short_backtrace",
        ] {
            assert!(re.is_match(plumbing), "{plumbing}");
        }
        for app in [
            "profscope_examples::hash_work",
            "sha2::sha256::compress256",
            "app::checkout",
        ] {
            assert!(!re.is_match(app), "{app}");
        }
    }
}

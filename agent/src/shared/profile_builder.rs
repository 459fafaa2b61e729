//! Builds pprof profiles from raw addresses: one `Location` per address,
//! its lines (inlined frames included) from the [`Symbolizer`], functions and
//! strings deduplicated, and `Mapping`s for the objects the addresses fall in.
//!
//! Every producer (CPU, heap, tasks) fills a profile through this builder,
//! so they all carry what `go tool pprof` needs: string 0 is "", sample and
//! period types, times, mappings with build ids.

use rustc_hash::FxHashMap as HashMap;
use std::time::{Duration, SystemTime};

use profscope_profile::{Function, Label, Line, Location, Profile, Sample, ValueType};

use crate::shared::symbols::{Mapping, Symbolizer};

/// Accumulates samples over symbolized addresses into a [`Profile`].
pub(crate) struct ProfileBuilder<'a> {
    symbolizer: &'a Symbolizer,
    mappings: Vec<Mapping>,
    strings: HashMap<String, i64>,
    /// (name, system name, file) → function id.
    functions: HashMap<(i64, i64, i64), u64>,
    /// (address, inlined frames dropped from its inner end) → location id.
    locations: HashMap<(u64, usize), u64>,
    profile: Profile,
}

impl std::fmt::Debug for ProfileBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileBuilder")
            .field("samples", &self.profile.sample.len())
            .field("locations", &self.profile.location.len())
            .finish()
    }
}

impl<'a> ProfileBuilder<'a> {
    /// A builder for samples with the given `(type, unit)` value types.
    pub(crate) fn new(symbolizer: &'a Symbolizer, sample_types: &[(&str, &str)]) -> Self {
        let mappings = symbolizer.mappings();
        let mut b = ProfileBuilder {
            symbolizer,
            mappings: Vec::new(),
            strings: HashMap::default(),
            functions: HashMap::default(),
            locations: HashMap::default(),
            profile: Profile::default(),
        };
        b.string("");
        b.profile.sample_type = sample_types
            .iter()
            .map(|(ty, unit)| b.value_type(ty, unit))
            .collect();
        b.profile.mapping = mappings
            .iter()
            .enumerate()
            .map(|(i, m)| profscope_profile::Mapping {
                id: i as u64 + 1,
                memory_start: m.start,
                memory_limit: m.end,
                file_offset: m.offset,
                filename: b.string(&m.path),
                build_id: b.string(&m.build_id),
                has_functions: true,
                has_filenames: true,
                has_line_numbers: true,
                has_inline_frames: true,
            })
            .collect();
        b.mappings = mappings;
        b
    }

    /// Sets the period type and period (e.g. `cpu`/`nanoseconds`, 10101010).
    pub(crate) fn period(mut self, ty: &str, unit: &str, period: i64) -> Self {
        self.profile.period_type = Some(self.value_type(ty, unit));
        self.profile.period = period;
        self
    }

    /// Names the sample type tools show by default.
    pub(crate) fn default_sample_type(mut self, ty: &str) -> Self {
        self.profile.default_sample_type = self.string(ty);
        self
    }

    /// Adds a free-text comment (pprof's `comment`; `go tool pprof` shows
    /// it in the header).
    pub(crate) fn comment(mut self, text: &str) -> Self {
        let id = self.string(text);
        self.profile.comment.push(id);
        self
    }

    /// Sets the capture's start time and duration.
    pub(crate) fn time(mut self, start: SystemTime, duration: Duration) -> Self {
        self.profile.time_nanos = start
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.profile.duration_nanos = duration.as_nanos() as i64;
        self
    }

    /// Adds a sample. `stack` holds lookup addresses, leaf first: the
    /// interrupted instruction for the leaf, return address − 1 for callers.
    pub(crate) fn add_sample(&mut self, stack: &[u64], values: Vec<i64>, labels: &[(&str, &str)]) {
        self.add_trimmed_sample(stack, 0, values, labels);
    }

    /// Like [`add_sample`](Self::add_sample), with the innermost
    /// `leaf_frames_dropped` inlined frames of the leaf address left out (they
    /// were allocator machinery inlined into user code); the leaf gets a
    /// location of its own, so other stacks through that address keep them.
    pub(crate) fn add_trimmed_sample(
        &mut self,
        stack: &[u64],
        leaf_frames_dropped: usize,
        values: Vec<i64>,
        labels: &[(&str, &str)],
    ) {
        let location_id = stack
            .iter()
            .enumerate()
            .map(|(i, &addr)| self.location_id(addr, if i == 0 { leaf_frames_dropped } else { 0 }))
            .collect();
        self.add_sample_at(location_id, values, labels);
    }

    /// Adds a sample over locations already made by
    /// [`location_id`](Self::location_id), leaf first: for producers that
    /// look each address up once for many stacks.
    pub(crate) fn add_sample_at(
        &mut self,
        location_id: Vec<u64>,
        values: Vec<i64>,
        labels: &[(&str, &str)],
    ) {
        let label = self.labels(labels);
        self.add_labelled_sample_at(location_id, values, label);
    }

    /// Like [`add_sample_at`](Self::add_sample_at), with labels already
    /// made by [`labels`](Self::labels) (for producers that meet the same
    /// label set on many samples).
    pub(crate) fn add_labelled_sample_at(
        &mut self,
        location_id: Vec<u64>,
        values: Vec<i64>,
        label: Vec<Label>,
    ) {
        self.profile.sample.push(Sample {
            location_id,
            value: values,
            label,
        });
    }

    /// String labels over this profile's string table.
    pub(crate) fn labels(&mut self, pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs
            .iter()
            .map(|(k, v)| Label {
                key: self.string(k),
                str: self.string(v),
                ..Default::default()
            })
            .collect()
    }

    /// Adds a sample whose stack is already a list of function names, leaf
    /// first (for stacks that have no addresses, such as task dumps' text).
    pub(crate) fn add_named_sample(&mut self, frames: &[&str], values: Vec<i64>) {
        let location_id = frames
            .iter()
            .map(|name| {
                let function_id = self.function(name, None, "");
                let id = self.profile.location.len() as u64 + 1;
                self.profile.location.push(Location {
                    id,
                    line: vec![Line {
                        function_id,
                        line: 0,
                    }],
                    ..Default::default()
                });
                id
            })
            .collect();
        self.profile.sample.push(Sample {
            location_id,
            value: values,
            label: Vec::new(),
        });
    }

    /// The finished profile.
    pub(crate) fn build(self) -> Profile {
        self.profile
    }

    /// The id of the location for lookup address `addr` with its innermost
    /// `dropped` inlined frames left out, made on first use.
    pub(crate) fn location_id(&mut self, addr: u64, dropped: usize) -> u64 {
        if let Some(&id) = self.locations.get(&(addr, dropped)) {
            return id;
        }
        let frames = self.symbolizer.resolve(addr);
        let line = frames
            .iter()
            .skip(dropped)
            .map(|f| Line {
                function_id: self.function(
                    &f.function,
                    f.linkage.as_deref(),
                    f.file.as_deref().unwrap_or(""),
                ),
                line: i64::from(f.line),
            })
            .collect();
        let mapping_id = self
            .mappings
            .iter()
            .position(|m| m.start <= addr && addr < m.end)
            .map_or(0, |i| i as u64 + 1);
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id,
            address: addr,
            line,
            is_folded: false,
        });
        self.locations.insert((addr, dropped), id);
        id
    }

    /// The function named `name` (demangled) with linkage symbol
    /// `linkage`. `system_name` is the linkage symbol, or "" when none is
    /// known: never a copy of `name`, because readers that follow Go's
    /// symbolizer take `name == system_name` for a possibly mangled name and
    /// strip every `<…>` from what looks like demangled C++, printing
    /// `<u64 as PartialOrd>::lt` as `::lt`.
    fn function(&mut self, name: &str, linkage: Option<&str>, file: &str) -> u64 {
        let key = (
            self.string(name),
            self.string(linkage.unwrap_or("")),
            self.string(file),
        );
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(Function {
            id,
            name: key.0,
            system_name: key.1,
            filename: key.2,
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> ValueType {
        ValueType {
            ty: self.string(ty),
            unit: self.string(unit),
        }
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        let id = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn profile_marker_fn() -> u64 {
        profile_marker_fn as *const () as usize as u64
    }

    struct Marker;

    impl std::fmt::Display for Marker {
        #[inline(never)]
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("marker")
        }
    }

    #[inline(never)]
    fn generic_marker<T: Default>() -> T {
        std::hint::black_box(T::default())
    }

    /// The calling frame's return address as a lookup address, taken from
    /// the frame-pointer chain (the workspace builds with frame pointers).
    #[inline(never)]
    fn caller_address() -> u64 {
        let fp: *const usize;
        // SAFETY: reads rbp, which holds this function's frame pointer.
        unsafe { std::arch::asm!("mov {}, rbp", out(reg) fp) };
        // SAFETY: [fp + 8] is this frame's return address (frame pointers on).
        (unsafe { *fp.add(1) }) as u64 - 1
    }

    /// (name, system_name) of the outermost frame of `addr`'s location.
    fn names_of(addr: u64) -> (String, String) {
        let sym = Symbolizer::new();
        let mut b = ProfileBuilder::new(&sym, &[("samples", "count")]);
        b.add_sample(&[addr], vec![1], &[]);
        let p = b.build();
        let line = *p.location[0].line.last().expect("a frame");
        let f = &p.function[line.function_id as usize - 1];
        (
            p.string_at(f.name).to_string(),
            p.string_at(f.system_name).to_string(),
        )
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn system_name_is_the_linkage_symbol_never_a_copy_of_the_name() {
        let trait_impl = <Marker as std::fmt::Display>::fmt as *const () as u64;
        let generic = generic_marker::<u64> as *const () as u64;
        let in_closure = std::hint::black_box(|| std::hint::black_box(caller_address()));
        let closure_addr = in_closure();
        // SAFETY: dlsym with a valid NUL-terminated name; null handle means
        // the default search order.
        let getpid = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"getpid".as_ptr()) } as u64;
        let cases: [(&str, u64, &str); 4] = [
            (
                "trait impl",
                trait_impl,
                "<profscope_agent::shared::profile_builder::tests::Marker as core::fmt::Display>::fmt",
            ),
            (
                "generic",
                generic,
                "profscope_agent::shared::profile_builder::tests::generic_marker",
            ),
            (
                "closure",
                closure_addr,
                "system_name_is_the_linkage_symbol_never_a_copy_of_the_name::{",
            ),
            ("libc", getpid, "getpid"),
        ];
        for (what, addr, expected) in cases {
            let (name, system) = names_of(addr);
            assert!(
                name.contains(expected),
                "{what}: name {name:?}, want {expected:?}"
            );
            assert!(!name.starts_with("::"), "{what}: {name:?}");
            if what == "libc" {
                // C linkage: the symbol is the name, which no Go rule rewrites.
                assert!(system == name || system.is_empty(), "{what}: {system:?}");
            } else {
                assert_ne!(system, name, "{what}: system_name copies the name");
                assert!(
                    system.starts_with("_ZN") || system.starts_with("_R"),
                    "{what}: system_name {system:?} is not a mangled symbol"
                );
                let demangled = format!("{:#}", rustc_demangle::demangle(&system));
                assert_eq!(demangled, name, "{what}: system_name demangles to the name");
            }
        }
    }

    #[test]
    fn named_frames_have_an_empty_system_name() {
        let sym = Symbolizer::new();
        let mut b = ProfileBuilder::new(&sym, &[("goroutine", "count")]);
        b.add_named_sample(
            &["<tokio::sync::mpsc::Recv<T> as core::future::Future>::poll"],
            vec![1],
        );
        let p = b.build();
        assert_eq!(p.function[0].system_name, 0, "\"\", not a copy of the name");
        assert_ne!(p.function[0].name, 0);
    }

    #[test]
    fn builds_a_profile_go_can_read() {
        let sym = Symbolizer::new();
        let mut b = ProfileBuilder::new(&sym, &[("samples", "count"), ("cpu", "nanoseconds")])
            .period("cpu", "nanoseconds", 10_000_000)
            .time(SystemTime::now(), Duration::from_secs(1));
        let addr = profile_marker_fn() + 2;
        b.add_sample(&[addr], vec![1, 10], &[("thread", "main")]);
        b.add_sample(&[addr], vec![2, 20], &[]);
        let p = b.build();
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.location.len(), 1, "one location per address");
        assert!(p.location[0].mapping_id >= 1);
        assert_eq!(p.location[0].address, addr);
        let folded = profscope_profile::fold::fold(&p, 0);
        assert_eq!(folded.len(), 1);
        assert!(folded[0].0.ends_with("profile_marker_fn"), "{folded:?}");
        assert_eq!(folded[0].1, 3);
        assert!(!p.mapping.is_empty());
        assert_eq!(p.string_at(p.period_type.as_ref().unwrap().ty), "cpu");
    }
}

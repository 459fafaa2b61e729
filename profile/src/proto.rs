//! The types of google/pprof's `profile.proto` (package
//! `perftools.profiles`), declared with prost derives so no `protoc` runs at
//! build time. Field numbers are the proto's; the wire format is Go's.
//!
//! Ids (`Location.id`, `Function.id`, …) are non-zero and refer across the
//! tables; strings are indices into `string_table`, whose entry 0 is "".
//! [`validate`](crate::validate) checks all of that once after a parse.

/// A profile: sample types, samples and the tables they refer into.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What each of a sample's values measures (`cpu/nanoseconds`, …).
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// The objects the addresses fall in.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Addresses with their (inlined) lines.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions, referred to by lines.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string of the profile; entry 0 is "".
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Frames matching this regex (a string index) are dropped by readers.
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Frames matching this regex are kept despite `drop_frames`.
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// Start of the capture, Unix nanoseconds.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// Length of the capture in nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What one period measures.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// The sampling period, in `period_type` units.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// The sample type readers show by default (a string index).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// A (type, unit) pair of string indices, e.g. `inuse_space`/`bytes`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ValueType {
    /// The type's name (string index).
    #[prost(int64, tag = "1")]
    pub ty: i64,
    /// Its unit (string index).
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One stack with its values and labels.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Sample {
    /// Location ids, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per sample type.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// String or numeric labels (`thread`, `bytes`, …).
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A sample label: `key` with either a string (`str`) or a number (`num`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Label {
    /// The key (string index).
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// The string value (string index), 0 for a numeric label.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// The numeric value.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// The numeric value's unit (string index).
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// A mapped object: address range, file offset, file name and build id.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Mapping {
    /// Non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// First address of the mapping.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// One past its last address.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// File offset mapped at `memory_start`.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// The object's path (string index).
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// Its build id (string index).
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Whether locations in it carry function names.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// Whether they carry file names.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Whether they carry line numbers.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Whether inlined frames are expanded.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// An address with its frames (several when code was inlined).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Location {
    /// Non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The mapping it falls in, 0 when none.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The address.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Its frames, innermost (inlined) first.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Whether several addresses were folded into this location.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// One frame of a location: a function and a line in it.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Line {
    /// The function's id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// The source line, 0 when unknown.
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// A function: name, linkage name, file.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Function {
    /// Non-zero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Human-readable (demangled) name (string index).
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// Linkage (mangled) name (string index); see the crate docs on why it
    /// must never copy `name`.
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// Source file (string index).
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// First line of the function.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

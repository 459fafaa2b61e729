//! The pprof profile model both halves of profscope stand on, in the manner
//! of google/pprof's `profile` package: one model, everything about a
//! profile in one place. The agent writes through it; the viewer reads
//! through it; neither reaches into the other.
//!
//! * [`proto`]: the `profile.proto` types (prost derives, no `protoc`);
//! * [`parse()`] (gzip or not, bounded by [`Limits`], then [`validate`d](validate));
//!   [`parse_merged`] sums repeated stacks while decoding (what the web UI loads);
//!   [`encode`] (prost's bytes, sized once per sample) and [`write_gz`]
//!   (gzip at best speed, as Go writes); [`gunzip`] and [`gzip`], the one
//!   gzip of readers and writers;
//! * [`sample_type`]: which value means what, Go's default;
//!   [`Profile::string_at`] (string table lookups) and [`Profile::sample_total`];
//! * [`fold`]: a profile → folded stacks; [`read_folded`]: folded text → a
//!   profile;
//! * [`filter`]: `focus`/`ignore`/`hide`/`tagfocus`/`tagignore` as Go has them;
//! * [`merge`]: repeated stacks summed into one record;
//! * [`prune`]: Go's pruning of allocator frames from heap stacks;
//! * [`kind`]: profile kinds and the one table of endpoints;
//! * [`flamegraph`]: SVG flamegraphs through inferno, plain and differential.
//!
//! ```
//! let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/go-cpu.pb.gz"))?;
//! let profile = profscope_profile::parse(&bytes, &profscope_profile::Limits::default())?;
//! let st = profscope_profile::select_sample_type(&profile, None)?;
//! let folded = profscope_profile::fold::fold(&profile, st.index);
//! assert_eq!(folded.iter().map(|(_, v)| v).sum::<i64>(), profile.sample_total(st.index));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Names
//! `Function.name` is the human-readable (demangled) name and
//! `Function.system_name` the linkage symbol. Producers must never write a
//! copy of `name` into `system_name`: `go tool pprof` takes equal fields for
//! a possibly mangled name and strips every `<…>` from what looks like
//! demangled C++.
//!
//! # Feature flags
//! * `otlp`: [`otlp`], pprof ⇄ OTLP profiles (`opentelemetry-proto`'s
//!   types), and [`parse()`] reading OTLP export requests too.
//!
//! With default features the crate depends on no runtime, server,
//! allocator or sampler.

#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

mod error;
pub mod filter;
pub mod flamegraph;
pub mod fold;
mod gzip;
pub mod kind;
mod limits;
pub mod merge;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod parse;
pub mod proto;
pub mod prune;
pub mod read_folded;
pub mod sample_type;
mod validate;
mod varint;
mod write;

#[cfg(test)]
mod testing;

pub use error::{Error, Result};
pub use filter::{Filter, FilterOptions};
pub use gzip::{gunzip, gzip, gzip_made_in_two, gzip_two_threads};
pub use limits::Limits;
pub use parse::{parse, parse_merged};
pub use proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
pub use sample_type::{SampleType, default_sample_index, sample_types, select_sample_type};
pub use validate::validate;
pub use write::{SampleEncoder, encode, encode_split, write_gz};

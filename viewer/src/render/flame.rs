//! Folded stacks and SVG flamegraphs of one profile, through the model's
//! fold and flamegraph (the agent's `format=folded|svg` goes through the same
//! two), so a snapshot and a live endpoint draw identically.

use profscope_profile::Profile;
use profscope_profile::flamegraph::FlamegraphOptions;

use crate::error::Result;
use profscope_profile::SampleType;

/// How a flamegraph is drawn.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FlameOptions {
    /// Title; defaults to the sample type's name.
    pub title: Option<String>,
    /// Roots at the top.
    pub icicle: bool,
}

impl FlameOptions {
    /// Options with a title and orientation.
    pub fn new(title: Option<String>, icicle: bool) -> Self {
        FlameOptions { title, icicle }
    }
}

/// Folded text (`root;…;leaf value` lines) of one sample type.
pub fn collapse(profile: &Profile, sample_type: &SampleType) -> String {
    profscope_profile::fold::folded_text(&profscope_profile::fold::fold(profile, sample_type.index))
}

/// An interactive SVG flamegraph of one sample type; an empty profile gives
/// a valid SVG saying so.
pub fn flamegraph(
    profile: &Profile,
    sample_type: &SampleType,
    opts: &FlameOptions,
) -> Result<Vec<u8>> {
    let folded = profscope_profile::fold::fold(profile, sample_type.index);
    let title = opts
        .title
        .clone()
        .unwrap_or_else(|| format!("{} ({})", sample_type.name, sample_type.unit));
    let options = FlamegraphOptions::for_unit(title, &sample_type.unit).icicle(opts.icicle);
    Ok(profscope_profile::flamegraph::flamegraph_svg(
        &folded, &options,
    )?)
}

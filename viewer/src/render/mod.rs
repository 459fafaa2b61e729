//! Output: the `top` table, folded text and SVG flamegraphs. Each renderer
//! takes a loaded profile plus options and returns text or bytes; writing
//! them anywhere is the caller's business.

pub mod flame;
pub mod icicle;
pub mod top;

pub use flame::{FlameOptions, collapse, flamegraph};
pub use icicle::{Drawn, IcicleOptions, icicle_svg};
pub use top::{TopOptions, TopReport, TopRow, top};

//! The heap backend of a build without the `heap` feature: every call says
//! how to turn heap profiling on.

use crate::Error;

pub(super) fn profiling_enabled() -> bool {
    false
}

pub(super) fn is_active() -> bool {
    false
}

pub(super) fn set_active(_active: bool) -> Result<(), Error> {
    Err(Error::NotAvailable(super::NOT_ENABLED.into()))
}

pub(super) fn dump(_path: &std::path::Path) -> Result<(), Error> {
    Err(Error::NotAvailable(super::NOT_ENABLED.into()))
}

pub(super) fn stats() -> Option<super::JemallocStats> {
    None
}

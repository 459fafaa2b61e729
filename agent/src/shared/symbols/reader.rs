//! The DWARF reader type the object index and the unit lookups share.

/// Reader over the mapped file's bytes.
pub(super) type Reader<'a> = gimli::EndianSlice<'a, gimli::RunTimeEndian>;

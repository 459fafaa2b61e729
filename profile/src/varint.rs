//! Protobuf varints, read by hand where a decoder walks the wire format
//! without prost (the parser's size pre-scan, the merging decoder).

/// A varint; `None` when cut short or longer than 10 bytes.
pub(crate) fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

//! pprof → OTLP: one export request written straight to bytes.

use std::hash::{Hash, Hasher};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use prost::Message;
use prost::encoding::{self, WireType, encode_key, encoded_len_varint};
use rustc_hash::{FxHashMap as HashMap, FxHasher};

use super::{BUILD_ID_KEY, ResourceInfo, SCOPE_NAME};
use crate::proto::{self, Profile};
use crate::write::{length_prefix, packed_len, put_packed, put_varint, varints_len};

/// One OTLP export request, protobuf-encoded: `profiles` (one OTLP
/// `Profile` per sample type of each) under one resource and one scope,
/// sharing one dictionary.
///
/// Written straight to bytes rather than through the crate's message
/// structs: a push encodes one every period, and at 10k stacks building
/// the structs (an allocation per sample and per stack, all dropped again)
/// cost more than the encoding. Fields go in prost's order with prost's
/// encodings, so these are the bytes prost writes for the decoded request
/// (a test holds it to that).
pub fn encode_request(profiles: &[&Profile], resource: &ResourceInfo) -> Vec<u8> {
    let mut dict = Dictionary::new();
    let mut bodies = Vec::new();
    for profile in profiles {
        dict.add_profile(profile, &mut bodies);
    }
    // Every length is known before writing, so each byte is written once.
    let mut resource_field = Vec::new();
    encoding::message::encode(1, &resource.to_resource(), &mut resource_field);
    let mut scope_field = Vec::new();
    let instrumentation = InstrumentationScope {
        name: SCOPE_NAME.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..InstrumentationScope::default()
    };
    encoding::message::encode(1, &instrumentation, &mut scope_field);
    let scope_len = scope_field.len() + bodies.iter().map(|b| field_len(b.len())).sum::<usize>();
    let resource_profiles_len = resource_field.len() + field_len(scope_len);
    let (dict_head, stack_payloads) = dict.encode_head();
    let dict_len = dict_head.len()
        + stack_payloads
            .iter()
            .map(|&n| field_len(packed_len(n)))
            .sum::<usize>();

    let mut out = Vec::with_capacity(field_len(resource_profiles_len) + field_len(dict_len));
    // ExportProfilesServiceRequest.resource_profiles (1): one ResourceProfiles
    // of the resource (1) and one ScopeProfiles (2) of the scope (1) and
    // the profiles (2).
    length_prefix(1, resource_profiles_len, &mut out);
    out.extend_from_slice(&resource_field);
    length_prefix(2, scope_len, &mut out);
    out.extend_from_slice(&scope_field);
    for body in &bodies {
        length_prefix(2, body.len(), &mut out);
        out.extend_from_slice(body);
    }
    // .dictionary (2).
    length_prefix(2, dict_len, &mut out);
    out.extend_from_slice(&dict_head);
    dict.encode_stacks(&stack_payloads, &mut out);
    out
}

/// Bytes of a length-delimited field (tag under 16) holding `len` bytes.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// An OTLP `Sample` as field 2 of its `Profile`: one value (a profile has
/// one sample type), no link, no timestamps.
fn encode_sample(stack: i32, attributes: &[i32], value: i64, buf: &mut Vec<u8>) {
    // int32 fields are varints of the sign-extended value, as prost writes them.
    let attribute_values = || attributes.iter().map(|&a| a as u64);
    let attribute_bytes = varints_len(attribute_values());
    let value_bytes = encoded_len_varint(value as u64);
    let stack_bytes = if stack == 0 {
        0
    } else {
        1 + encoded_len_varint(stack as u64)
    };
    let len = stack_bytes + packed_len(attribute_bytes) + packed_len(value_bytes);
    length_prefix(2, len, buf);
    if stack != 0 {
        encode_key(1, WireType::Varint, buf);
        put_varint(stack as u64, buf);
    }
    put_packed(2, attribute_bytes, attribute_values(), buf);
    put_packed(4, value_bytes, std::iter::once(value as u64), buf);
}

/// Request-wide tables, each deduplicated by value, entry 0 the zero value.
struct Dictionary {
    /// Every table but the stacks (below), which are most of a CPU
    /// profile's dictionary.
    dict: otlp::ProfilesDictionary,
    strings: HashMap<String, i32>,
    mappings: HashMap<MappingKey, i32>,
    functions: HashMap<(i32, i32, i32, i64), i32>,
    locations: HashMap<LocationKey, i32>,
    attributes: HashMap<(i32, AttrValue, i32), i32>,
    /// The stack table, flat: stack `i` is
    /// `stack_locations[stack_starts[i]..stack_starts[i + 1]]`; stack 0 is
    /// the empty zero value.
    stack_locations: Vec<i32>,
    stack_starts: Vec<usize>,
    /// Stack index by the stack's hash. A stack whose hash an earlier,
    /// different stack holds goes into `colliding` by value instead.
    stack_by_hash: HashMap<u64, i32>,
    colliding: HashMap<Vec<i32>, i32>,
}

type MappingKey = (u64, u64, u64, i32, i32);
type LocationKey = (i32, u64, Vec<(i32, i64)>);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum AttrValue {
    Str(String),
    Int(i64),
}

/// pprof ids → dictionary indices: a vector when the ids are dense (as
/// every producer writes them), a map otherwise.
enum IdMap {
    Dense(Vec<i32>),
    Sparse(HashMap<u64, i32>),
}

impl IdMap {
    fn new(ids: impl Iterator<Item = u64> + Clone, len: usize) -> Self {
        match ids.max() {
            Some(max) if max <= (len as u64).saturating_mul(2).saturating_add(16) => {
                IdMap::Dense(vec![0; max as usize + 1])
            }
            _ => IdMap::Sparse(HashMap::default()),
        }
    }

    fn insert(&mut self, id: u64, index: i32) {
        match self {
            IdMap::Dense(v) => v[id as usize] = index,
            IdMap::Sparse(m) => {
                m.insert(id, index);
            }
        }
    }

    /// The indices for `ids` appended to `out` (one match for all of them:
    /// this runs for every frame of every sample).
    fn extend(&self, ids: &[u64], out: &mut Vec<i32>) {
        match self {
            IdMap::Dense(v) => {
                out.extend(
                    ids.iter()
                        .map(|&id| v.get(id as usize).copied().unwrap_or(0)),
                );
            }
            IdMap::Sparse(m) => out.extend(ids.iter().map(|id| m.get(id).copied().unwrap_or(0))),
        }
    }

    /// The index for `id`; 0 (the zero entry) when unknown.
    fn get(&self, id: u64) -> i32 {
        match self {
            IdMap::Dense(v) => v.get(id as usize).copied().unwrap_or(0),
            IdMap::Sparse(m) => m.get(&id).copied().unwrap_or(0),
        }
    }
}

/// `key`'s index in its table, added by `push` (given the key, returning
/// the new entry's index) if new.
fn intern<K: Hash + Eq>(map: &mut HashMap<K, i32>, key: K, push: impl FnOnce(&K) -> usize) -> i32 {
    if let Some(&i) = map.get(&key) {
        return i;
    }
    let i = i32::try_from(push(&key)).unwrap_or(i32::MAX);
    map.insert(key, i);
    i
}

impl Dictionary {
    fn new() -> Self {
        let dict = otlp::ProfilesDictionary {
            mapping_table: vec![otlp::Mapping::default()],
            location_table: vec![otlp::Location::default()],
            function_table: vec![otlp::Function::default()],
            link_table: vec![otlp::Link::default()],
            string_table: vec![String::new()],
            attribute_table: vec![otlp::KeyValueAndUnit::default()],
            stack_table: Vec::new(),
        };
        let mut d = Dictionary {
            dict,
            strings: HashMap::default(),
            mappings: HashMap::default(),
            functions: HashMap::default(),
            locations: HashMap::default(),
            attributes: HashMap::default(),
            stack_locations: Vec::new(),
            stack_starts: vec![0, 0],
            stack_by_hash: HashMap::default(),
            colliding: HashMap::default(),
        };
        d.strings.insert(String::new(), 0);
        d
    }

    /// The `ProfilesDictionary`'s fields 1–6, by prost (the stack table,
    /// field 7, is empty there), and the bytes of each stack's location
    /// indices.
    fn encode_head(&self) -> (Vec<u8>, Vec<usize>) {
        let payloads = self
            .stack_starts
            .windows(2)
            .map(|bounds| {
                varints_len(
                    self.stack_locations[bounds[0]..bounds[1]]
                        .iter()
                        .map(|&l| l as u64),
                )
            })
            .collect();
        (self.dict.encode_to_vec(), payloads)
    }

    /// Field 7 of the dictionary: one `Stack` per entry, its packed
    /// location indices `payloads` bytes long (from
    /// [`encode_head`](Self::encode_head)).
    fn encode_stacks(&self, payloads: &[usize], out: &mut Vec<u8>) {
        for (bounds, &payload) in self.stack_starts.windows(2).zip(payloads) {
            length_prefix(7, packed_len(payload), out);
            let locations = &self.stack_locations[bounds[0]..bounds[1]];
            put_packed(1, payload, locations.iter().map(|&l| l as u64), out);
        }
    }

    /// The stack table's index for `locations`, added if new; the empty
    /// stack is the zero value, entry 0.
    fn stack(&mut self, locations: &[i32]) -> i32 {
        if locations.is_empty() {
            return 0;
        }
        let mut hasher = FxHasher::default();
        locations.hash(&mut hasher);
        self.stack_with_hash(hasher.finish(), locations)
    }

    fn stack_with_hash(&mut self, hash: u64, locations: &[i32]) -> i32 {
        match self.stack_by_hash.get(&hash) {
            Some(&i) if self.stack_at(i) == locations => i,
            Some(_) => {
                if let Some(&i) = self.colliding.get(locations) {
                    return i;
                }
                let i = self.push_stack(locations);
                self.colliding.insert(locations.to_vec(), i);
                i
            }
            None => {
                let i = self.push_stack(locations);
                self.stack_by_hash.insert(hash, i);
                i
            }
        }
    }

    fn stack_at(&self, i: i32) -> &[i32] {
        let i = i as usize;
        &self.stack_locations[self.stack_starts[i]..self.stack_starts[i + 1]]
    }

    fn push_stack(&mut self, locations: &[i32]) -> i32 {
        self.stack_locations.extend_from_slice(locations);
        self.stack_starts.push(self.stack_locations.len());
        i32::try_from(self.stack_starts.len() - 2).unwrap_or(i32::MAX)
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let table = &mut self.dict.string_table;
        intern(&mut self.strings, s.to_string(), |_| {
            table.push(s.to_string());
            table.len() - 1
        })
    }

    fn attribute(&mut self, key: &str, value: AttrValue, unit: &str) -> i32 {
        let key = self.string(key);
        let unit = self.string(unit);
        let table = &mut self.dict.attribute_table;
        let any = match &value {
            AttrValue::Str(s) => Value::StringValue(s.clone()),
            AttrValue::Int(n) => Value::IntValue(*n),
        };
        intern(&mut self.attributes, (key, value, unit), |_| {
            table.push(otlp::KeyValueAndUnit {
                key_strindex: key,
                value: Some(AnyValue { value: Some(any) }),
                unit_strindex: unit,
            });
            table.len() - 1
        })
    }

    fn value_type(&mut self, p: &Profile, vt: &proto::ValueType) -> otlp::ValueType {
        otlp::ValueType {
            type_strindex: self.string(p.string_at(vt.ty)),
            unit_strindex: self.string(p.string_at(vt.unit)),
        }
    }

    /// Adds one pprof profile's tables, and its per-sample-type profiles,
    /// encoded, to `out`.
    fn add_profile(&mut self, p: &Profile, out: &mut Vec<Vec<u8>>) {
        let s = |i: i64| p.string_at(i);
        self.strings.reserve(p.string_table.len());
        self.functions.reserve(p.function.len());
        self.locations.reserve(p.location.len());
        let mut mapping_index = IdMap::new(p.mapping.iter().map(|m| m.id), p.mapping.len());
        for m in &p.mapping {
            let filename = self.string(s(m.filename));
            let build_id = s(m.build_id);
            let build_attr = if build_id.is_empty() {
                0
            } else {
                self.attribute(BUILD_ID_KEY, AttrValue::Str(build_id.to_string()), "")
            };
            let table = &mut self.dict.mapping_table;
            let key = (
                m.memory_start,
                m.memory_limit,
                m.file_offset,
                filename,
                build_attr,
            );
            let i = intern(&mut self.mappings, key, |_| {
                table.push(otlp::Mapping {
                    memory_start: m.memory_start,
                    memory_limit: m.memory_limit,
                    file_offset: m.file_offset,
                    filename_strindex: filename,
                    attribute_indices: if build_attr == 0 {
                        vec![]
                    } else {
                        vec![build_attr]
                    },
                });
                table.len() - 1
            });
            mapping_index.insert(m.id, i);
        }
        let mut function_index = IdMap::new(p.function.iter().map(|f| f.id), p.function.len());
        for f in &p.function {
            let key = (
                self.string(s(f.name)),
                self.string(s(f.system_name)),
                self.string(s(f.filename)),
                f.start_line,
            );
            let table = &mut self.dict.function_table;
            let i = intern(&mut self.functions, key, |_| {
                table.push(otlp::Function {
                    name_strindex: key.0,
                    system_name_strindex: key.1,
                    filename_strindex: key.2,
                    start_line: key.3,
                });
                table.len() - 1
            });
            function_index.insert(f.id, i);
        }
        let mut location_index = IdMap::new(p.location.iter().map(|l| l.id), p.location.len());
        for l in &p.location {
            let mapping = mapping_index.get(l.mapping_id);
            let lines: Vec<(i32, i64)> = l
                .line
                .iter()
                .map(|line| {
                    let f = function_index.get(line.function_id);
                    (f, line.line)
                })
                .collect();
            let table = &mut self.dict.location_table;
            let i = intern(&mut self.locations, (mapping, l.address, lines), |key| {
                table.push(otlp::Location {
                    mapping_index: mapping,
                    address: l.address,
                    lines: key
                        .2
                        .iter()
                        .map(|&(function_index, line)| otlp::Line {
                            function_index,
                            line,
                            column: 0,
                        })
                        .collect(),
                    attribute_indices: Vec::new(),
                });
                table.len() - 1
            });
            location_index.insert(l.id, i);
        }

        // One (stack, attributes) per pprof sample, shared by every type;
        // the attributes of all samples flat in `attributes`, their values
        // flat in `values` (read here once: a sample's values are a pointer
        // away, a cache miss per sample and type otherwise).
        let types = p.sample_type.len();
        let mut keyed = Vec::with_capacity(p.sample.len());
        let mut attributes: Vec<i32> = Vec::new();
        let mut values: Vec<i64> = Vec::with_capacity(p.sample.len() * types);
        let mut stack = Vec::new();
        self.stack_by_hash.reserve(p.sample.len());
        for sample in &p.sample {
            stack.clear();
            location_index.extend(&sample.location_id, &mut stack);
            let stack_index = self.stack(&stack);
            values.extend((0..types).map(|t| sample.value.get(t).copied().unwrap_or(0)));
            let first = attributes.len();
            for label in &sample.label {
                let key = s(label.key);
                let idx = if label.str != 0 {
                    self.attribute(key, AttrValue::Str(s(label.str).to_string()), "")
                } else {
                    self.attribute(key, AttrValue::Int(label.num), s(label.num_unit))
                };
                // Keys stay unique within a sample, as OTLP requires.
                let table = &self.dict.attribute_table;
                if !attributes[first..]
                    .iter()
                    .any(|&a| table[a as usize].key_strindex == table[idx as usize].key_strindex)
                {
                    attributes.push(idx);
                }
            }
            keyed.push((stack_index, first..attributes.len()));
        }

        let period_type = p.period_type.as_ref().map(|vt| self.value_type(p, vt));
        for (type_index, vt) in p.sample_type.iter().enumerate() {
            let sample_type = self.value_type(p, vt);
            let mut body = Vec::with_capacity(p.sample.len() * 12 + 64);
            encoding::message::encode(1, &sample_type, &mut body);
            let column = values.iter().skip(type_index).step_by(types);
            for ((stack_index, range), &v) in keyed.iter().zip(column) {
                if v != 0 {
                    encode_sample(*stack_index, &attributes[range.clone()], v, &mut body);
                }
            }
            // Fields 3 on, in prost's order after the samples (field 2).
            let rest = otlp::Profile {
                time_unix_nano: u64::try_from(p.time_nanos).unwrap_or(0),
                duration_nano: u64::try_from(p.duration_nanos).unwrap_or(0),
                period_type,
                period: p.period,
                ..otlp::Profile::default()
            };
            body.extend_from_slice(&rest.encode_to_vec());
            out.push(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_sharing_a_hash_stay_apart() {
        let mut dict = Dictionary::new();
        let a = dict.stack_with_hash(7, &[1, 2, 3]);
        let b = dict.stack_with_hash(7, &[4, 5]);
        assert_ne!(a, b);
        assert_eq!(dict.stack_with_hash(7, &[4, 5]), b);
        assert_eq!(dict.stack_with_hash(7, &[1, 2, 3]), a);
        assert_eq!(
            (dict.stack_at(a), dict.stack_at(b)),
            (&[1, 2, 3][..], &[4, 5][..])
        );
        assert_eq!(dict.stack_at(0), &[] as &[i32]);
    }
}

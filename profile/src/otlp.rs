//! pprof ⇄ OTLP profiles (`opentelemetry.proto.profiles.v1development`,
//! proto 1.10.0, the types of the `opentelemetry-proto` crate 0.33.1 this
//! module is pinned to).
//!
//! The two models are close: OTLP moves pprof's tables into one
//! request-wide [`ProfilesDictionary`](otlp::ProfilesDictionary) (entry 0 of
//! every table is the zero value, string 0 is `""`), adds a stack table,
//! and carries **one sample type per `Profile`**. So a pprof profile with
//! four sample types becomes four OTLP profiles sharing one dictionary;
//! samples whose value is 0 for a type are left out of that type's profile.
//! pprof labels become sample attributes (string labels as strings,
//! numeric labels as integers with their unit).
//!
//! Reading goes the other way: every profile of every scope of every
//! resource is merged into one pprof profile with one sample type per
//! distinct `(type, unit)`; samples with the same stack and attributes add
//! up; resource attributes become comments. When a request carries several
//! resources (a collector batches services and hosts), the attributes that
//! tell them apart (`service.name`, `host.name`, `process.pid`, …) also
//! become string labels on their samples, so `tagfocus` and `tags`
//! separate them; samples add up only within resources that have the same
//! such labels.

use std::hash::{Hash, Hasher};

use prost::encoding::{self, WireType, encode_key, encoded_len_varint};
use rustc_hash::{FxHashMap as HashMap, FxHasher};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

pub use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;

use crate::error::{Error, Result};
use crate::input::{GZIP_MAGIC, Limits, gunzip};
use crate::proto::{self, Profile};
use crate::validate::validate;
use crate::write::{packed_len, put_varint};

/// The OTLP/HTTP path of the profiles signal, appended to a collector's base URL.
pub const HTTP_PATH: &str = "/v1development/profiles";

/// The instrumentation scope profscope writes its profiles under.
pub const SCOPE_NAME: &str = "profscope";

/// Decoding can expand small messages this many times (an empty 2-byte
/// `Sample` becomes an ~80-byte struct); inputs are refused when their size
/// times this exceeds [`Limits::max_decoded`].
const MAX_EXPANSION: u64 = 40;

/// Who the profiles come from: the request's `Resource`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceInfo {
    /// `service.name`.
    pub service_name: String,
    /// `service.version`, when known.
    pub service_version: Option<String>,
    /// `host.name`, when known.
    pub host_name: Option<String>,
    /// `process.pid`, when known.
    pub pid: Option<u32>,
    /// Further string attributes (deployment environment, region, …).
    pub attributes: Vec<(String, String)>,
}

impl ResourceInfo {
    /// A resource naming the service only.
    pub fn service(name: impl Into<String>) -> Self {
        ResourceInfo {
            service_name: name.into(),
            ..ResourceInfo::default()
        }
    }

    /// This process: `host.name` from the kernel, `process.pid`.
    pub fn this_process(service_name: impl Into<String>, version: Option<String>) -> Self {
        ResourceInfo {
            service_name: service_name.into(),
            service_version: version,
            host_name: host_name(),
            pid: Some(std::process::id()),
            attributes: Vec::new(),
        }
    }

    fn to_resource(&self) -> Resource {
        let string = |key: &str, value: &str| KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.to_string())),
            }),
            ..KeyValue::default()
        };
        let mut attributes = vec![string("service.name", &self.service_name)];
        if let Some(v) = &self.service_version {
            attributes.push(string("service.version", v));
        }
        if let Some(h) = &self.host_name {
            attributes.push(string("host.name", h));
        }
        if let Some(pid) = self.pid {
            attributes.push(KeyValue {
                key: "process.pid".to_string(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(i64::from(pid))),
                }),
                ..KeyValue::default()
            });
        }
        attributes.extend(self.attributes.iter().map(|(k, v)| string(k, v)));
        Resource {
            attributes,
            ..Resource::default()
        }
    }
}

/// The host's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty())
}

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

/// The key and length of a length-delimited field; its `len` bytes follow.
fn length_prefix(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    put_varint(len as u64, buf);
}

/// An OTLP `Sample` as field 2 of its `Profile`: one value (a profile has
/// one sample type), no link, no timestamps.
fn encode_sample(stack: i32, attributes: &[i32], value: i64, buf: &mut Vec<u8>) {
    // int32 fields are varints of the sign-extended value, as prost writes them.
    let attribute_bytes: usize = attributes
        .iter()
        .map(|&a| encoded_len_varint(a as u64))
        .sum();
    let value_bytes = encoded_len_varint(value as u64);
    let stack_bytes = if stack == 0 {
        0
    } else {
        1 + encoded_len_varint(stack as u64)
    };
    let len = stack_bytes + packed_len(attribute_bytes) + packed_len(value_bytes);
    encode_key(2, WireType::LengthDelimited, buf);
    put_varint(len as u64, buf);
    if stack != 0 {
        encode_key(1, WireType::Varint, buf);
        put_varint(stack as u64, buf);
    }
    if attribute_bytes > 0 {
        encode_key(2, WireType::LengthDelimited, buf);
        put_varint(attribute_bytes as u64, buf);
        for &a in attributes {
            put_varint(a as u64, buf);
        }
    }
    encode_key(4, WireType::LengthDelimited, buf);
    put_varint(value_bytes as u64, buf);
    put_varint(value as u64, buf);
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

/// The attribute key OTel's semantic conventions give a GNU build id.
const BUILD_ID_KEY: &str = "process.executable.build_id.gnu";

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

fn intern<K: Hash + Eq>(map: &mut HashMap<K, i32>, key: K, push: impl FnOnce() -> usize) -> i32 {
    if let Some(&i) = map.get(&key) {
        return i;
    }
    let i = i32::try_from(push()).unwrap_or(i32::MAX);
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
                self.stack_locations[bounds[0]..bounds[1]]
                    .iter()
                    .map(|&l| encoded_len_varint(l as u64))
                    .sum()
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
            if payload > 0 {
                length_prefix(1, payload, out);
                for &l in &self.stack_locations[bounds[0]..bounds[1]] {
                    put_varint(l as u64, out);
                }
            }
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
        intern(&mut self.strings, s.to_string(), || {
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
        intern(&mut self.attributes, (key, value, unit), || {
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
            type_strindex: self.string(crate::string(p, vt.ty)),
            unit_strindex: self.string(crate::string(p, vt.unit)),
        }
    }

    /// Adds one pprof profile's tables, and its per-sample-type profiles,
    /// encoded, to `out`.
    fn add_profile(&mut self, p: &Profile, out: &mut Vec<Vec<u8>>) {
        let s = |i: i64| crate::string(p, i);
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
            let i = intern(&mut self.mappings, key, || {
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
            let i = intern(&mut self.functions, key, || {
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
            let key = (mapping, l.address, lines);
            let i = match self.locations.get(&key) {
                Some(&i) => i,
                None => {
                    let table = &mut self.dict.location_table;
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
                    let i = i32::try_from(table.len() - 1).unwrap_or(i32::MAX);
                    self.locations.insert(key, i);
                    i
                }
            };
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

/// Decodes an `ExportProfilesServiceRequest` (gzip or not), bounded by `limits`.
pub fn decode_request(bytes: &[u8], limits: &Limits) -> Result<ExportProfilesServiceRequest> {
    if bytes.len() as u64 > limits.max_input {
        return Err(Error::TooLarge {
            what: "input",
            limit: limits.max_input,
        });
    }
    let inflated;
    let bytes = if bytes.starts_with(&GZIP_MAGIC) {
        inflated = gunzip(bytes, limits.max_decompressed)?;
        &inflated[..]
    } else {
        bytes
    };
    if (bytes.len() as u64).saturating_mul(MAX_EXPANSION) > limits.max_decoded {
        return Err(Error::TooLarge {
            what: "decoded OTLP request (estimated)",
            limit: limits.max_decoded,
        });
    }
    ExportProfilesServiceRequest::decode(bytes).map_err(|e| {
        Error::Format(format!(
            "OTLP protobuf: {}",
            crate::input::one_line(&e.to_string())
        ))
    })
}

/// Parses an OTLP profiles request (gzip or not) into one validated pprof
/// [`Profile`] (see the module documentation for how profiles merge).
pub fn parse_request(bytes: &[u8], limits: &Limits) -> Result<Profile> {
    from_request(&decode_request(bytes, limits)?)
}

/// One pprof profile from every profile in `request`.
pub fn from_request(request: &ExportProfilesServiceRequest) -> Result<Profile> {
    let dict = request
        .dictionary
        .as_ref()
        .ok_or_else(|| Error::Invalid("OTLP request has no dictionary".into()))?;
    let profiles: Vec<(usize, &otlp::Profile)> = request
        .resource_profiles
        .iter()
        .enumerate()
        .flat_map(|(r, rp)| {
            rp.scope_profiles
                .iter()
                .flat_map(move |s| s.profiles.iter().map(move |p| (r, p)))
        })
        .collect();
    if profiles.is_empty() {
        return Err(Error::Invalid("OTLP request holds no profile".into()));
    }
    Reader::new(dict).read(request, &profiles)
}

struct Reader<'a> {
    dict: &'a otlp::ProfilesDictionary,
    out: Profile,
    strings: HashMap<&'a str, i64>,
}

fn bad(what: &str, index: i32) -> Error {
    Error::Invalid(format!("OTLP {what} index {index} is out of range"))
}

fn at<'t, T>(table: &'t [T], index: i32, what: &str) -> Result<&'t T> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| bad(what, index))
}

impl<'a> Reader<'a> {
    fn new(dict: &'a otlp::ProfilesDictionary) -> Self {
        let mut strings = HashMap::default();
        strings.insert("", 0);
        Reader {
            dict,
            out: Profile {
                string_table: vec![String::new()],
                ..Profile::default()
            },
            strings,
        }
    }

    /// The pprof string index of OTLP string `index`.
    fn string(&mut self, index: i32) -> Result<i64> {
        let s: &'a str = at(&self.dict.string_table, index, "string")?;
        Ok(self.own(s))
    }

    fn own(&mut self, s: &'a str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        self.out.string_table.push(s.to_string());
        let i = self.out.string_table.len() as i64 - 1;
        self.strings.insert(s, i);
        i
    }

    fn value_type(&mut self, vt: Option<&otlp::ValueType>) -> Result<proto::ValueType> {
        let vt = vt.copied().unwrap_or_default();
        Ok(proto::ValueType {
            ty: self.string(vt.type_strindex)?,
            unit: self.string(vt.unit_strindex)?,
        })
    }

    fn read(
        mut self,
        request: &'a ExportProfilesServiceRequest,
        profiles: &[(usize, &'a otlp::Profile)],
    ) -> Result<Profile> {
        let dict = self.dict;
        // Tables keep their OTLP order; pprof ids are index + 1 (id 0 is
        // "none" in pprof, as index 0 is the zero value in OTLP).
        for (i, m) in dict.mapping_table.iter().enumerate().skip(1) {
            let mut build_id = 0;
            for &a in &m.attribute_indices {
                let attr = at(&dict.attribute_table, a, "attribute")?;
                if at(&dict.string_table, attr.key_strindex, "string")? == BUILD_ID_KEY {
                    if let Some(Value::StringValue(s)) =
                        attr.value.as_ref().and_then(|v| v.value.as_ref())
                    {
                        build_id = self.own(s);
                    }
                }
            }
            let filename = self.string(m.filename_strindex)?;
            self.out.mapping.push(proto::Mapping {
                id: i as u64,
                memory_start: m.memory_start,
                memory_limit: m.memory_limit,
                file_offset: m.file_offset,
                filename,
                build_id,
                has_functions: true,
                ..proto::Mapping::default()
            });
        }
        for (i, f) in dict.function_table.iter().enumerate().skip(1) {
            let function = proto::Function {
                id: i as u64,
                name: self.string(f.name_strindex)?,
                system_name: self.string(f.system_name_strindex)?,
                filename: self.string(f.filename_strindex)?,
                start_line: f.start_line,
            };
            self.out.function.push(function);
        }
        for (i, l) in dict.location_table.iter().enumerate().skip(1) {
            at(&dict.mapping_table, l.mapping_index, "mapping")?;
            let mut line = Vec::with_capacity(l.lines.len());
            for ln in &l.lines {
                at(&dict.function_table, ln.function_index, "function")?;
                if ln.function_index != 0 {
                    line.push(proto::Line {
                        function_id: ln.function_index as u64,
                        line: ln.line,
                    });
                }
            }
            self.out.location.push(proto::Location {
                id: i as u64,
                mapping_id: l.mapping_index as u64,
                address: l.address,
                line,
                is_folded: false,
            });
        }

        // Sample types: one per distinct (type, unit), in first-seen order.
        let mut type_of = Vec::with_capacity(profiles.len());
        for (_, p) in profiles {
            let vt = self.value_type(p.sample_type.as_ref())?;
            let index = match self.out.sample_type.iter().position(|t| *t == vt) {
                Some(i) => i,
                None => {
                    self.out.sample_type.push(vt);
                    self.out.sample_type.len() - 1
                }
            };
            type_of.push(index);
        }
        let types = self.out.sample_type.len();
        let first = profiles[0].1;
        self.out.period_type = match first.period_type.as_ref() {
            Some(vt) => Some(self.value_type(Some(vt))?),
            None => None,
        };
        self.out.period = first.period;
        self.out.time_nanos = profiles
            .iter()
            .map(|(_, p)| p.time_unix_nano)
            .filter(|&t| t > 0)
            .min()
            .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX));
        self.out.duration_nanos = profiles
            .iter()
            .map(|(_, p)| i64::try_from(p.duration_nano).unwrap_or(i64::MAX))
            .max()
            .unwrap_or(0);

        let resource_labels = self.resource_labels(request);
        let mut samples: HashMap<(usize, i32, Vec<i32>), usize> = HashMap::default();
        for (&(resource, p), &type_index) in profiles.iter().zip(&type_of) {
            // Resources with the same labels share samples.
            let (by, group) = &resource_labels[resource];
            let group = *group;
            for sample in &p.samples {
                let stack = at(&dict.stack_table, sample.stack_index, "stack")?;
                let value: i64 = if sample.values.is_empty() {
                    // Timestamps only: each is one event.
                    sample.timestamps_unix_nano.len() as i64
                } else {
                    sample.values.iter().fold(0i64, |a, &v| a.saturating_add(v))
                };
                let mut attributes = sample.attribute_indices.clone();
                attributes.sort_unstable();
                let key = (group, sample.stack_index, attributes);
                let slot = match samples.get(&key) {
                    Some(&slot) => slot,
                    None => {
                        let mut location_id = Vec::with_capacity(stack.location_indices.len());
                        for &l in &stack.location_indices {
                            at(&dict.location_table, l, "location")?;
                            if l != 0 {
                                location_id.push(l as u64);
                            }
                        }
                        let mut label = self.labels(&key.2)?;
                        for l in by {
                            // A sample's own attribute wins over its resource's.
                            if !label.iter().any(|own| own.key == l.key) {
                                label.push(*l);
                            }
                        }
                        self.out.sample.push(proto::Sample {
                            location_id,
                            value: vec![0; types],
                            label,
                        });
                        samples.insert(key, self.out.sample.len() - 1);
                        self.out.sample.len() - 1
                    }
                };
                let v = &mut self.out.sample[slot].value[type_index];
                *v = v.saturating_add(value);
            }
        }
        for r in &request.resource_profiles {
            for kv in r.resource.iter().flat_map(|r| &r.attributes) {
                let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                if let Some(text) = value.and_then(plain_value) {
                    let comment = self.own_string(format!("{}={text}", kv.key));
                    if !self.out.comment.contains(&comment) {
                        self.out.comment.push(comment);
                    }
                }
            }
        }
        validate(&self.out)?;
        Ok(self.out)
    }

    /// Per resource of `request`: the labels its samples carry (the scalar
    /// attributes whose values differ between its resources; none when
    /// there is one resource, or when all are alike) and its group, the
    /// first resource with the same labels. Samples add up within a group.
    fn resource_labels(
        &mut self,
        request: &'a ExportProfilesServiceRequest,
    ) -> Vec<(Vec<proto::Label>, usize)> {
        let attributes: Vec<Vec<(&'a str, String)>> = request
            .resource_profiles
            .iter()
            .map(|r| {
                r.resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .filter_map(|kv| {
                        let value = kv.value.as_ref().and_then(|v| v.value.as_ref())?;
                        Some((kv.key.as_str(), plain_value(value)?))
                    })
                    .collect()
            })
            .collect();
        let value_of = |r: &[(&str, String)], key: &str| {
            r.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
        };
        let mut keys: Vec<&'a str> = attributes.iter().flatten().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.retain(|key| {
            let first = value_of(&attributes[0], key);
            attributes.iter().any(|r| value_of(r, key) != first)
        });
        let values: Vec<Vec<Option<String>>> = attributes
            .iter()
            .map(|r| keys.iter().map(|key| value_of(r, key)).collect())
            .collect();
        let mut out: Vec<(Vec<proto::Label>, usize)> = Vec::with_capacity(values.len());
        for (i, these) in values.iter().enumerate() {
            if let Some(group) = values[..i].iter().position(|v| v == these) {
                let labels = out[group].0.clone();
                out.push((labels, group));
                continue;
            }
            let mut labels = Vec::new();
            for (key, value) in keys.iter().zip(these) {
                if let Some(value) = value {
                    labels.push(proto::Label {
                        key: self.own(key),
                        str: self.own_string(value.clone()),
                        ..proto::Label::default()
                    });
                }
            }
            out.push((labels, i));
        }
        out
    }

    fn own_string(&mut self, s: String) -> i64 {
        self.out.string_table.push(s);
        self.out.string_table.len() as i64 - 1
    }

    fn labels(&mut self, attributes: &[i32]) -> Result<Vec<proto::Label>> {
        let dict = self.dict;
        let mut labels = Vec::with_capacity(attributes.len());
        for &a in attributes {
            let attr = at(&dict.attribute_table, a, "attribute")?;
            if a == 0 {
                continue;
            }
            let key = self.string(attr.key_strindex)?;
            let value = attr.value.as_ref().and_then(|v| v.value.as_ref());
            let label = match value {
                Some(Value::IntValue(n)) => proto::Label {
                    key,
                    num: *n,
                    num_unit: self.string(attr.unit_strindex)?,
                    ..proto::Label::default()
                },
                Some(Value::StringValueStrindex(i)) => proto::Label {
                    key,
                    str: self.string(*i)?,
                    ..proto::Label::default()
                },
                Some(Value::StringValue(s)) => proto::Label {
                    key,
                    str: self.own(s),
                    ..proto::Label::default()
                },
                Some(other) => match plain_value(other) {
                    Some(text) => proto::Label {
                        key,
                        str: self.own_string(text),
                        ..proto::Label::default()
                    },
                    None => continue,
                },
                None => continue,
            };
            labels.push(label);
        }
        Ok(labels)
    }
}

/// A scalar attribute value as text (`None` for arrays, maps and bytes).
fn plain_value(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::IntValue(n) => Some(n.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Label;
    use crate::testing::sample_profile;

    fn fixture(name: &str) -> Profile {
        let path = format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        crate::parse(&std::fs::read(path).unwrap(), &Limits::default()).unwrap()
    }

    fn heap_profile() -> Profile {
        fixture("go-heap-after.pb.gz")
    }

    /// The shared sample profile with a string and a numeric label.
    fn labelled_cpu_profile() -> Profile {
        let mut p = sample_profile();
        p.string_table
            .extend(["route", "/a", "/b", "bytes", "size"].map(String::from));
        for (i, sample) in p.sample.iter_mut().enumerate() {
            sample.label = vec![
                Label {
                    key: 6,
                    str: 7 + (i as i64 % 2),
                    ..Label::default()
                },
                Label {
                    key: 10,
                    num: 64 << i,
                    num_unit: 9,
                    ..Label::default()
                },
            ];
        }
        p
    }

    /// The request [`encode_request`] writes, decoded.
    fn to_request(profiles: &[&Profile], resource: &ResourceInfo) -> ExportProfilesServiceRequest {
        ExportProfilesServiceRequest::decode(&encode_request(profiles, resource)[..]).unwrap()
    }

    #[test]
    fn the_bytes_are_what_prost_writes_for_the_request() {
        let cpu = labelled_cpu_profile();
        let heap = heap_profile();
        // 300 distinct stacks over the two locations: the bits of 1..=300.
        let mut tree = sample_profile();
        tree.sample = (1u32..=300)
            .map(|i| proto::Sample {
                location_id: (0..32 - i.leading_zeros())
                    .map(|b| 1 + u64::from(i >> b & 1))
                    .collect(),
                value: vec![i64::from(i)],
                label: vec![],
            })
            .collect();
        let mut empty_stack = sample_profile();
        empty_stack.sample[2].location_id.clear();
        // A key twice in one sample: OTLP keeps the first.
        let mut repeated = labelled_cpu_profile();
        let first = repeated.sample[0].label[0];
        repeated.sample[0]
            .label
            .push(proto::Label { str: 8, ..first });
        let inputs: [&[&Profile]; 5] =
            [&[&cpu, &heap], &[&tree], &[&empty_stack], &[&repeated], &[]];
        for (i, profiles) in inputs.into_iter().enumerate() {
            let bytes = encode_request(profiles, &ResourceInfo::this_process("svc", None));
            let decoded = ExportProfilesServiceRequest::decode(&bytes[..]).unwrap();
            assert_eq!(decoded.encode_to_vec(), bytes, "request {i}");
        }
        let req = to_request(&[&tree], &ResourceInfo::service("svc"));
        let dict = req.dictionary.unwrap();
        assert_eq!(
            dict.stack_table.len(),
            301,
            "300 distinct stacks and the zero one"
        );
    }

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

    fn totals(p: &Profile) -> Vec<i64> {
        (0..p.sample_type.len())
            .map(|i| crate::total(p, i))
            .collect()
    }

    #[test]
    fn one_profile_per_sample_type_sharing_one_dictionary() {
        let heap = heap_profile();
        let cpu = labelled_cpu_profile();
        let req = to_request(
            &[&cpu, &heap],
            &ResourceInfo::this_process("svc", Some("1.2".into())),
        );
        let scope = &req.resource_profiles[0].scope_profiles[0];
        assert_eq!(
            scope.profiles.len(),
            cpu.sample_type.len() + heap.sample_type.len()
        );
        let dict = req.dictionary.as_ref().unwrap();
        assert_eq!(dict.string_table[0], "");
        assert_eq!(dict.location_table[0], otlp::Location::default());
        assert_eq!(dict.stack_table[0], otlp::Stack::default());
        assert_eq!(dict.attribute_table[0], otlp::KeyValueAndUnit::default());
        let attrs: Vec<&str> = req.resource_profiles[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert!(
            attrs.contains(&"service.name") && attrs.contains(&"process.pid"),
            "{attrs:?}"
        );
        // Values per type sum to the pprof's.
        for (i, p) in scope.profiles.iter().enumerate() {
            let (src, t) = if i < cpu.sample_type.len() {
                (&cpu, i)
            } else {
                (&heap, i - cpu.sample_type.len())
            };
            let sum: i64 = p.samples.iter().flat_map(|s| &s.values).sum();
            assert_eq!(sum, crate::total(src, t), "profile {i}");
        }
    }

    #[test]
    fn round_trip_keeps_totals_names_and_labels() {
        let cpu = labelled_cpu_profile();
        let bytes = encode_request(&[&cpu], &ResourceInfo::service("svc"));
        let back = parse_request(&bytes, &Limits::default()).unwrap();
        assert_eq!(totals(&back), totals(&cpu));
        assert_eq!(
            crate::fold::fold(&back, 0),
            crate::fold::fold(&cpu, 0),
            "same stacks and counts"
        );
        let labels = |p: &Profile| {
            let mut v: Vec<String> = p
                .sample
                .iter()
                .flat_map(|s| &s.label)
                .map(|l| {
                    format!(
                        "{}={}{}{}",
                        crate::string(p, l.key),
                        crate::string(p, l.str),
                        l.num,
                        crate::string(p, l.num_unit)
                    )
                })
                .collect();
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(labels(&back), labels(&cpu));
        assert!(
            back.comment
                .iter()
                .any(|&c| crate::string(&back, c) == "service.name=svc")
        );
    }

    #[test]
    fn resources_told_apart_become_labels() {
        let cpu = labelled_cpu_profile();
        let mut req = to_request(&[&cpu], &ResourceInfo::this_process("api", None));
        let mut other = req.resource_profiles[0].clone();
        other.resource = Some(ResourceInfo::this_process("worker", None).to_resource());
        req.resource_profiles.push(other);
        let back = from_request(&req).unwrap();
        let doubled: Vec<i64> = totals(&cpu).iter().map(|t| t * 2).collect();
        assert_eq!(totals(&back), doubled);
        // Only what differs is a label: the same host and pid are not.
        let keys: std::collections::BTreeSet<&str> = back
            .sample
            .iter()
            .flat_map(|s| &s.label)
            .map(|l| crate::string(&back, l.key))
            .collect();
        assert!(keys.contains("service.name"), "{keys:?}");
        assert!(
            !keys.contains("host.name") && !keys.contains("process.pid"),
            "{keys:?}"
        );
        // The route labels the samples had are still there.
        assert!(keys.contains("route"), "{keys:?}");
        for service in ["api", "worker"] {
            let mut one = back.clone();
            let focus = format!("service.name={service}");
            crate::Filter::with(&crate::FilterOptions {
                tagfocus: Some(&focus),
                ..Default::default()
            })
            .unwrap()
            .apply(&mut one);
            assert_eq!(totals(&one), totals(&cpu), "{service}");
        }
        // A resource without attributes after labelled ones is a group of
        // its own (it has no service.name label), and two alike add up.
        let mut three = req.clone();
        let mut bare = three.resource_profiles[0].clone();
        bare.resource = None;
        three.resource_profiles.push(bare);
        let mut again = three.resource_profiles[0].clone();
        again.resource = Some(ResourceInfo::this_process("api", None).to_resource());
        three.resource_profiles.push(again);
        let back = from_request(&three).unwrap();
        let share = |p: &Profile, focus: Option<&str>, ignore: Option<&str>| {
            let mut one = p.clone();
            crate::Filter::with(&crate::FilterOptions {
                tagfocus: focus,
                tagignore: ignore,
                ..Default::default()
            })
            .unwrap()
            .apply(&mut one);
            (totals(&one), one.sample.len())
        };
        let once = (totals(&cpu), cpu.sample.len());
        let twice = (doubled.clone(), cpu.sample.len());
        assert_eq!(share(&back, Some("service.name=api"), None), twice);
        assert_eq!(share(&back, Some("service.name=worker"), None), once);
        assert_eq!(share(&back, None, Some("service.name=.*")), once);

        // One resource: no resource labels.
        let single = from_request(&to_request(&[&cpu], &ResourceInfo::service("api"))).unwrap();
        assert!(
            single
                .sample
                .iter()
                .flat_map(|s| &s.label)
                .all(|l| crate::string(&single, l.key) != "service.name")
        );
    }

    #[test]
    fn bad_indices_are_errors_not_panics() {
        let cpu = labelled_cpu_profile();
        let mut req = to_request(&[&cpu], &ResourceInfo::service("svc"));
        req.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = 1 << 20;
        let err = from_request(&req).unwrap_err().to_string();
        assert!(err.contains("stack index"), "{err}");
        let mut req = to_request(&[&cpu], &ResourceInfo::service("svc"));
        req.dictionary.as_mut().unwrap().function_table[1].name_strindex = -3;
        assert!(from_request(&req).is_err());
        let mut req = to_request(&[&cpu], &ResourceInfo::service("svc"));
        req.dictionary = None;
        assert!(from_request(&req).is_err());
    }

    #[test]
    fn oversized_requests_are_refused_before_decoding() {
        let cpu = labelled_cpu_profile();
        let bytes = encode_request(&[&cpu], &ResourceInfo::service("svc"));
        let limits = Limits {
            max_decoded: bytes.len() as u64,
            ..Limits::default()
        };
        assert!(matches!(
            parse_request(&bytes, &limits),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn parse_reads_otlp_and_pprof_still_wins() {
        let heap = heap_profile();
        let bytes = encode_request(&[&heap], &ResourceInfo::service("svc"));
        let back = crate::parse(&bytes, &Limits::default()).unwrap();
        assert_eq!(totals(&back), totals(&heap));
        // gzip'd, as OTLP/HTTP bodies often are.
        let gz = crate::gzip(&bytes).unwrap();
        let back = crate::parse(&gz, &Limits::default()).unwrap();
        assert_eq!(totals(&back), totals(&heap));
        // The web UI's merged decoder falls back the same way.
        for input in [&bytes[..], &gz[..]] {
            let back = crate::parse_merged(input, &Limits::default()).unwrap();
            assert_eq!(totals(&back), totals(&heap));
        }
        // A pprof profile is read as pprof.
        let pprof = crate::proto::Profile::encode_to_vec(&heap);
        assert_eq!(crate::parse(&pprof, &Limits::default()).unwrap(), heap);
        // Neither: one line naming both attempts.
        let err = crate::parse(&[0x0a, 0x02, 0x08], &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("as pprof") && err.contains("as OTLP"), "{err}");
    }
}

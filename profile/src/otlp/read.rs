//! OTLP → pprof: an export request read into one validated profile.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::profiles::v1development as otlp;
use prost::Message;
use rustc_hash::FxHashMap as HashMap;

use super::{BUILD_ID_KEY, ExportProfilesServiceRequest};
use crate::error::{Error, Result};
use crate::gzip::{GZIP_MAGIC, gunzip};
use crate::limits::Limits;
use crate::proto::{self, Profile};
use crate::validate::validate;

/// Decoding can expand small messages this many times (an empty 2-byte
/// `Sample` becomes an ~80-byte struct); inputs are refused when their size
/// times this exceeds [`Limits::max_decoded`].
const MAX_EXPANSION: u64 = 40;

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
            crate::error::one_line(&e.to_string())
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

use opentelemetry_proto::tonic::profiles::v1development as otlp;
use prost::Message;

use super::*;
use crate::error::Error;
use crate::limits::Limits;
use crate::proto::{self, Label, Profile};
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
    let inputs: [&[&Profile]; 5] = [&[&cpu, &heap], &[&tree], &[&empty_stack], &[&repeated], &[]];
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

fn totals(p: &Profile) -> Vec<i64> {
    (0..p.sample_type.len())
        .map(|i| p.sample_total(i))
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
        assert_eq!(sum, src.sample_total(t), "profile {i}");
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
                    p.string_at(l.key),
                    p.string_at(l.str),
                    l.num,
                    p.string_at(l.num_unit)
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
            .any(|&c| back.string_at(c) == "service.name=svc")
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
        .map(|l| back.string_at(l.key))
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
            .all(|l| single.string_at(l.key) != "service.name")
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

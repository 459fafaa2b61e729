//! What goes on the wire: Grafana Pyroscope's HTTP ingest (a multipart
//! form with the pprof in `profile` and a `sample_type_config`) and OTLP
//! profiles over HTTP (one `ExportProfilesServiceRequest` per period).

use std::sync::atomic::AtomicU32;
use std::time::{SystemTime, UNIX_EPOCH};

use profscope_profile::Profile;
use profscope_profile::otlp::{self, ResourceInfo};

use super::config::{Auth, Endpoint, PushConfig};

/// One request to make, with everything needed to make it again.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) url: String,
    pub(crate) content_type: String,
    pub(crate) content_encoding: Option<&'static str>,
    pub(crate) body: Vec<u8>,
    pub(crate) auth: Option<Auth>,
    pub(crate) tenant: Option<String>,
    /// Failed attempts so far.
    pub(crate) attempts: AtomicU32,
}

impl Delivery {
    /// Bytes it holds (what the queue's cap counts).
    pub(crate) fn size(&self) -> usize {
        self.body.len() + self.url.len() + self.content_type.len()
    }

    #[cfg(test)]
    pub(crate) fn for_test(body: Vec<u8>) -> Self {
        Delivery {
            url: String::new(),
            content_type: String::new(),
            content_encoding: None,
            body,
            auth: None,
            tenant: None,
            attempts: AtomicU32::new(0),
        }
    }
}

/// One period's profiles, by Pyroscope name suffix (`cpu`, `heap`, `tasks`).
#[derive(Debug)]
pub(crate) struct Period {
    pub(crate) from: SystemTime,
    pub(crate) until: SystemTime,
    /// CPU sampling frequency, Pyroscope's `sampleRate`.
    pub(crate) frequency: u32,
    pub(crate) profiles: Vec<(&'static str, Profile)>,
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Pyroscope's label grammar is `name{k=v,…}`: keys and values lose the
/// characters that would break it.
fn label_part(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '{' | '}' | ',' | '=' | '"' | '\'' => '_',
            c if c.is_whitespace() || c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// The labels every profile carries: `service_name`, `host`, `version`
/// and the configured ones.
fn common_labels(config: &PushConfig) -> Vec<(String, String)> {
    let mut labels = vec![("service_name".to_string(), config.service_name.clone())];
    if let Some(host) = otlp::host_name() {
        labels.push(("host".into(), host));
    }
    if let Some(v) = &config.version {
        labels.push(("version".into(), v.clone()));
    }
    labels.extend(config.labels.iter().cloned());
    labels
}

/// `app.cpu{service_name=app,host=h,k=v}`.
pub(crate) fn pyroscope_name(config: &PushConfig, kind: &str) -> String {
    let labels: Vec<String> = common_labels(config)
        .iter()
        .map(|(k, v)| format!("{}={}", label_part(k), label_part(v)))
        .collect();
    format!(
        "{}.{kind}{{{}}}",
        label_part(&config.service_name),
        labels.join(",")
    )
}

/// How Pyroscope should read each sample type: alloc_* arrive as the growth
/// over the period (not cumulative), in-use figures average over time.
fn sample_type_config(profile: &Profile) -> String {
    let mut map = serde_json::Map::new();
    for vt in &profile.sample_type {
        let ty = profile.string_at(vt.ty);
        let unit = profile.string_at(vt.unit);
        let entry = match ty {
            "samples" => {
                serde_json::json!({"display-name": "cpu", "units": "samples", "sampled": true})
            }
            "cpu" => serde_json::json!({"units": "nanoseconds"}),
            "alloc_objects" => serde_json::json!({"units": "objects", "cumulative": false}),
            "alloc_space" => serde_json::json!({"units": "bytes", "cumulative": false}),
            "inuse_objects" => serde_json::json!({"units": "objects", "aggregation": "average"}),
            "inuse_space" => serde_json::json!({"units": "bytes", "aggregation": "average"}),
            _ => serde_json::json!({"units": unit, "aggregation": "average"}),
        };
        map.insert(ty.to_string(), entry);
    }
    serde_json::Value::Object(map).to_string()
}

/// A multipart boundary that does not occur in `parts`.
fn boundary(parts: &[&[u8]]) -> String {
    let mut rng = super::Rng::seeded();
    loop {
        let b = format!("profscope-{:016x}", rng.next());
        if !parts
            .iter()
            .any(|p| memchr::memmem::find(p, b.as_bytes()).is_some())
        {
            return b;
        }
    }
}

fn multipart(fields: &[(&str, &str, &[u8])]) -> (String, Vec<u8>) {
    let b = boundary(&fields.iter().map(|f| f.2).collect::<Vec<_>>());
    let mut body = Vec::with_capacity(fields.iter().map(|f| f.2.len() + 160).sum());
    for (name, filename, data) in fields {
        body.extend_from_slice(
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={b}"), body)
}

/// `POST {url}/ingest?name=…&from=…&until=…&spyName=profscope[&sampleRate=…]`.
pub(crate) fn pyroscope(
    endpoint: &Endpoint,
    config: &PushConfig,
    period: &Period,
    kind: &str,
    profile: &Profile,
) -> Result<Delivery, profscope_profile::Error> {
    let pprof = profscope_profile::write_gz(profile)?;
    let types = sample_type_config(profile);
    let (content_type, body) = multipart(&[
        ("profile", "profile.pprof", &pprof),
        (
            "sample_type_config",
            "sample_type_config.json",
            types.as_bytes(),
        ),
    ]);
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("name", &pyroscope_name(config, kind))
        .append_pair("from", &unix_seconds(period.from).to_string())
        .append_pair("until", &unix_seconds(period.until).to_string())
        .append_pair("spyName", "profscope");
    if kind == "cpu" {
        query.append_pair("sampleRate", &period.frequency.to_string());
    }
    Ok(Delivery {
        url: format!("{}/ingest?{}", endpoint.url, query.finish()),
        content_type,
        content_encoding: None,
        body,
        auth: endpoint.auth.clone(),
        tenant: endpoint.tenant.clone(),
        attempts: AtomicU32::new(0),
    })
}

/// `POST {url}/v1development/profiles`: every profile of the period in one
/// request sharing one dictionary.
pub(crate) fn otlp(
    endpoint: &Endpoint,
    config: &PushConfig,
    period: &Period,
) -> Result<Delivery, profscope_profile::Error> {
    let mut resource =
        ResourceInfo::this_process(config.service_name.clone(), config.version.clone());
    resource.attributes = config.labels.clone();
    let profiles: Vec<&Profile> = period.profiles.iter().map(|(_, p)| p).collect();
    let raw = otlp::encode_request(&profiles, &resource);
    let (body, content_encoding) = if config.gzip {
        (profscope_profile::gzip(&raw)?, Some("gzip"))
    } else {
        (raw, None)
    };
    Ok(Delivery {
        url: format!("{}{}", endpoint.url, otlp::HTTP_PATH),
        content_type: "application/x-protobuf".into(),
        content_encoding,
        body,
        auth: endpoint.auth.clone(),
        tenant: endpoint.tenant.clone(),
        attempts: AtomicU32::new(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_pyroscope_grammar() {
        let config = PushConfig::new("check out")
            .version("1.0")
            .label("env", "prod,eu={x}");
        let name = pyroscope_name(&config, "cpu");
        assert!(
            name.starts_with("check_out.cpu{service_name=check_out,"),
            "{name}"
        );
        assert!(name.ends_with(",version=1.0,env=prod_eu__x_}"), "{name}");
        assert_eq!(name.matches('{').count(), 1);
    }

    #[test]
    fn multipart_boundary_is_not_in_the_parts() {
        let (ct, body) = multipart(&[("profile", "p", b"abc"), ("x", "y", b"--")]);
        let b = ct.rsplit_once('=').unwrap().1;
        assert_eq!(
            body.windows(b.len()).filter(|w| *w == b.as_bytes()).count(),
            3
        );
    }
}

//! pprof ⇄ OTLP profiles (`opentelemetry.proto.profiles.v1development`,
//! proto 1.10.0, the types of the `opentelemetry-proto` crate 0.33.1 this
//! module is pinned to).
//!
//! The two models are close: OTLP moves pprof's tables into one
//! request-wide [`ProfilesDictionary`](opentelemetry_proto::tonic::profiles::v1development::ProfilesDictionary) (entry 0 of
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

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
pub use read::{decode_request, from_request, parse_request};
pub use write::encode_request;

mod read;
#[cfg(test)]
mod tests;
mod write;

/// The OTLP/HTTP path of the profiles signal, appended to a collector's base URL.
pub const HTTP_PATH: &str = "/v1development/profiles";

/// The instrumentation scope profscope writes its profiles under.
pub const SCOPE_NAME: &str = "profscope";

/// The attribute key OTel's semantic conventions give a GNU build id.
const BUILD_ID_KEY: &str = "process.executable.build_id.gnu";

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

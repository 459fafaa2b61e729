# Decodes an OTLP ExportProfilesServiceRequest with the PyPI
# opentelemetry-proto package (an independent decoder) and prints a JSON
# summary: resource attributes, each profile's type/unit/time/sum, and the
# dictionary's function names.
import gzip
import json
import sys

from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2

data = open(sys.argv[1], "rb").read()
if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
req = profiles_service_pb2.ExportProfilesServiceRequest()
req.ParseFromString(data)
d = req.dictionary
strings = list(d.string_table)
assert strings[0] == "", "string_table[0] must be empty"
out = {"resource": {}, "profiles": [], "functions": [], "attributes": []}
for rp in req.resource_profiles:
    for kv in rp.resource.attributes:
        v = kv.value
        out["resource"][kv.key] = v.string_value if v.HasField("string_value") else v.int_value
    for sp in rp.scope_profiles:
        for p in sp.profiles:
            total = 0
            for s in p.samples:
                assert 0 < s.stack_index < len(d.stack_table), "stack index"
                for li in d.stack_table[s.stack_index].location_indices:
                    assert 0 < li < len(d.location_table), "location index"
                total += sum(s.values)
            out["profiles"].append({
                "scope": sp.scope.name,
                "type": strings[p.sample_type.type_strindex],
                "unit": strings[p.sample_type.unit_strindex],
                "time_unix_nano": p.time_unix_nano,
                "duration_nano": p.duration_nano,
                "sum": total,
            })
for f in d.function_table:
    out["functions"].append(strings[f.name_strindex])
for a in d.attribute_table[1:]:
    out["attributes"].append(strings[a.key_strindex])
print(json.dumps(out))

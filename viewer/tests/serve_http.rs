//! HTTP-level tests of `profscope serve`: the pages, the actions, the
//! capture flow against a stub agent, and every bad request.

mod serve_common;

use std::time::{Duration, Instant};

use serve_common::{Server, request, seed, stub_agent};

fn seeded() -> (Server, Vec<profscope::store::Snapshot>) {
    let server = Server::start();
    let snaps = seed(&server.store);
    (server, snaps)
}

#[test]
fn list_groups_by_source_newest_first() {
    let (server, snaps) = seeded();
    let r = server.get("/");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    for s in &snaps {
        assert!(
            r.body
                .contains(&format!("href=\"/snapshot/{}\"", s.meta.id)),
            "{}",
            s.meta.id
        );
    }
    // One group per source; the heap group lists `after` before `before`.
    assert_eq!(
        r.body.matches("<section class=\"group\">").count(),
        3,
        "{}",
        r.body
    );
    let after = r
        .body
        .find(&format!("/snapshot/{}\"", snaps[2].meta.id))
        .unwrap();
    let before = r
        .body
        .find(&format!("/snapshot/{}\"", snaps[1].meta.id))
        .unwrap();
    assert!(after < before, "newest first");
    // The group holding the newest snapshot (allocs, imported) comes first.
    let imported = r.body.find("imported (no source URL)").unwrap();
    let heap = r.body.find("/debug/pprof/heap</h2>").unwrap();
    assert!(imported < heap);
    for col in ["time", "label", "kind", "size"] {
        assert!(r.body.contains(&format!("<th>{col}</th>")), "{col}");
    }
    assert!(r.body.contains("action=\"/capture\""));
    assert!(r.body.contains("action=\"/diff\""));
    // The page's own assets, from the binary.
    let js = server.get("/assets/serve.js");
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().contains("javascript"));
    assert_eq!(server.get("/assets/serve.css").status, 200);
    assert_eq!(server.get("/assets/nope.js").status, 404);
}

#[test]
fn empty_store_lists_nothing() {
    let server = Server::start();
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("No snapshots yet"), "{}", r.body);
}

#[test]
fn snapshot_page_inlines_the_flamegraph_and_the_top_table() {
    let (server, snaps) = seeded();
    let cpu = &snaps[0].meta.id;
    let r = server.get(&format!("/snapshot/{cpu}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let b = &r.body;
    assert!(b.contains("<svg version=\"1.1\""), "inline svg");
    assert!(b.contains("<svg id=\"frames\""), "frames");
    assert!(b.matches("fg:w=").count() > 10);
    for forbidden in [
        "<img",
        "<iframe",
        "<object",
        "<embed",
        "onload=",
        "<![CDATA[",
    ] {
        assert!(!b.contains(forbidden), "{forbidden}");
    }
    // The only script is the page's own, loaded from this origin.
    assert_eq!(b.matches("<script").count(), 1);
    assert!(b.contains("<script src=\"/assets/serve.js\" defer></script>"));
    assert!(
        !b.contains("http://www.w3.org/Graphics/SVG/1.1/DTD"),
        "no doctype inside"
    );
    assert!(
        b.contains("id=\"fg-search\"")
            && b.contains("id=\"fg-reset\"")
            && b.contains("id=\"fg-icicle\"")
    );
    assert!(b.contains("<table class=\"toptable\" data-total="));
    assert!(b.contains("data-search=\""));
    // The top table's first function is the one `profscope top` prints first.
    let top = profscope::app::top(
        &profscope::app::Input::new(cpu.clone()),
        Some(&server.store),
        &profscope::render::TopOptions::new(1, false),
    )
    .unwrap();
    let first = top
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    assert!(b.contains(&format!("data-search=\"{first}\"")), "{first}");

    // Sample-type switch.
    let heap = &snaps[1].meta.id;
    let r = server.get(&format!("/snapshot/{heap}"));
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("<option value=\"inuse_space\" selected>"),
        "default type"
    );
    let r = server.get(&format!("/snapshot/{heap}?type=alloc_objects"));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<option value=\"alloc_objects\" selected>"));
    assert!(r.body.contains("alloc_objects (count)"));
    let r = server.get(&format!("/snapshot/{heap}?type=nope"));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("no sample type"), "{}", r.body);

    // Only the stacks under one frame path.
    let r = server.get(&format!("/snapshot/{cpu}?focus=net%2Fhttp.(*conn).serve"));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<p class=\"focus\">"));
    assert!(
        r.body.contains("<title>net/http.(*conn).serve ("),
        "focused root drawn"
    );

    // Download.
    let r = request(
        server.addr,
        "GET",
        &format!("/snapshot/{heap}/profile.pb.gz"),
        &[],
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
}

#[test]
fn view_settings_and_the_peek_endpoint() {
    let (server, snaps) = seeded();
    let cpu = &snaps[0].meta.id;
    // The icicle is the default; icicle=0 draws a flame graph.
    let r = server.get(&format!("/snapshot/{cpu}"));
    assert!(r.body.contains("data-icicle=\"1\"") && r.body.contains("id=\"fg-icicle\" checked"));
    let r = server.get(&format!("/snapshot/{cpu}?icicle=0"));
    assert!(r.body.contains("data-icicle=\"0\"") && !r.body.contains("id=\"fg-icicle\" checked"));
    // The switches, checked by default; the form says it sent them.
    assert!(r.body.contains("id=\"sw-short\" data-autosubmit checked"));
    assert!(r.body.contains("id=\"sw-hide\" data-autosubmit checked"));
    assert!(r.body.contains("id=\"sw-my\" data-autosubmit>"));
    assert!(
        r.body
            .contains("<input type=\"hidden\" name=\"v\" value=\"1\">")
    );
    // Label filters: malformed is a 400 naming the syntax; a key no sample
    // has leaves an empty graph, not an error.
    let r = server.get(&format!("/snapshot/{cpu}?tag=nokey"));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("KEY=VALUE"), "{}", r.body);
    let r = server.get(&format!("/snapshot/{cpu}?tag=thread%3D%5Enobody%24"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("No samples"), "{}", r.body);
    let r = server.get(&format!("/snapshot/{cpu}?tag=k%3D(unclosed"));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = server.get(&format!("/snapshot/{cpu}?notag=nokey"));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("-tagignore"), "{}", r.body);

    // Peek: JSON with the shell's peek and list of one function.
    let r = server.get(&format!("/snapshot/{cpu}/peek?fn=net%2Fhttp.(*conn).serve"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let peek = j["peek"].as_str().unwrap();
    assert!(peek.contains("| net/http.(*conn).serve"), "{peek}");
    assert!(
        peek.contains("|   net/http.serverHandler.ServeHTTP"),
        "{peek}"
    );
    let entry = &j["entries"][0];
    assert_eq!(entry["name"], "net/http.(*conn).serve");
    assert!(
        entry["callees"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "net/http.serverHandler.ServeHTTP"),
        "{entry}"
    );
    assert!(entry["cum_share"].as_str().unwrap().ends_with('%'));
    let source = j["source"].as_str().unwrap();
    assert!(
        source.contains("ROUTINE ======================== net/http.(*conn).serve"),
        "{source}"
    );
    assert_eq!(server.get(&format!("/snapshot/{cpu}/peek")).status, 400);
    let r = server.get(&format!("/snapshot/{cpu}/peek?fn=no.such.function"));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("no function matches"), "{}", r.body);
    assert_eq!(
        server.get("/snapshot/20990101-000000-cpu/peek?fn=x").status,
        404
    );
    assert_eq!(server.get("/snapshot/..%2Fx/peek?fn=x").status, 400);
}

#[test]
fn high_cardinality_labels_stay_bounded() {
    // 500 samples, each with its own span id: the dropdown and the by-label
    // table list 200 values and sum up the rest.
    let mut p = profscope_test_support::large_profile(500, 500, 1);
    p.string_table.push("span".into());
    let key = p.string_table.len() as i64 - 1;
    for (i, s) in p.sample.iter_mut().enumerate() {
        p.string_table.push(format!("span-{i:04}"));
        s.label.push(profscope_profile::Label {
            key,
            str: p.string_table.len() as i64 - 1,
            ..Default::default()
        });
    }
    let server = Server::start();
    let snap = server
        .store
        .save(
            &profscope_profile::write_gz(&p).unwrap(),
            profscope::store::NewSnapshot::new(None, Some("spans".into())).kind("cpu"),
        )
        .unwrap();
    let r = server.get(&format!("/snapshot/{}", snap.meta.id));
    assert_eq!(r.status, 200, "{}", r.body);
    let table = r.body.split("id=\"by-label\"").nth(1).unwrap();
    let table = table.split("</table>").next().unwrap();
    assert_eq!(table.matches("<tr data-value=").count(), 200);
    assert!(table.contains("300 more values"), "{table}");
    let select = r.body.split("data-key=\"span\"").nth(1).unwrap();
    let select = select.split("</select>").next().unwrap();
    assert_eq!(select.matches("<option").count(), 201, "all + 200 values");
}

#[test]
fn unknown_snapshots_are_404_and_escapes_are_refused() {
    let (server, snaps) = seeded();
    let r = server.get("/snapshot/20990101-000000-cpu");
    assert_eq!(r.status, 404);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("no snapshot"), "{}", r.body);
    assert_eq!(server.get("/no/such/page").status, 404);
    assert_eq!(server.get("/capture/999").status, 404);
    assert_eq!(server.get("/capture/abc").status, 400);

    let id = &snaps[0].meta.id;
    let bad = [
        "/snapshot/..",
        "/snapshot/%2e%2e",
        "/snapshot/..%2F..%2Fetc%2Fpasswd",
        "/snapshot/%2Fetc%2Fpasswd",
        "/snapshot/%2F",
        "/snapshot/a%5Cb",
        "/snapshot/C:%5Cwindows",
        "/snapshot/.hidden",
        "/snapshot/x%00y",
        "/snapshot/..%2Fsnapshots%2Fx/profile.pb.gz",
        "/diff?base=..%2Fx&new=y",
        "/diff?base=%2Fetc%2Fpasswd&new=x",
    ];
    for path in bad {
        let r = server.get(path);
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.status);
        assert!(!r.body.contains("root:"), "{path}");
    }
    for path in [
        "/snapshot/../../etc/passwd",
        "/snapshot/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%2F..%2Fsrc%2Flib.rs",
        "/assets/../Cargo.toml",
        "//etc/passwd",
        &format!("/snapshot/{id}/../../../../etc/passwd"),
    ] {
        let r = server.get(path);
        assert!(r.status == 400 || r.status == 404, "{path}: {}", r.status);
        assert!(
            !r.body.contains("root:") && !r.body.contains("[package]"),
            "{path}"
        );
    }
    // Valid-looking but unknown ids are 404, not 400.
    assert_eq!(server.get("/diff?base=nope&new=nope2").status, 404);
    assert_eq!(server.post("/snapshot/..%2Fx/delete", "").status, 400);
    assert_eq!(server.post("/snapshot/nope/delete", "").status, 404);
    assert_eq!(server.post("/snapshot/..%2Fx/label", "label=x").status, 400);
    assert_eq!(server.store.list().unwrap().len(), 4);
}

#[test]
fn relabel_and_delete() {
    let (server, snaps) = seeded();
    let id = &snaps[3].meta.id;
    let r = server.post(&format!("/snapshot/{id}/label"), "label=big+one");
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location").as_deref(), Some("/"));
    assert_eq!(
        server.store.get(id).unwrap().unwrap().meta.label.as_deref(),
        Some("big one")
    );
    assert!(server.get("/").body.contains("value=\"big one\""));
    let r = server.post(&format!("/snapshot/{id}/label"), "label=a%0Ab");
    assert_eq!(r.status, 400);

    let r = server.post(&format!("/snapshot/{id}/delete"), "");
    assert_eq!(r.status, 303);
    assert!(server.store.get(id).unwrap().is_none());
    assert!(!snaps[3].profile_path.exists());
    assert_eq!(server.get(&format!("/snapshot/{id}")).status, 404);
    assert!(!server.get("/").body.contains(id.as_str()));
}

#[test]
fn cross_site_posts_and_foreign_hosts_are_refused() {
    let (server, snaps) = seeded();
    let id = &snaps[0].meta.id;
    let path = format!("/snapshot/{id}/delete");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = request(
        server.addr,
        "POST",
        &path,
        &[form[0], ("Origin", "http://evil.example")],
        "",
    );
    assert_eq!(r.status, 403);
    let r = request(
        server.addr,
        "POST",
        &path,
        &[form[0], ("Sec-Fetch-Site", "cross-site")],
        "",
    );
    assert_eq!(r.status, 403);
    // DNS rebinding: a page of evil.example resolving to 127.0.0.1.
    let r = request(
        server.addr,
        "GET",
        "/",
        &[("Host", "evil.example:7070")],
        "",
    );
    assert_eq!(r.status, 403);
    assert!(server.store.get(id).unwrap().is_some());
    // Same origin is fine.
    let origin = server.base();
    let r = request(
        server.addr,
        "POST",
        &path,
        &[form[0], ("Origin", &origin)],
        "",
    );
    assert_eq!(r.status, 303);
    let r = request(server.addr, "GET", "/", &[("Host", "localhost")], "");
    assert_eq!(r.status, 200);
}

#[test]
fn diff_page() {
    let (server, snaps) = seeded();
    let (before, after) = (&snaps[1].meta.id, &snaps[2].meta.id);
    let r = server.get("/diff");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("name=\"base\"") && r.body.contains("name=\"new\""));

    let r = server.get(&format!("/diff?base={before}&new={after}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<svg id=\"frames\""));
    assert!(r.body.contains("NEW vs BASE"));
    assert!(r.body.contains("<table class=\"toptable\" data-total="));
    // The table is `profscope diff`'s: the same first function.
    let out = profscope::app::diff(
        &profscope::app::Input::new(before.clone()),
        &profscope::app::Input::new(after.clone()),
        Some(&server.store),
        &profscope::diff::DiffOptions::default(),
        &profscope::render::TopOptions::new(1, false),
        false,
    )
    .unwrap();
    let first = out
        .table
        .lines()
        .last()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    assert!(
        r.body.contains(&format!("data-search=\"{first}\"")),
        "{first}"
    );
    assert!(r.body.contains("class=\"grew\"") || r.body.contains("class=\"shrank\""));

    let r = server.get(&format!(
        "/diff?base={before}&new={after}&normalize=1&type=alloc_space"
    ));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("BASE scaled by"));

    // A CPU profile against a heap profile: refused with the reason.
    let r = server.get(&format!("/diff?base={}&new={after}", snaps[0].meta.id));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("cannot diff"), "{}", r.body);
    assert_eq!(server.get(&format!("/diff?base={before}")).status, 400);
}

#[test]
fn capture_rejects_non_http_urls() {
    let server = Server::start();
    for url in [
        "file%3A%2F%2F%2Fetc%2Fpasswd",
        "javascript%3Aalert(1)",
        "%2Fetc%2Fpasswd",
        "ftp%3A%2F%2Fh%2Fx",
        "",
    ] {
        let r = server.post("/capture", &format!("url={url}&kind=heap&seconds=0"));
        assert_eq!(r.status, 400, "{url}");
        assert!(r.body.contains("http"), "{}", r.body);
    }
    let r = server.post("/capture", "url=http%3A%2F%2Fh&kind=bogus&seconds=0");
    assert_eq!(r.status, 400);
    let r = server.post("/capture", "url=http%3A%2F%2Fh&kind=cpu&seconds=9999");
    assert_eq!(r.status, 400);
    assert!(server.store.list().unwrap().is_empty());
}

fn wait_done(server: &Server, job: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = server.get(&format!("{job}/status"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        if v["state"] != "running" || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn capture_from_an_agent() {
    let server = Server::start();
    let agent = stub_agent(server.rt());
    let form = format!(
        "url={}&kind=heap&seconds=1&label=captured",
        agent.replace(':', "%3A").replace('/', "%2F")
    );
    let r = server.post("/capture", &form);
    assert_eq!(r.status, 303, "{}", r.body);
    let job = r.header("location").unwrap();
    assert!(job.starts_with("/capture/"), "{job}");
    // While it runs: the progress page.
    let r = server.get(&job);
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("<progress") && r.body.contains("/status"),
        "{}",
        r.body
    );
    let v = wait_done(&server, &job);
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["url"], format!("{agent}/debug/pprof/heap?seconds=1"));
    let id = v["snapshot"].as_str().unwrap().to_string();
    let r = server.get(&job);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some(format!("/snapshot/{id}")));
    let snap = server.store.get(&id).unwrap().unwrap();
    assert_eq!(snap.meta.kind, "heap");
    assert_eq!(snap.meta.label.as_deref(), Some("captured"));
    assert_eq!(server.get(&format!("/snapshot/{id}")).status, 200);

    // An agent that is not there: the job fails and says why.
    let r = server.post(
        "/capture",
        "url=http%3A%2F%2F127.0.0.1%3A9&kind=cpu&seconds=1",
    );
    assert_eq!(r.status, 303);
    let job = r.header("location").unwrap();
    let v = wait_done(&server, &job);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap().contains("127.0.0.1:9"), "{v}");
    assert_eq!(server.get(&job).status, 502);
}

#[test]
fn incidents_listed_and_opened_as_their_heap_diff() {
    use profscope::fetch::FetchOptions;
    use profscope::incidents;
    use serve_common::STUB_INCIDENT;
    let server = Server::start();
    let agent = stub_agent(server.rt());
    // What `profscope incidents URL` does: list, then store what is new.
    let opts = FetchOptions::default();
    let list = incidents::list(&agent, &opts).unwrap();
    assert_eq!(list.len(), 1);
    let new = |list: &[incidents::Incident]| {
        incidents::fetch_into(&server.store, &agent, &list[0], &opts)
            .unwrap()
            .iter()
            .filter(|f| f.new)
            .count()
    };
    assert_eq!(
        new(&list),
        3,
        "heap, heap-before, cpu (recording: no after)"
    );
    assert_eq!(new(&list), 0, "stored once");
    let id = STUB_INCIDENT;

    let r = server.get("/");
    assert_eq!(r.status, 200, "{}", r.body);
    let section = &r.body[r
        .body
        .find("<section class=\"incidents\">")
        .expect("an incidents section")..];
    for want in [
        &format!("href=\"/incident/{id}\"") as &str,
        "heap_growth",
        "growth_bytes=32MiB",
        "recording",
    ] {
        assert!(section.contains(want), "{want}:\n{section}");
    }
    // The incident's three snapshots are one group, not three.
    assert_eq!(
        r.body.matches("<section class=\"group\">").count(),
        1,
        "{}",
        r.body
    );

    // Opened: the heap diff (at the trigger vs before), as /diff shows it.
    let page = server.get(&format!("/incident/{id}"));
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body
            .contains(&format!("<h1>Incident <code>{id}</code>: heap_growth</h1>")),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("id=\"fg\""),
        "the differential flamegraph"
    );
    let stored = incidents::resolve_stored(&server.store, Some(id)).unwrap();
    let (before, at) = (
        &stored.part(incidents::Part::HeapBefore).unwrap().meta.id,
        &stored.part(incidents::Part::Heap).unwrap().meta.id,
    );
    let diff = server.get(&format!("/diff?base={before}&new={at}"));
    let table = |body: &str| body[body.find("<aside").unwrap()..].to_string();
    assert_eq!(table(&page.body), table(&diff.body));

    assert_eq!(server.get("/incident/1-manual-9").status, 404);
    assert_eq!(server.get("/incident/a.b").status, 400);
}

//! The symbolizer against the reference: addr2line as the `backtrace` crate
//! runs it, over thousands of addresses spread through this test binary's
//! code, inlined frames, files and lines included.

use profscope_agent::symbols::{Symbolizer, parse_maps};

/// Frames of the reference, innermost first, as (function, file, line).
fn reference(addr: u64) -> Vec<(String, Option<String>, u32)> {
    let mut frames = Vec::new();
    // `resolve` looks up the byte before a return address.
    backtrace::resolve((addr + 1) as usize as *mut std::ffi::c_void, |symbol| {
        let Some(name) = symbol.name() else { return };
        frames.push((
            format!("{name:#}"),
            symbol.filename().map(|p| p.to_string_lossy().into_owned()),
            symbol.lineno().unwrap_or(0),
        ));
    });
    frames.retain(|(name, _, _)| !name.is_empty());
    frames
}

#[test]
fn agrees_with_addr2line_across_the_binary() {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let exe = &parse_maps(&maps)[0];
    // A prime stride lands on every kind of code: prologues, inlined
    // bodies, std, tokio, the allocator.
    let addrs: Vec<u64> = (exe.start..exe.end).step_by(997).collect();
    assert!(addrs.len() > 1000, "{} addresses", addrs.len());
    let symbolizer = Symbolizer::new();
    symbolizer.resolve_all(addrs.iter().copied());

    let mut compared = 0;
    let mut inlined = 0;
    let mut aliases = 0;
    let mut differ = Vec::new();
    for &addr in &addrs {
        let want = reference(addr);
        if want.is_empty() {
            continue;
        }
        compared += 1;
        inlined += usize::from(want.len() > 1);
        let got: Vec<(String, Option<String>, u32)> = symbolizer
            .resolve(addr)
            .iter()
            .map(|f| {
                (
                    f.function.to_string(),
                    f.file.as_deref().map(str::to_string),
                    f.line,
                )
            })
            .collect();
        // Identical functions folded into one address have several symbols:
        // which alias either side names is arbitrary.
        let symbol_only = |frames: &[(String, Option<String>, u32)]| {
            frames.len() == 1 && frames[0].1.is_none() && frames[0].2 == 0
        };
        if got != want {
            if symbol_only(&got) && symbol_only(&want) {
                aliases += 1;
            } else {
                differ.push((addr, got, want));
            }
        }
    }
    for (addr, got, want) in differ.iter().take(10) {
        eprintln!(
            "{addr:#x} (file offset {:#x})\n  ours: {got:?}\n  addr2line: {want:?}",
            addr - exe.start + exe.offset
        );
    }
    eprintln!(
        "{compared} addresses compared ({inlined} with inlined frames), {} differ, \
         {aliases} name another alias of a folded function",
        differ.len()
    );
    assert!(aliases * 100 <= compared, "{aliases} aliases");
    assert!(compared > 1000 && inlined > 100, "{compared} / {inlined}");
    assert!(differ.is_empty(), "{} of {compared} differ", differ.len());
}

// profscope serve: the page script. Plain JavaScript, no dependencies, no
// network access beyond this origin's capture status endpoint.
//
// The flamegraph is an SVG inlined in the page: the snapshot page's own
// icicle (render/icicle.rs) or, on the diff page, inferno's (without its
// script). Every frame is `<g data-s?><title/><rect fg:x fg:w/><text/></g>`
// inside `svg#frames`; fg:x and fg:w are the frame's offset and width in
// samples, the title holds the full name, data-s the short name shown.
// Frames are read once into arrays; search, zoom and the icicle flip then
// only write attributes. A click also opens the peek and source panes.
"use strict";

(function () {
  var timings = {};
  window.profscope = { timings: timings };

  function now() { return performance.now(); }
  function $(sel, root) { return (root || document).querySelector(sel); }

  // ---- forms -------------------------------------------------------------
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.hasAttribute && t.hasAttribute("data-autosubmit") && t.form) t.form.submit();
  });
  document.addEventListener("submit", function (e) {
    var f = e.target;
    var msg = f.getAttribute && f.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
    if (f.id === "diffform") {
      var b = f.ownerDocument.querySelector("input[name=base]:checked");
      var n = f.ownerDocument.querySelector("input[name=new]:checked");
      if (!b || !n) { e.preventDefault(); window.alert("Pick a BASE and a NEW snapshot."); }
    }
  });
  var kind = $("#capture-kind"), secs = $("#capture-seconds");
  if (kind && secs) {
    kind.addEventListener("change", function () {
      if (kind.value === "cpu" && secs.value === "0") secs.value = "5";
      else if (kind.value !== "cpu" && secs.value === "5") secs.value = "0";
    });
  }

  // ---- capture progress --------------------------------------------------
  var prog = $("#capture-progress");
  if (prog) {
    var bar = $("progress", prog), text = $(".progress-text", prog);
    var url = prog.getAttribute("data-status");
    var poll = function () {
      fetch(url, { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (s) {
        if (s.state === "done") { bar.value = 100; text.textContent = "saved, opening…"; window.location.replace(s.location); return; }
        if (s.state === "failed") {
          bar.removeAttribute("value");
          text.textContent = "failed: " + s.error;
          prog.classList.add("failed");
          return;
        }
        if (s.seconds > 0) {
          bar.value = Math.min(99, 100 * s.elapsed / s.seconds);
          text.textContent = s.elapsed.toFixed(0) + " s of " + s.seconds + " s";
        } else {
          bar.removeAttribute("value");
          text.textContent = s.elapsed.toFixed(1) + " s";
        }
        setTimeout(poll, 250);
      }).catch(function () { setTimeout(poll, 1000); });
    };
    poll();
  }

  // ---- flamegraph --------------------------------------------------------
  var host = $("#fg");
  var framesSvg = host && $("svg#frames", host);
  if (!framesSvg) return;
  var t0 = now();
  var svg = host.querySelector("svg");
  var SEARCH_COLOR = "rgb(230,0,230)";
  var FONT = 12 * 0.59; // inferno's font size × font width: SVG units per char
  var WIDTH = parseFloat(framesSvg.getAttribute("width")) || 1180;
  var total = parseFloat(framesSvg.getAttribute("total_samples")) || 1;

  var groups = framesSvg.children;
  var n = groups.length;
  var G = new Array(n), R = new Array(n), T = new Array(n), names = new Array(n), titles = new Array(n), fulls = new Array(n);
  var X = new Float64Array(n), W = new Float64Array(n), Y = new Float64Array(n), D = new Int32Array(n);
  var fills = new Array(n), origRx = new Array(n), origRw = new Array(n), origText = new Array(n), origTx = new Array(n), textDy = 0;
  var maxY = -Infinity, minY = Infinity, fh = 16;
  for (var i = 0; i < n; i++) {
    var g = groups[i];
    var r = g.querySelector("rect"), tx = g.querySelector("text"), ti = g.querySelector("title");
    G[i] = g; R[i] = r; T[i] = tx;
    var title = ti ? ti.textContent : "";
    titles[i] = title;
    var cut = title.lastIndexOf(" (");
    fulls[i] = cut >= 0 ? title.slice(0, cut) : title;
    names[i] = g.getAttribute("data-s") || fulls[i];
    X[i] = parseFloat(r.getAttribute("fg:x")) || 0;
    W[i] = parseFloat(r.getAttribute("fg:w")) || 0;
    Y[i] = parseFloat(r.getAttribute("y")) || 0;
    fills[i] = r.getAttribute("fill");
    origRx[i] = r.getAttribute("x");
    origRw[i] = r.getAttribute("width");
    origText[i] = tx ? tx.textContent : "";
    origTx[i] = tx ? tx.getAttribute("x") : null;
    if (Y[i] > maxY) maxY = Y[i];
    if (Y[i] < minY) minY = Y[i];
    g.setAttribute("data-i", i);
  }
  if (n) {
    fh = (parseFloat(R[0].getAttribute("height")) || 15) + 1;
    textDy = T[0] ? parseFloat(T[0].getAttribute("y")) - Y[0] : 10.5;
  }
  // Depth from the row: the root row is the top one in an icicle (our
  // renderer says so), the bottom one in a flame graph (inferno's).
  var inverted = framesSvg.getAttribute("data-icicle") === "1";
  for (i = 0; i < n; i++) D[i] = Math.round((inverted ? Y[i] - minY : maxY - Y[i]) / fh);
  var maxD = Math.round((maxY - minY) / fh);

  var searchBox = $("#fg-search"), matched = $("#fg-matched"), resetBtn = $("#fg-reset");
  var icicleBox = $("#fg-icicle"), details = $("#fg-details");
  var focusLink = host.classList.contains("diff") ? null : $("#fg-focus");
  var zoomed = -1, matches = null;

  function fitText(i, widthPct) {
    if (!T[i]) return;
    var chars = Math.floor((widthPct / 100) * WIDTH / FONT);
    var name = names[i];
    T[i].textContent = chars < 3 ? "" : (name.length < chars ? name : name.slice(0, chars - 2) + "..");
  }

  function setParam(key, value) {
    var u = new URL(window.location.href);
    if (value) u.searchParams.set(key, value); else u.searchParams.delete(key);
    history.replaceState(null, "", u.pathname + u.search);
  }

  // Zoom: frame i fills the width; its ancestors stay, full width and faded;
  // everything else is hidden.
  function zoom(i) {
    var s = now();
    var x0 = X[i], w0 = W[i], d0 = D[i];
    for (var j = 0; j < n; j++) {
      var g = G[j], x = X[j], w = W[j];
      if (D[j] < d0) {
        if (x <= x0 && x + w >= x0 + w0) {
          show(g, true); place(j, 0, 100); g.classList.add("fg-parent");
        } else {
          show(g, false);
        }
      } else if (x >= x0 && x + w <= x0 + w0) {
        var px = (x - x0) / w0 * 100, pw = w / w0 * 100;
        if (pw < 0.01) { show(g, false); continue; }
        show(g, true); g.classList.remove("fg-parent"); place(j, px, pw);
      } else {
        show(g, false);
      }
    }
    zoomed = i;
    if (resetBtn) resetBtn.disabled = false;
    if (focusLink) {
      // The frame's path from the root (depth 0 is inferno's "all").
      var path = [];
      for (var d = 1; d < d0; d++) {
        for (var k = 0; k < n; k++) {
          if (D[k] === d && X[k] <= x0 && X[k] + W[k] >= x0 + w0) { path.push(names[k]); break; }
        }
      }
      if (d0 > 0) path.push(names[i]);
      var u = new URL(window.location.href);
      u.searchParams.set("focus", path.join(";"));
      u.searchParams.delete("s");
      focusLink.href = u.pathname + u.search;
      focusLink.hidden = path.length === 0;
    }
    timings.zoom = now() - s;
  }
  function show(g, on) {
    if (on) { if (g.style.display) g.style.display = ""; }
    else if (g.style.display !== "none") g.style.display = "none";
  }
  function place(j, px, pw) {
    R[j].setAttribute("x", px.toFixed(4) + "%");
    R[j].setAttribute("width", pw.toFixed(4) + "%");
    if (T[j]) T[j].setAttribute("x", (px + 100 * 3 / 1200).toFixed(4) + "%");
    fitText(j, pw);
  }
  function reset() {
    var s = now();
    for (var j = 0; j < n; j++) {
      var g = G[j];
      show(g, true);
      g.classList.remove("fg-parent");
      R[j].setAttribute("x", origRx[j]);
      R[j].setAttribute("width", origRw[j]);
      if (T[j]) { T[j].setAttribute("x", origTx[j]); T[j].textContent = origText[j]; }
    }
    zoomed = -1;
    if (resetBtn) resetBtn.disabled = true;
    if (focusLink) focusLink.hidden = true;
    timings.reset = now() - s;
  }

  // Search: frames whose name matches turn magenta; the matched share is
  // the union of their widths (nested matches counted once).
  function search(term) {
    var s = now();
    if (matches) for (var k = 0; k < matches.length; k++) R[matches[k]].setAttribute("fill", fills[matches[k]]);
    matches = null;
    if (!term) {
      if (matched) matched.textContent = "";
      host.classList.remove("searching");
      timings.search = now() - s;
      return;
    }
    var re;
    try { re = new RegExp(term, "i"); } catch (e) { re = new RegExp(term.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "i"); }
    matches = [];
    var spans = [];
    for (var j = 0; j < n; j++) {
      if (re.test(names[j]) || (fulls[j] !== names[j] && re.test(fulls[j]))) {
        matches.push(j);
        R[j].setAttribute("fill", SEARCH_COLOR);
        spans.push([X[j], W[j]]);
      }
    }
    spans.sort(function (a, b) { return a[0] - b[0] || b[1] - a[1]; });
    var covered = 0, end = -1;
    for (k = 0; k < spans.length; k++) {
      var a = spans[k][0], b = a + spans[k][1];
      if (b <= end) continue;
      covered += b - Math.max(a, end);
      end = b;
    }
    host.classList.add("searching");
    if (matched) {
      matched.textContent = matches.length
        ? "Matched: " + (100 * covered / total).toFixed(2) + "% (" + matches.length + " frame" + (matches.length === 1 ? "" : "s") + ")"
        : "No match";
      matched.setAttribute("data-share", (100 * covered / total).toFixed(4));
    }
    timings.search = now() - s;
  }

  // Icicle: roots at the top, depth d at row d; a flame graph puts it at
  // row maxD − d.
  function icicle(on) {
    var s = now();
    for (var j = 0; j < n; j++) {
      var y = minY + (on ? D[j] : maxD - D[j]) * fh;
      R[j].setAttribute("y", y);
      if (T[j]) T[j].setAttribute("y", (y + textDy).toFixed(2));
    }
    host.classList.toggle("icicle", on);
    timings.icicle = now() - s;
  }

  // Peek and source panes: the shell's `peek` and `list` of the clicked
  // function, under the page's settings.
  var panes = $("#panes"), peekUrl = host.getAttribute("data-peek"), paneSeq = 0;
  function openPanes(i) {
    if (!panes || !peekUrl || D[i] === 0) return;
    var seq = ++paneSeq;
    $("#pane-name").textContent = names[i];
    $("#pane-name").title = fulls[i];
    $("#pane-peek").textContent = "loading…";
    $("#pane-source").textContent = "";
    panes.hidden = false;
    panes.removeAttribute("data-ready");
    fetch(peekUrl + "&fn=" + encodeURIComponent(names[i]), { cache: "no-store" }).then(function (r) {
      return r.ok ? r.json() : r.text().then(function (t) { throw new Error(r.status + " " + t.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim()); });
    }).then(function (j) {
      if (seq !== paneSeq) return;
      peekTable($("#pane-peek"), j.entries);
      $("#pane-source").textContent = j.source;
      panes.setAttribute("data-ready", j.name);
    }).catch(function (err) {
      if (seq !== paneSeq) return;
      $("#pane-peek").textContent = String(err.message || err);
      panes.setAttribute("data-ready", "");
    });
  }
  // Callers above the function, callees below (as the shell's peek);
  // each name searches the graph.
  function peekTable(el, entries) {
    el.textContent = "";
    var table = document.createElement("table");
    table.className = "toptable peek";
    var row = function (cls, cells, name) {
      var tr = document.createElement("tr");
      tr.className = cls;
      cells.forEach(function (c) { var td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
      var td = document.createElement("td");
      td.className = "name";
      var a = document.createElement("a");
      a.href = "#";
      a.setAttribute("data-search", name);
      a.textContent = name;
      td.appendChild(a);
      tr.appendChild(td);
      table.appendChild(tr);
    };
    var head = document.createElement("tr");
    ["through", "share", "function"].forEach(function (h) { var th = document.createElement("th"); th.textContent = h; head.appendChild(th); });
    table.appendChild(head);
    entries.forEach(function (e) {
      e.callers.forEach(function (c) { row("caller", [c.value, c.share], c.name); });
      row("self", [e.cum, e.cum_share], e.name);
      var tr = table.lastChild;
      tr.title = "flat " + e.flat + " (" + e.flat_share + "), cum " + e.cum + " (" + e.cum_share + ")";
      e.callees.forEach(function (c) { row("callee", [c.value, c.share], c.name); });
    });
    el.appendChild(table);
  }
  var closeBtn = $("#panes-close");
  if (closeBtn) closeBtn.addEventListener("click", function () { panes.hidden = true; });
  var bySelect = $("#by-select");
  if (bySelect) bySelect.addEventListener("change", function () { window.location.href = bySelect.value; });

  framesSvg.addEventListener("click", function (e) {
    var g = e.target.closest("g[data-i]");
    if (!g) return;
    var i = +g.getAttribute("data-i");
    zoom(i);
    openPanes(i);
  });
  framesSvg.addEventListener("mouseover", function (e) {
    var g = e.target.closest("g[data-i]");
    if (g && details) details.textContent = titles[+g.getAttribute("data-i")];
  });
  if (resetBtn) resetBtn.addEventListener("click", reset);
  document.addEventListener("keydown", function (e) {
    if (e.key === "/" && document.activeElement !== searchBox && searchBox) { e.preventDefault(); searchBox.focus(); }
    if (e.key === "Escape") {
      if (document.activeElement === searchBox && searchBox.value) { searchBox.value = ""; search(""); setParam("s", ""); }
      else if (zoomed >= 0) reset();
    }
  });
  var timer = 0;
  if (searchBox) {
    searchBox.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { search(searchBox.value); setParam("s", searchBox.value); }, 120);
    });
  }
  if (icicleBox) {
    icicleBox.addEventListener("change", function () {
      icicle(icicleBox.checked);
      setParam("icicle", icicleBox.checked ? "" : "0");
      // The view form keeps the orientation across its reloads.
      var form = $("#view-form"), hidden = form && $("input[name=icicle]", form);
      if (form && icicleBox.checked && hidden) hidden.remove();
      if (form && !icicleBox.checked && !hidden) {
        hidden = document.createElement("input");
        hidden.type = "hidden"; hidden.name = "icicle"; hidden.value = "0";
        form.appendChild(hidden);
      }
    });
  }
  document.addEventListener("click", function (e) {
    var a = e.target.closest && e.target.closest("a[data-search]");
    if (!a || !searchBox) return;
    e.preventDefault();
    var name = a.getAttribute("data-search");
    searchBox.value = "^" + name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "$";
    search(searchBox.value);
    setParam("s", searchBox.value);
  });

  if (icicleBox && icicleBox.checked !== inverted) icicle(icicleBox.checked);
  if (searchBox && searchBox.value) search(searchBox.value);
  window.profscope.zoom = zoom;
  window.profscope.reset = reset;
  window.profscope.search = search;
  window.profscope.icicle = icicle;
  window.profscope.peek = openPanes;
  window.profscope.frames = n;
  timings.init = now() - t0;
  host.setAttribute("data-ready", String(n));
  void svg;
})();

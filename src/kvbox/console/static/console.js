// kvbox console: small progressive enhancements. Every page works without this file,
// except uploading (which needs the browser's upload progress events).
"use strict";

(function () {
  const doc = document;
  doc.documentElement.classList.add("js");

  function csrf() {
    const meta = doc.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function announce(text) {
    const live = doc.getElementById("live");
    if (!live) return;
    live.textContent = "";
    window.setTimeout(function () { live.textContent = text; }, 30);
  }

  // Times: the server writes UTC; show them in the reader's own time zone.
  function localizeTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      const d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      el.title = el.getAttribute("datetime");
      el.textContent = d.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
      });
    });
  }

  // Copy buttons
  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    const area = doc.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    doc.body.appendChild(area);
    area.select();
    doc.execCommand("copy");
    area.remove();
  }

  doc.addEventListener("click", function (event) {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const label = button.textContent;
    copyText(button.getAttribute("data-copy")).then(function () {
      button.classList.add("copied");
      button.textContent = "Copied";
      announce("Copied to the clipboard");
      window.setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 1500);
    }, function () { announce("Copying failed: select the text and copy it by hand"); });
  });

  // JSON tree: expand or collapse every node at once.
  doc.addEventListener("click", function (event) {
    const button = event.target.closest("[data-json-fold]");
    if (!button) return;
    const open = button.getAttribute("data-json-fold") === "open";
    doc.querySelectorAll(".json-tree details").forEach(function (d) { d.open = open; });
  });

  // Partial updates: links and forms marked data-swap="ID [ID...]" fetch their page and replace
  // only the elements with those IDs (and the flash message), like htmx's hx-select.
  async function swap(url, targets, options, push) {
    const ids = targets.split(/\s+/).filter(Boolean);
    if (!ids.some(function (id) { return doc.getElementById(id); })) { window.location.assign(url); return null; }
    ids.forEach(function (id) { const el = doc.getElementById(id); if (el) el.setAttribute("aria-busy", "true"); });
    let response;
    try {
      response = await fetch(url, Object.assign({ credentials: "same-origin" }, options || {}));
    } catch (err) {
      window.location.assign(url);
      return null;
    }
    const html = await response.text();
    const page = new DOMParser().parseFromString(html, "text/html");
    if (!page.getElementById(ids[0])) {
      // Not the page we expected (an error, or the store is gone): show what the server sent.
      doc.open(); doc.write(html); doc.close();
      return null;
    }
    let first = null;
    ids.forEach(function (id) {
      const old = doc.getElementById(id);
      const fresh = page.getElementById(id);
      if (old && fresh) { old.replaceWith(fresh); localizeTimes(fresh); first = first || fresh; }
    });
    const oldFlash = doc.querySelector("main > .flash");
    const newFlash = page.querySelector("main > .flash");
    if (oldFlash) oldFlash.remove();
    if (newFlash) doc.querySelector("main").prepend(newFlash);
    if (push) { history.pushState({ swap: targets }, "", response.url || url); pushed = true; }
    if (newFlash) announce(newFlash.textContent.trim());
    return first;
  }

  doc.addEventListener("click", function (event) {
    const link = event.target.closest("a[data-swap]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    swap(link.href, link.getAttribute("data-swap"), null, true).then(function (fresh) {
      if (fresh) fresh.focus({ preventScroll: true });
    });
  });

  let pushed = false;
  window.addEventListener("popstate", function (event) {
    if (event.state && event.state.swap) swap(window.location.href, event.state.swap, null, false);
    else if (pushed) window.location.reload();  // back to the page as first loaded
  });

  doc.addEventListener("submit", function (event) {
    const form = event.target;
    const message = form.getAttribute("data-confirm");
    if (message) {
      if (!window.confirm(message)) { event.preventDefault(); return; }
      if (!form.querySelector('input[name="confirm"]')) {
        const yes = doc.createElement("input");
        yes.type = "hidden"; yes.name = "confirm"; yes.value = "yes";
        form.appendChild(yes);
      }
    }
    const targetId = form.getAttribute("data-swap");
    if (!targetId) return;
    event.preventDefault();
    const data = new URLSearchParams(new FormData(form));
    if (form.method.toLowerCase() === "get") {
      const url = form.action.split("?")[0] + "?" + data.toString();
      swap(url, targetId, null, true);
    } else {
      swap(form.action, targetId, {
        method: "POST", body: data,
        headers: { "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": csrf() },
      }, false);
    }
  });

  // Filters that apply themselves: on change (checkboxes, selects) or after typing stops.
  let typingTimer = null;
  function autosubmit(el) {
    const form = el.form;
    if (form) form.requestSubmit();
  }
  doc.addEventListener("change", function (event) {
    const el = event.target;
    if (el.getAttribute && el.getAttribute("data-autosubmit") === "change") autosubmit(el);
  });
  doc.addEventListener("input", function (event) {
    const el = event.target;
    if (!el.getAttribute || el.getAttribute("data-autosubmit") !== "input") return;
    window.clearTimeout(typingTimer);
    typingTimer = window.setTimeout(function () { autosubmit(el); }, 350);
  });

  // Upload: choose or drop files, edit each key and content type, then PUT them one by one
  // with a progress bar per file and one for the whole batch.
  const KEY_CHARS = /[^a-zA-Z0-9!\-_.'()]/g;
  const TYPES = {
    json: "application/json", txt: "text/plain; charset=utf-8", html: "text/html; charset=utf-8",
    htm: "text/html; charset=utf-8", csv: "text/csv", xml: "application/xml", png: "image/png",
    jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp", svg: "image/svg+xml",
    pdf: "application/pdf", zip: "application/zip", md: "text/markdown", js: "text/javascript",
  };

  function guessType(file) {
    if (file.type) return file.type;
    const ext = (file.name.split(".").pop() || "").toLowerCase();
    return TYPES[ext] || "application/octet-stream";
  }

  function keyFor(name) {
    return name.replace(KEY_CHARS, "-").slice(0, 256) || "file";
  }

  function humanSize(n) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  function setupUpload(section) {
    const base = section.getAttribute("data-upload");
    const input = section.querySelector('input[type="file"]');
    const zone = section.querySelector("[data-dropzone]");
    const list = section.querySelector(".upload-list");
    const tbody = list.querySelector("tbody");
    const total = section.querySelector(".upload-total");
    const status = section.querySelector(".upload-status");
    const start = section.querySelector("[data-upload-start]");
    const clear = section.querySelector("[data-upload-clear]");
    const maxSize = Number(section.getAttribute("data-max-size")) || Infinity;
    let queue = [];
    let busy = false;

    function cell(row, content) {
      const td = doc.createElement("td");
      if (content instanceof Node) td.appendChild(content); else td.textContent = content;
      row.appendChild(td);
      return td;
    }

    function add(files) {
      Array.from(files).forEach(function (file, i) {
        const n = queue.length + 1;
        const row = doc.createElement("tr");
        row.className = "upload-row";
        cell(row, file.name);
        const key = doc.createElement("input");
        key.value = keyFor(file.name);
        key.setAttribute("aria-label", "Key for " + file.name);
        key.name = "key-" + n;
        key.spellcheck = false;
        cell(row, key);
        const type = doc.createElement("input");
        type.value = guessType(file);
        type.setAttribute("aria-label", "Content type for " + file.name);
        type.name = "type-" + n;
        cell(row, type);
        cell(row, humanSize(file.size)).className = "num";
        const bar = doc.createElement("progress");
        bar.max = file.size || 1; bar.value = 0;
        bar.setAttribute("aria-label", "Upload progress of " + file.name);
        const progressCell = cell(row, bar);
        const note = doc.createElement("div");
        note.className = "small upload-note";
        progressCell.appendChild(note);
        const remove = doc.createElement("button");
        remove.type = "button"; remove.className = "btn btn-small btn-quiet"; remove.textContent = "Remove";
        remove.setAttribute("aria-label", "Remove " + file.name + " from the upload list");
        const item = { file: file, row: row, key: key, type: type, bar: bar, note: note, state: "ready" };
        remove.addEventListener("click", function () {
          if (busy) return;
          queue = queue.filter(function (q) { return q !== item; });
          row.remove();
          refresh();
        });
        cell(row, remove);
        if (file.size > maxSize) { item.state = "failed"; note.textContent = "Larger than the server accepts"; row.classList.add("failed"); }
        tbody.appendChild(row);
        queue.push(item);
      });
      refresh();
    }

    function refresh() {
      list.hidden = queue.length === 0;
      const ready = queue.filter(function (q) { return q.state === "ready"; }).length;
      start.disabled = busy || ready === 0;
      clear.disabled = busy;
      if (!busy) status.textContent = ready ? ready + " file" + (ready === 1 ? "" : "s") + " ready" : "";
    }

    function put(item, onProgress) {
      return new Promise(function (resolve) {
        const xhr = new XMLHttpRequest();
        xhr.open("PUT", base + encodeURIComponent(item.key.value.trim()));
        xhr.setRequestHeader("X-CSRF-Token", csrf());
        xhr.setRequestHeader("Accept", "application/json");
        xhr.setRequestHeader("Content-Type", item.type.value.trim() || "application/octet-stream");
        xhr.upload.addEventListener("progress", function (e) { if (e.lengthComputable) onProgress(e.loaded); });
        xhr.addEventListener("load", function () {
          let message = "";
          try { message = (JSON.parse(xhr.responseText).error || {}).message || ""; } catch (err) { message = ""; }
          resolve({ ok: xhr.status >= 200 && xhr.status < 300, message: message || ("HTTP " + xhr.status) });
        });
        xhr.addEventListener("error", function () { resolve({ ok: false, message: "Network error" }); });
        xhr.send(item.file);
      });
    }

    async function run() {
      const todo = queue.filter(function (q) { return q.state === "ready"; });
      if (!todo.length) return;
      busy = true;
      refresh();
      const bytes = todo.reduce(function (s, q) { return s + (q.file.size || 1); }, 0);
      let doneBytes = 0, ok = 0, failed = 0;
      total.max = bytes; total.value = 0;
      for (const item of todo) {
        item.key.readOnly = true; item.type.readOnly = true;
        status.textContent = "Uploading " + item.key.value + "…";
        const result = await put(item, function (loaded) {
          item.bar.value = loaded;
          total.value = doneBytes + loaded;
        });
        doneBytes += item.file.size || 1;
        total.value = doneBytes;
        item.bar.value = item.bar.max;
        item.state = result.ok ? "done" : "failed";
        item.row.classList.remove("done", "failed");
        item.row.classList.add(item.state);
        item.note.textContent = result.ok ? "Uploaded" : result.message;
        if (result.ok) ok++; else { failed++; item.key.readOnly = false; item.type.readOnly = false; item.state = "ready"; }
      }
      busy = false;
      const summary = ok + " uploaded" + (failed ? ", " + failed + " failed" : "");
      refresh();
      status.textContent = summary;
      announce("Upload finished: " + summary);
      if (ok) {
        await swap(window.location.href, "records store-info", null, false);
      }
    }

    input.addEventListener("change", function () { add(input.files); input.value = ""; });
    start.addEventListener("click", run);
    clear.addEventListener("click", function () { queue = []; tbody.textContent = ""; total.value = 0; refresh(); });
    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("dragover"); });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("dragover"); });
    });
    zone.addEventListener("drop", function (e) { if (e.dataTransfer) add(e.dataTransfer.files); });
    refresh();
  }

  // Events tab: follow the store's change feed (long-polls the console's feed endpoint).
  function setupLiveFeed(table) {
    const tbody = table.querySelector("tbody");
    let after = Number(table.dataset.after || "0");
    function cell(row, text, cls) {
      const td = doc.createElement("td");
      if (cls) td.className = cls;
      td.textContent = text;
      row.appendChild(td);
      return td;
    }
    function show(c) {
      const row = doc.createElement("tr");
      row.dataset.sequence = String(c.sequence);
      cell(row, String(c.sequence));
      const badge = doc.createElement("span");
      badge.className = "badge";
      badge.textContent = c.eventType;
      cell(row, "").appendChild(badge);
      cell(row, c.key, "mono");
      cell(row, c.size === null ? "-" : c.size + " B");
      const time = doc.createElement("time");
      time.setAttribute("datetime", c.createdAt);
      time.textContent = c.createdAt;
      cell(row, "").appendChild(time);
      tbody.insertBefore(row, tbody.firstChild);
      localizeTimes(row);
    }
    async function poll() {
      let wait = 0;
      try {
        const r = await fetch(table.dataset.feed + "?after=" + after, { credentials: "same-origin" });
        if (r.ok) {
          const data = await r.json();
          data.items.forEach(show);
          if (data.items.length) {
            const empty = doc.getElementById("feed-empty");
            if (empty) empty.remove();
            announce(data.items.length + " new change" + (data.items.length > 1 ? "s" : ""));
          }
          after = data.lastSequence;
        } else {
          wait = 5000;
        }
      } catch (e) {
        wait = 5000;
      }
      window.setTimeout(poll, wait);
    }
    poll();
  }

  function init() {
    localizeTimes(doc);
    doc.querySelectorAll("[data-upload]").forEach(setupUpload);
    const feed = doc.getElementById("live-feed");
    if (feed) setupLiveFeed(feed);
  }

  if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", init); else init();
})();

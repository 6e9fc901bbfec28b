// The labeling page: keyboard shortcuts and the vote request (JSON, same-origin session cookie).
(function () {
  "use strict";
  var form = document.getElementById("vote");
  if (!form) { return; }
  var item = form.dataset.item;
  var note = document.getElementById("note");
  var error = document.getElementById("vote-error");
  var expires = document.getElementById("expires");
  if (expires) { expires.textContent = new Date(parseFloat(expires.dataset.expires) * 1000).toLocaleTimeString(); }

  function answers() {
    var labels = {};
    form.querySelectorAll("fieldset.task").forEach(function (fs) {
      var picked = Array.prototype.map.call(fs.querySelectorAll("input:checked"), function (i) { return i.value; });
      if (fs.dataset.kind === "multiclass") {
        if (picked.length) { labels[fs.dataset.task] = picked[0]; }
      } else {
        labels[fs.dataset.task] = picked;
      }
    });
    return labels;
  }

  function show(message) { error.textContent = message; error.hidden = false; }

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().then(function (data) { return {ok: r.ok, data: data}; });
    });
  }

  var busy = false;
  function submit() {
    if (busy) { return; }
    var missing = Array.prototype.filter.call(form.querySelectorAll("fieldset.task[data-kind=multiclass]"),
      function (fs) { return !fs.querySelector("input:checked"); });
    if (missing.length) { show("Choose a label for " + missing[0].dataset.task + "."); return; }
    busy = true;
    post("/v1/queue/items/" + item + "/vote", {labels: answers(), note: note.value}).then(function (r) {
      if (r.ok) { window.location.reload(); return; }
      busy = false;
      show((r.data.error && r.data.error.message) || "the vote was not stored");
    }, function () { busy = false; show("network error: the vote was not stored; try again"); });
  }

  function skip() {
    post("/v1/queue/items/" + item + "/release").then(function () { window.location.reload(); });
  }

  form.addEventListener("submit", function (e) { e.preventDefault(); submit(); });
  document.getElementById("skip").addEventListener("click", skip);
  document.addEventListener("keydown", function (e) {
    if (e.target === note) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
      if (e.key === "Escape") { note.blur(); }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (e.key === "Enter") { e.preventDefault(); submit(); return; }
    if (e.key === "n") { e.preventDefault(); note.focus(); return; }
    if (e.key === "s") { e.preventDefault(); skip(); return; }
    var input = form.querySelector('input[data-key="' + e.key + '"]');
    if (input) {
      e.preventDefault();
      input.checked = input.type === "radio" ? true : !input.checked;
    }
  });
})();

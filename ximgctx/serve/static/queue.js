// The labeling page: keyboard shortcuts, "can't tell", the vote and skip requests (JSON, same-origin session
// cookie), the model's scores after an answer when the operator asked for them, and the next post opened at
// the top of the page.
(function () {
  "use strict";
  if ("scrollRestoration" in history) { history.scrollRestoration = "manual"; }
  window.scrollTo(0, 0);
  var form = document.getElementById("vote");
  if (!form) { return; }
  var item = form.dataset.item;
  var note = document.getElementById("note");
  var error = document.getElementById("vote-error");
  var submitButton = document.getElementById("submit");
  var expires = document.getElementById("expires");
  if (expires) { expires.textContent = new Date(parseFloat(expires.dataset.expires) * 1000).toLocaleTimeString(); }
  var answered = false;  // the vote is stored; the form only shows what was chosen (and the model's scores)

  function fieldset(task) { return form.querySelector('fieldset.task[data-task="' + task + '"]'); }
  function cantTell(fs) { return fs.querySelector("input.cant-tell"); }
  function options(fs) { return fs.querySelectorAll("input:not(.cant-tell)"); }

  // "can't tell" and a label exclude each other within a task
  function picked(input) {
    var fs = input.closest("fieldset.task");
    if (input.classList.contains("cant-tell")) {
      if (input.checked) { options(fs).forEach(function (i) { i.checked = false; }); }
    } else if (input.checked) {
      cantTell(fs).checked = false;
    }
  }
  form.addEventListener("change", function (e) { if (e.target.matches("input")) { picked(e.target); } });

  function answers() {
    var labels = {}, cant = [];
    form.querySelectorAll("fieldset.task").forEach(function (fs) {
      if (cantTell(fs).checked) { cant.push(fs.dataset.task); return; }
      var values = Array.prototype.map.call(fs.querySelectorAll("input:not(.cant-tell):checked"), function (i) { return i.value; });
      if (fs.dataset.kind === "multiclass") {
        if (values.length) { labels[fs.dataset.task] = values[0]; }
      } else {
        labels[fs.dataset.task] = values;
      }
    });
    return {labels: labels, cant_tell: cant};
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

  function next() {  // the next post, opened at the top of the page
    window.scrollTo(0, 0);
    window.location.replace("/queue");
  }

  function reveal(scores) {  // the model's scores beside the labels, once the answer is stored
    form.classList.add("revealed");
    form.querySelectorAll("fieldset.task").forEach(function (fs) {
      var s = scores[fs.dataset.task] || {};
      options(fs).forEach(function (input) {
        var p = s[input.value];
        if (p === undefined) { return; }
        var span = document.createElement("span");
        span.className = "score";
        span.title = "the model's score";
        var bar = document.createElement("span"), fill = document.createElement("span");
        bar.className = "bar";
        fill.style.width = Math.round(p * 100) + "%";
        bar.appendChild(fill);
        span.appendChild(bar);
        span.appendChild(document.createTextNode(" " + p.toFixed(2)));
        input.closest("label").appendChild(span);
      });
    });
    form.querySelectorAll("input, textarea, select, #skip").forEach(function (i) { i.disabled = true; });
    submitButton.innerHTML = "Next <kbd>Enter</kbd>";
    submitButton.focus();
  }

  var busy = false;
  function submit() {
    if (answered) { next(); return; }
    if (busy) { return; }
    var missing = Array.prototype.filter.call(form.querySelectorAll("fieldset.task[data-kind=multiclass]"),
      function (fs) { return !fs.querySelector("input:checked"); });
    if (missing.length) { show("Choose a label (or can't tell) for " + missing[0].dataset.task + "."); return; }
    busy = true;
    var body = answers();
    body.note = note.value;
    post("/v1/queue/items/" + item + "/vote", body).then(function (r) {
      if (!r.ok) {
        busy = false;
        show((r.data.error && r.data.error.message) || "the vote was not stored");
        return;
      }
      if (r.data.model_scores && form.dataset.showScores === "after") {
        answered = true;
        busy = false;
        reveal(r.data.model_scores);
        return;
      }
      next();
    }, function () { busy = false; show("network error: the vote was not stored; try again"); });
  }

  function skip() {
    if (answered) { next(); return; }
    var reason = document.getElementById("skip-reason").value;
    post("/v1/queue/items/" + item + "/release", {reason: reason, note: note.value}).then(next);
  }

  form.addEventListener("submit", function (e) { e.preventDefault(); submit(); });
  document.getElementById("skip").addEventListener("click", skip);
  document.addEventListener("keydown", function (e) {
    if (e.target === note) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
      if (e.key === "Escape") { note.blur(); }
      return;
    }
    if (e.target.tagName === "SELECT") { return; }
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (e.key === "Enter") { e.preventDefault(); submit(); return; }
    if (answered) { return; }
    if (e.key === "n") { e.preventDefault(); note.focus(); return; }
    if (e.key === "s") { e.preventDefault(); skip(); return; }
    var input = form.querySelector('input[data-key="' + e.key + '"]');
    if (input) {
      e.preventDefault();
      input.checked = input.type === "radio" ? true : !input.checked;
      picked(input);
    }
  });
})();

// Times in the reader's own zone, and a conversation that refreshes itself by short polling:
// one small request a second for the message list, answered 304 while nothing changed.
"use strict";

function localTimes(root) {
  root.querySelectorAll("time[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) {
      el.title = el.textContent;
      el.textContent = when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
    }
  });
}

function poll(box) {
  var etag = box.dataset.etag;
  var every = (Number(box.dataset.poll) || 1) * 1000;
  var status = document.getElementById("live-status");
  function tick() {
    if (document.hidden) { setTimeout(tick, every); return; }
    fetch(box.dataset.live, { cache: "no-store", credentials: "same-origin", headers: { "If-None-Match": '"' + etag + '"' } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        if (response.status !== 200) { return null; }
        etag = (response.headers.get("ETag") || "").replace(/^W\//, "").replace(/"/g, "");
        return response.text();
      })
      .then(function (html) {
        if (html === null || html === undefined) { return; }
        var focused = document.activeElement && box.contains(document.activeElement) ? document.activeElement.id : null;
        var open = Array.prototype.map.call(box.querySelectorAll("details[open]"), function (d) { return d.id; });
        box.innerHTML = html;
        open.forEach(function (id) { var d = id && document.getElementById(id); if (d) { d.open = true; } });
        localTimes(box);
        if (focused) { var el = document.getElementById(focused); if (el) { el.focus(); } }
        if (status) { status.textContent = "Conversation updated"; }
      })
      .catch(function () {})
      .then(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", function () {
  localTimes(document);
  var box = document.querySelector("[data-live]");
  if (box) { poll(box); }
});

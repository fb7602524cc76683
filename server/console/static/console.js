// Progressive enhancement only: every page works without it, except the
// live parts (a watch session, the audit tail), which need an open stream.
"use strict";

function text(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value;
}

// A watch page holds the person's watch session for as long as it is open
// and beating: the event stream is the session, and a worker posts a
// heartbeat every half heartbeat interval. Closing the tab drops both.
function startWatch(box) {
  const es = new EventSource(box.dataset.events);
  const beats = new Worker("/static/beat.js");
  const csrf = document.querySelector('input[name="csrf"]').value;
  const url = box.dataset.events.replace(/events$/, "beat");
  let watch = null;
  let every = 500;
  const run = () => beats.postMessage({ url, csrf, watch, every });
  beats.onmessage = (e) => {
    if (!e.data.ok) text("watch-state", "A heartbeat was refused (" + e.data.status + "); the watch may lapse. Reload to watch again.");
  };
  es.addEventListener("hello", (e) => {
    watch = JSON.parse(e.data).watch;
    run();
  });
  es.addEventListener("status", (e) => {
    const s = JSON.parse(e.data);
    text("watch-state", "You are watching. " + (s.live ? "The task's grants are live." : "The task's grants are NOT live: too few watchers."));
    text("watch-live", s.live ? "yes" : "no");
    text("watch-present", (s.present || []).join(", ") || "none");
    text("watch-count", String(s.count));
    text("watch-onleave", s.on_leave || "pause");
    box.dataset.live = s.live ? "yes" : "no";
    box.dataset.statuses = String(Number(box.dataset.statuses || 0) + 1);
    const want = Math.max(250, (s.heartbeat_seconds || 1) * 500);
    if (want !== every) {
      every = want;
      run();
    }
  });
  es.addEventListener("end", (e) => {
    es.close();
    watch = null;
    run();
    text("watch-state", "Watch ended: " + JSON.parse(e.data).message);
  });
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) text("watch-state", "Watch ended: the connection to the server closed. Reload to watch again.");
    else text("watch-state", "Connection lost; reconnecting…");
  };
}

// The audit page's table grows with new events while the page is open.
function startTail(table) {
  const body = table.tBodies[0];
  const es = new EventSource(table.dataset.tail);
  text("tail-state", "Live: new events appear at the top.");
  es.addEventListener("event", (e) => {
    const ev = JSON.parse(e.data);
    const tr = document.createElement("tr");
    for (const v of [ev.Index, ev.Time, ev.Type, ev.Actor, ev.Subject, ev.Details]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.appendChild(td);
    }
    body.insertBefore(tr, body.firstChild);
  });
  es.addEventListener("end", (e) => {
    es.close();
    text("tail-state", "Live tail ended: " + JSON.parse(e.data).message);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const box = document.getElementById("watch");
  if (box && box.dataset.events) startWatch(box);
  const table = document.getElementById("events");
  if (table && table.dataset.tail) startTail(table);
});

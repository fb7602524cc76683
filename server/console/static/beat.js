// The watch page's heartbeat, in a worker: browsers slow the timers of a
// page in a background tab (to once a minute after a while), which would
// drop a watcher who only switched tabs; a dedicated worker's timers keep
// their pace.
"use strict";

let timer = null;

onmessage = (e) => {
  const m = e.data;
  clearInterval(timer);
  if (!m || !m.watch) return;
  const beat = () => {
    const body = new URLSearchParams({ csrf: m.csrf, watch: m.watch });
    fetch(m.url, { method: "POST", body, credentials: "same-origin" })
      .then((r) => postMessage({ ok: r.ok, status: r.status }))
      .catch(() => postMessage({ ok: false, status: 0 }));
  };
  beat();
  timer = setInterval(beat, m.every);
};

// The Cortex dashboard (placeholder: developer dashui owns this file).
"use strict";
(function () {
  const conn = document.getElementById("conn");
  const main = document.getElementById("main");
  fetch("/status", { headers: { Accept: "application/json" } })
    .then((r) => r.json())
    .then((s) => {
      const p = document.createElement("pre");
      p.textContent = JSON.stringify(s, null, 2);
      main.replaceChildren(p);
      conn.textContent = "connected";
    })
    .catch((e) => { conn.textContent = "disconnected: " + e; });
})();
